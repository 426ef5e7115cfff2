"""manifests/ and the chart's copy of the Serve config must not drift from their sources."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.k8s.charts import CHART, MANIFESTS, REPO_ROOT, tool

SCRIPT = REPO_ROOT / "scripts" / "render_manifests.py"
EXPECTED = {
    "operator.yaml", "minio.yaml", "rayjob-cpu.yaml", "rayjob-gpu.yaml",
    "rayservice.yaml", "policyrollout.yaml",
}  # fmt: skip


def test_manifests_are_exactly_what_the_chart_renders() -> None:
    tool("helm")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert result.returncode == 0, f"manifests/ drifted from the chart:\n{result.stderr}"
    assert {p.name for p in MANIFESTS.glob("*.yaml")} == EXPECTED


def test_the_drift_check_notices_an_edit(tmp_path: Path) -> None:
    tool("helm")
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    edited = copy / "policyrollout.yaml"
    edited.write_text(edited.read_text().replace("pollIntervalSeconds: 5", "pollIntervalSeconds: 6"))
    (copy / "rayjob-cpu.yaml").unlink()
    cmd = [sys.executable, str(SCRIPT), "--check", "--manifests-dir", str(copy)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "policyrollout.yaml" in result.stderr and "rayjob-cpu.yaml" in result.stderr
    assert "rayservice.yaml" not in result.stderr


def test_chart_serve_config_is_a_copy_of_the_shipped_one() -> None:
    source = REPO_ROOT / "workloads" / "serve_config.yaml"
    assert (CHART / "files" / "serve_config.yaml").read_text() == source.read_text()


def test_plain_manifests_carry_no_secret_values() -> None:
    for path in MANIFESTS.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc["kind"] != "Secret", path.name
        text = path.read_text()
        for literal in ("aws_secret_access_key:", "password:", "AKIA"):
            assert literal not in text, f"{path.name} contains {literal}"


def test_kind_rayjob_manifest_targets_minio_and_local_images() -> None:
    job = yaml.safe_load((MANIFESTS / "rayjob-cpu.yaml").read_text())
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in head["env"]}
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://rlops-minio:9000"
    assert head["image"] == "rlops-workloads:0.1.0-cpu" and head["imagePullPolicy"] == "Never"


def test_kind_script_and_docs_name_objects_the_chart_creates() -> None:
    """scripts/kind_e2e.sh and docs/kubernetes.md address objects by name: those names must exist."""
    from tests.k8s.conftest import SCENARIOS, load_docs, render

    names = {(d["kind"], d["metadata"]["name"]) for d in load_docs(render(*SCENARIOS["kind-full"]))}
    for expected in [
        ("RayJob", "rlops-train-kind-1"),
        ("Deployment", "rlops-operator"),
        ("RayService", "rlops-serve"),
        ("PolicyRollout", "rlops"),
        ("Service", "rlops-minio"),
    ]:
        assert expected in names
    script = (REPO_ROOT / "scripts" / "kind_e2e.sh").read_text()
    docs = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    for text in (script, docs):
        for needle in ("rlops-train-kind-", "deploy/rlops-operator", "rlops-serve", "values-kind.yaml"):
            assert needle in text
    # KubeRay names the Serve Service of a RayService <name>-serve-svc; the rollout and tests use it.
    assert "rlops-serve-serve-svc" in script and "rlops-serve-serve-svc" in docs
    assert 'KUBERAY_VERSION="1.7.0"' in script and "--version 1.7.0" in docs
