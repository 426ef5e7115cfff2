"""Where the KubeRay CRDs come from (``--kuberay-crds`` / ``RLOPS_KUBERAY_CRDS``), and that missing
schemas skip locally with the reason but fail under CI (``CI=true``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT
from tests.k8s import charts


def test_the_rayservice_crd_loads() -> None:
    """The probe the subprocess tests below run: the RayService CRD is where the settings say."""
    crd = charts.kuberay_crd("RayService")
    assert crd["spec"]["names"]["kind"] == "RayService"


@pytest.fixture
def no_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charts, "_crds_option", None)


def test_env_var_then_default(no_option: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RLOPS_KUBERAY_CRDS", str(tmp_path))
    assert charts.kuberay_crds_dir() == tmp_path
    monkeypatch.delenv("RLOPS_KUBERAY_CRDS")
    assert charts.kuberay_crds_dir() == REPO_ROOT.parent / "shared" / "kuberay-crds"


def test_the_option_wins_over_the_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RLOPS_KUBERAY_CRDS", "/nowhere")
    monkeypatch.setattr(charts, "_crds_option", None)
    charts.use_kuberay_crds(tmp_path)
    assert charts.kuberay_crds_dir() == tmp_path


def test_missing_schemas_skip_locally_with_the_reason(
    no_option: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RLOPS_KUBERAY_CRDS", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"ray.io_rayservices.yaml not found.*--kuberay-crds"):
        charts.kuberay_crd_path("RayService")


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_missing_schemas_fail_under_ci(
    no_option: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str
) -> None:
    monkeypatch.setenv("RLOPS_KUBERAY_CRDS", str(tmp_path))
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI=true: missing schemas fail"):
        charts.kuberay_crd_path("RayService")


def run_probe(*args: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "RLOPS_KUBERAY_CRDS")}
    if ci is not None:
        env["CI"] = ci
    node = "tests/k8s/test_k8s_crd_option.py::test_the_rayservice_crd_loads"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", node, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)


def test_the_command_line_option_reaches_the_checks(tmp_path: Path) -> None:
    skipped = run_probe("--kuberay-crds", str(tmp_path), ci=None)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout + skipped.stderr
    assert str(tmp_path) in skipped.stdout
    failed = run_probe("--kuberay-crds", str(tmp_path), ci="true")
    assert failed.returncode == 1 and "1 failed" in failed.stdout, failed.stdout + failed.stderr
    assert "CI=true" in failed.stdout
