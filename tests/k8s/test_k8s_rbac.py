"""The operator's RBAC is exactly what it uses (interfaces.md), in every mode: nothing more, nothing less."""

from __future__ import annotations

from typing import Any

from tests.k8s.conftest import Rendered

NAMESPACED = [
    {"apiGroups": ["rlops.io"], "resources": ["policyrollouts"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["rlops.io"], "resources": ["policyrollouts/status"], "verbs": ["get", "patch", "update"]},
    {"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
CRDS = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list", "watch"],
    }
]
NAMESPACES = [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}]


def peering(resource: str) -> list[dict[str, Any]]:
    return [
        {
            "apiGroups": ["kopf.dev"],
            "resources": [resource],
            "resourceNames": ["rlops"],
            "verbs": ["get", "patch"],
        },
        {"apiGroups": ["kopf.dev"], "resources": [resource], "verbs": ["list", "watch"]},
    ]


def roles(scenario: Rendered) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(kind, namespace, name) -> rules for every Role and ClusterRole."""
    return {
        (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]): doc["rules"]
        for doc in scenario.docs
        if doc["kind"] in ("Role", "ClusterRole")
    }


def bindings(scenario: Rendered) -> dict[tuple[str, str, str], tuple[str, list[dict[str, Any]]]]:
    return {
        (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]): (
            doc["roleRef"]["name"],
            doc["subjects"],
        )
        for doc in scenario.docs
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding")
    }


SUBJECT = [{"kind": "ServiceAccount", "name": "rlops-operator", "namespace": "rlops"}]


def test_cluster_wide_standalone(rendered: dict[str, Rendered]) -> None:
    scenario = rendered["defaults"]
    assert roles(scenario) == {("ClusterRole", "", "rlops-operator"): NAMESPACED + CRDS + NAMESPACES}
    assert bindings(scenario) == {("ClusterRoleBinding", "", "rlops-operator"): ("rlops-operator", SUBJECT)}
    assert scenario.one("ServiceAccount")["metadata"]["name"] == "rlops-operator"


def test_cluster_wide_with_peering(rendered: dict[str, Rendered]) -> None:
    assert roles(rendered["cluster-peering"]) == {
        ("ClusterRole", "", "rlops-operator"): NAMESPACED + CRDS + NAMESPACES + peering("clusterkopfpeerings")
    }


def test_namespaced_standalone_never_lists_namespaces(rendered: dict[str, Rendered]) -> None:
    scenario = rendered["namespaced"]
    assert roles(scenario) == {
        ("ClusterRole", "", "rlops-operator-crds"): CRDS,
        ("Role", "team-a", "rlops-operator"): NAMESPACED,
        ("Role", "team-b", "rlops-operator"): NAMESPACED,
    }
    assert bindings(scenario) == {
        ("ClusterRoleBinding", "", "rlops-operator-crds"): ("rlops-operator-crds", SUBJECT),
        ("RoleBinding", "team-a", "rlops-operator"): ("rlops-operator", SUBJECT),
        ("RoleBinding", "team-b", "rlops-operator"): ("rlops-operator", SUBJECT),
    }


def test_namespaced_with_peering(rendered: dict[str, Rendered]) -> None:
    found = roles(rendered["namespaced-peering"])
    assert found[("Role", "team-a", "rlops-operator")] == NAMESPACED + peering("kopfpeerings")
    assert found[("ClusterRole", "", "rlops-operator-crds")] == CRDS


def test_no_wildcards_and_no_secret_access_anywhere(rendered: dict[str, Rendered]) -> None:
    for scenario in rendered.values():
        for rules in roles(scenario).values():
            for rule in rules:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
                assert not {"secrets", "pods", "pods/exec"} & set(rule["resources"]), rule
                assert not {"create", "delete", "deletecollection"} & set(rule["verbs"]) or rule[
                    "resources"
                ] == ["events"], rule
