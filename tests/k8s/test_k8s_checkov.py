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

from tests.k8s.conftest import MANIFESTS, REPO_ROOT, Rendered, tool

CONFIG = Path(__file__).with_name("checkov.yaml")


def run_checkov(folder: Path) -> dict[str, dict]:
    """checkov's JSON reports by check type (kubernetes, dockerfile)."""
    result = subprocess.run(
        [tool("checkov"), "--config-file", str(CONFIG), "-d", str(folder), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    return {r["check_type"]: r for r in reports if "check_type" in r}


INSECURE_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "insecure", "namespace": "rlops"},
    "spec": {"containers": [{"name": "c", "image": "busybox:1.37", "securityContext": {"privileged": True}}]},
}


def failures(report: dict, *, negative: bool) -> list[dict]:
    """Failed checks of our files (negative=False) or of the planted insecure pod (negative=True)."""
    return [
        c
        for c in report["results"].get("failed_checks", [])
        if c["file_path"].startswith("/negative/") == negative
    ]


@pytest.fixture(scope="module")
def scan(rendered: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """One checkov run: the rendered chart, manifests/, the Dockerfile, and one planted insecure pod
    (in negative/) that proves the scan does fail things."""
    folder = tmp_path_factory.mktemp("checkov")
    for name in ("gpu-full", "kind-full", "namespaced-peering"):
        (folder / f"chart-{name}.yaml").write_text(rendered[name].text)
    for path in MANIFESTS.glob("*.yaml"):
        shutil.copy(path, folder / f"manifest-{path.name}")
    shutil.copy(REPO_ROOT / "Dockerfile", folder / "Dockerfile")
    (folder / "negative").mkdir()
    (folder / "negative" / "pod.yaml").write_text(yaml.safe_dump(INSECURE_POD))
    return run_checkov(folder)


@pytest.mark.parametrize(("check_type", "least_passed"), [("kubernetes", 300), ("dockerfile", 20)])
def test_checkov_finds_no_failed_checks(scan: dict[str, dict], check_type: str, least_passed: int) -> None:
    report = scan[check_type]
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
        for c in failures(report, negative=False)
    ]
    assert failed == [], "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] >= least_passed


def test_every_skip_is_justified() -> None:
    config_text = CONFIG.read_text()
    skips = yaml.safe_load(config_text)["skip-check"]
    lines = config_text.splitlines()
    for check in skips:
        index = lines.index(f"  - {check}")
        assert lines[index - 1].lstrip().startswith("#"), f"{check} has no reason above it"


def test_checkov_does_fail_an_insecure_pod(scan: dict[str, dict]) -> None:
    failed = {c["check_id"] for c in failures(scan["kubernetes"], negative=True)}
    assert {"CKV_K8S_16", "CKV_K8S_20"} <= failed  # privileged, allowPrivilegeEscalation
