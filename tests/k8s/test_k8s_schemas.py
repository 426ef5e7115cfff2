"""Every rendered and plain manifest against the Kubernetes API schemas (kubernetes-validate, strict,
offline), each RayJob/RayService against KubeRay 1.7.0's CRDs, each PolicyRollout against ours."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.charts import (
    POLICYROLLOUT_CRD,
    TOOLS_PYTHON,
    Rendered,
    kuberay_crd,
    kuberay_crd_path,
    plain_manifest_docs,
)
from tests.k8s.schemas import crd_errors

# The chart's minimum (Chart.yaml kubeVersion) and the pinned kubectl's version.
KUBERNETES_VERSIONS = ["1.29.0", "1.35.0"]
CUSTOM_GROUPS = ("ray.io/", "rlops.io/", "kopf.dev/")
RUNNER = Path(__file__).with_name("kube_validate_runner.py")


def all_docs(rendered: dict[str, Rendered]) -> list[tuple[str, dict[str, Any]]]:
    docs = [(f"chart[{s.name}]", doc) for s in rendered.values() for doc in s.docs]
    docs += [(f"manifests/{name}", doc) for name, doc in plain_manifest_docs()]
    return docs


def label(source: str, doc: dict[str, Any]) -> str:
    meta = doc.get("metadata", {})
    return f"{source} {doc.get('kind')} {meta.get('namespace', '')}/{meta.get('name')}"


def kube_validate(docs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    if not TOOLS_PYTHON.exists():
        pytest.skip(f"{TOOLS_PYTHON} missing: run `make tools` (scripts/install_tools.sh)")
    request = {"versions": KUBERNETES_VERSIONS, "docs": [[label(s, d), d] for s, d in docs]}
    cmd = [str(TOOLS_PYTHON), str(RUNNER)]
    result = subprocess.run(cmd, input=json.dumps(request), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_builtin_kinds_match_the_kubernetes_schemas(rendered: dict[str, Rendered]) -> None:
    builtin = [(s, d) for s, d in all_docs(rendered) if not d["apiVersion"].startswith(CUSTOM_GROUPS)]
    assert len(builtin) > 30
    assert kube_validate(builtin) == []


def test_the_validator_rejects_a_misspelt_field(rendered: dict[str, Rendered]) -> None:
    deploy = yaml.safe_load(yaml.safe_dump(rendered["defaults"].one("Deployment")))
    deploy["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    deploy["spec"]["replicas"] = "one"
    errors = kube_validate([("mutated", deploy)])
    assert len(errors) == len(KUBERNETES_VERSIONS)
    assert all("mutated Deployment" in e for e in errors)


@pytest.mark.parametrize("kind", ["RayJob", "RayService"])
def test_ray_resources_match_kuberay_1_7_crds(rendered: dict[str, Rendered], kind: str) -> None:
    crd = kuberay_crd(kind)
    path = kuberay_crd_path(kind)
    assert crd["spec"]["names"]["kind"] == kind
    docs = [(s, d) for s, d in all_docs(rendered) if d["kind"] == kind]
    plain = {"RayJob": {"rayjob-cpu.yaml", "rayjob-gpu.yaml"}, "RayService": {"rayservice.yaml"}}[kind]
    assert {s.split("[")[0] for s, _ in docs} == {"chart"} | {f"manifests/{name}" for name in plain}
    for source, doc in docs:
        assert doc["apiVersion"] == "ray.io/v1"
        assert crd_errors(path, doc) == [], label(source, doc)


def test_kuberay_check_catches_a_misplaced_field(rendered: dict[str, Rendered]) -> None:
    path = kuberay_crd_path("RayJob")
    job = yaml.safe_load(yaml.safe_dump(rendered["defaults"].one("RayJob")))
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["minReplica"] = 0
    job["spec"]["backoffLimit"] = "twice"
    errors = crd_errors(path, job)
    assert any("minReplica" in e for e in errors), errors
    assert any(e.startswith("spec/backoffLimit") for e in errors), errors


def test_policyrollouts_match_our_crd(rendered: dict[str, Rendered]) -> None:
    docs = [(s, d) for s, d in all_docs(rendered) if d["kind"] == "PolicyRollout"]
    assert len(docs) >= 3
    for source, doc in docs:
        assert crd_errors(POLICYROLLOUT_CRD, doc) == [], label(source, doc)
    bad = yaml.safe_load(yaml.safe_dump(docs[0][1]))
    bad["spec"]["pollIntervalSeconds"] = 0
    bad["spec"]["target"].pop("rayService")
    assert len(crd_errors(POLICYROLLOUT_CRD, bad)) >= 2
