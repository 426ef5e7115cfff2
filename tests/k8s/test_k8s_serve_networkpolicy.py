"""The serving pods' NetworkPolicy and fast-ingress limits in the chart (issue 14 §2), via `helm template`.

What is checked is what Kubernetes would enforce: which peers reach which port of the pods the policy
selects, and that the policy selects exactly the RayService's head and worker pods.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.k8s.conftest import CHECKPOINT, load_docs, render

SERVE = ["--set", "serve.enabled=true", "--set", f"serve.checkpointUri={CHECKPOINT}"]


def _docs(*args: str) -> list[dict[str, Any]]:
    return load_docs(render(*SERVE, *args))


def _serve_policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and d["metadata"]["labels"].get("app.kubernetes.io/component") == "serve"
    ]
    assert len(found) == 1, [d["metadata"]["name"] for d in docs if d["kind"] == "NetworkPolicy"]
    return found[0]


def _rules_for_port(policy: dict[str, Any], port: int) -> list[dict[str, Any]]:
    """Ingress rules that admit ``port``: those naming it, and those with no port list (all ports)."""
    rules = []
    for rule in policy["spec"]["ingress"]:
        ports = rule.get("ports")
        if ports is None or any(p.get("port") == port for p in ports):
            rules.append(rule)
    return rules


def _ray_pod_labels(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    service = next(d for d in docs if d["kind"] == "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster.get("workerGroupSpecs", [])
    ]
    return [t["metadata"]["labels"] for t in templates]


def test_policy_selects_every_serving_pod_and_only_ingress() -> None:
    docs = _docs()
    policy = _serve_policy(docs)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for labels in _ray_pod_labels(docs):
        assert selector.items() <= labels.items(), (selector, labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_only_serving_pods_reach_every_port() -> None:
    policy = _serve_policy(_docs())
    open_rules = [r for r in policy["spec"]["ingress"] if "ports" not in r]
    assert len(open_rules) == 1
    peers = open_rules[0]["from"]
    assert (
        len(peers) == 1 and peers[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "serve"
    )
    assert "namespaceSelector" not in peers[0]


@pytest.mark.parametrize(
    "port",
    [8404, 9101, 10001, 6379, 30000],
    ids=["haproxy-stats", "haproxy-metrics", "ray-client", "gcs", "replica-port"],
)
def test_other_listeners_are_closed_to_outside_peers(port: int) -> None:
    policy = _serve_policy(_docs())
    rules = _rules_for_port(policy, port)
    assert all("ports" not in r for r in rules), rules  # only the serving pods' own rule admits them


def test_serve_port_from_clients_metrics_from_scraper_dashboard_from_kuberay() -> None:
    args = [
        "--set-json", 'networkPolicy.serve.clients=[{"namespaceSelector":{"matchLabels":{"team":"gw"}}}]',
        "--set-json", 'networkPolicy.serve.scrapers=[{"namespaceSelector":{"matchLabels":{"team":"mon"}}}]',
    ]  # fmt: skip
    policy = _serve_policy(_docs(*args))
    serve_rule = next(r for r in _rules_for_port(policy, 8000) if "ports" in r)
    assert {"namespaceSelector": {"matchLabels": {"team": "gw"}}} in serve_rule["from"]
    components = [
        p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        for p in serve_rule["from"]
    ]
    assert "operator" in components
    metrics_rule = next(r for r in _rules_for_port(policy, 8080) if "ports" in r)
    assert metrics_rule["from"] == [{"namespaceSelector": {"matchLabels": {"team": "mon"}}}]
    assert [p["port"] for p in metrics_rule["ports"]] == [8080]
    dashboard_rule = next(r for r in _rules_for_port(policy, 8265) if "ports" in r)
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}}} in (
        dashboard_rule["from"]
    )
    assert 8000 not in [p["port"] for p in metrics_rule["ports"] + dashboard_rule["ports"]]


def test_no_scrapers_closes_the_metrics_port() -> None:
    policy = _serve_policy(_docs("--set-json", "networkPolicy.serve.scrapers=[]"))
    assert all("ports" not in r for r in _rules_for_port(policy, 8080))


def test_policy_off_when_network_policies_are_off() -> None:
    docs = _docs("--set", "networkPolicy.enabled=false")
    assert not [d for d in docs if d["kind"] == "NetworkPolicy"]


def _env(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    service = next(d for d in docs if d["kind"] == "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    specs = [cluster["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster.get("workerGroupSpecs", [])
    ]
    return [{e["name"]: e.get("value") for e in s["containers"][0].get("env", [])} for s in specs]


def test_fast_ingress_ships_the_haproxy_limits_on_every_ray_container() -> None:
    for env in _env(_docs("--set", "serve.fastIngress=true")):
        assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == "/home/ray/rlops/workloads/serving/haproxy-hardened"
        assert env["RLOPS_HAPROXY_HTTP_REQUEST_TIMEOUT_S"] == "10"
        assert env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] == "30"
        assert env["RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"] == "60"
        assert int(env["RAY_SERVE_HAPROXY_MAXCONN"]) >= 4096
    for env in _env(_docs()):
        assert not any(k.startswith(("RAY_SERVE_HAPROXY", "RLOPS_HAPROXY")) for k in env)


def test_serve_config_carries_the_safe_http_options() -> None:
    import yaml

    service = next(d for d in _docs() if d["kind"] == "RayService")
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert config["http_options"]["keep_alive_timeout_s"] == 5
    assert config["http_options"]["request_timeout_s"] == 30
    user = config["applications"][0]["deployments"][0]["user_config"]
    assert user["max_body_bytes"] == 1048576 and user["body_timeout_s"] == 10
