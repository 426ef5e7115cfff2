"""Security scan: checkov over the rendered chart (GPU and kind values) and manifests/, no failed checks.

Skipped checks are listed, each with its reason, in tests/k8s/checkov.yaml; per-resource skips are
checkov.io annotations on the resource itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s.conftest import MANIFESTS, Rendered, tool

CONFIG = Path(__file__).with_name("checkov.yaml")


def run_checkov(folder: Path) -> dict:
    result = subprocess.run(
        [tool("checkov"), "--config-file", str(CONFIG), "-d", str(folder), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    (kubernetes,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    return kubernetes


@pytest.fixture(scope="module")
def scan(rendered: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("checkov")
    for name in ("gpu-full", "kind-full", "namespaced-peering"):
        (folder / f"chart-{name}.yaml").write_text(rendered[name].text)
    for path in MANIFESTS.glob("*.yaml"):
        shutil.copy(path, folder / f"manifest-{path.name}")
    return run_checkov(folder)


def test_checkov_finds_no_failed_checks(scan: dict) -> None:
    summary = scan["summary"]
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
        for c in scan["results"].get("failed_checks", [])
    ]
    assert failed == [], "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 300
    assert summary["resource_count"] > 30


def test_every_skip_is_justified() -> None:
    config_text = CONFIG.read_text()
    skips = yaml.safe_load(config_text)["skip-check"]
    lines = config_text.splitlines()
    for check in skips:
        index = lines.index(f"  - {check}")
        assert lines[index - 1].lstrip().startswith("#"), f"{check} has no reason above it"


def test_checkov_does_fail_an_insecure_pod(tmp_path: Path) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "insecure", "namespace": "rlops"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox:1.37", "securityContext": {"privileged": True}}]
        },
    }
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod))
    failed = {c["check_id"] for c in run_checkov(tmp_path)["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_20"} <= failed  # privileged, allowPrivilegeEscalation
