"""``rlops-rollout`` under bad flags and failing rollouts (issue 10, classes 2 and 12).

The CLI runs in-process (typer's runner) against kmock's KubernetesEmulator (``--rayservice``); the
test plays KubeRay and never reports the new generation, so verification times out.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from rlops_operator.cli import app
from typer.testing import CliRunner

from rlops_core import checkpoints
from tests.helpers.rollout_data import SERVE_CONFIG, make_checkpoint
from tests.operator.kube import EmulatedCluster, rayservice_path

NS = "default"
_names = itertools.count(1)
runner = CliRunner()


@pytest.mark.parametrize(
    "flags",
    [
        ["--timeout", "nan"],
        ["--timeout", "inf"],
        ["--min-metric", "nan"],
        ["--min-metric", "-inf"],
        ["--min-metric", "1e999"],
    ],
)
def test_class2_non_finite_flags_are_rejected(flags: list[str], tmp_path: Path) -> None:
    pointer = str(tmp_path / "c" / "best_checkpoint.txt")
    for command in ("promote", "watch"):
        result = runner.invoke(
            app, [command, "--pointer", pointer, "--dashboard-url", "http://127.0.0.1:1", *flags]
        )
        assert result.exit_code == 2, result.output
        assert "finite" in result.output and "Traceback" not in result.output


def test_class2_non_finite_poll_interval_is_rejected(tmp_path: Path) -> None:
    pointer = str(tmp_path / "c" / "best_checkpoint.txt")
    result = runner.invoke(
        app, ["watch", "--pointer", pointer, "--dashboard-url", "http://h:1", "--poll-interval", "nan"]
    )
    assert result.exit_code == 2 and "finite" in result.output


def _rayservice(kube: EmulatedCluster, name: str, uri: str) -> None:
    body = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"serveConfigV2": SERVE_CONFIG.format(uri=uri)},
    }
    kube.request("POST", rayservice_path(NS), body)


def _served(kube: EmulatedCluster, name: str) -> Any:
    config = yaml.safe_load(kube.get(rayservice_path(NS, name))["spec"]["serveConfigV2"])
    return config["applications"][0]["deployments"][0]["user_config"]["checkpoint_uri"]


@pytest.fixture
def kubeconfig(kube: EmulatedCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = kube.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


def test_class12_promote_that_fails_leaves_nothing_applied(
    kube: EmulatedCluster, kubeconfig: Path, ckpt_root: str
) -> None:
    name = f"cli-{next(_names)}"
    a = make_checkpoint(ckpt_root, "exp", "a", 5.0)
    b = make_checkpoint(ckpt_root, "exp", "b", 6.0)
    _rayservice(kube, name, a)
    pointer = checkpoints.pointer_uri(ckpt_root, name)
    checkpoints.write_pointer(pointer, b)
    result = runner.invoke(
        app, ["promote", "--pointer", pointer, "--rayservice", name, "-n", NS, "--timeout", "3"]
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "ROLLED BACK" in result.output
    assert _served(kube, name) == a


def test_class12_promote_with_an_unreachable_api_exits_cleanly(
    kube: EmulatedCluster, kubeconfig: Path, ckpt_root: str
) -> None:
    """The API refuses every read: no traceback, exit 1, nothing applied."""
    name = f"cli-{next(_names)}"
    a = make_checkpoint(ckpt_root, "exp", "a", 5.0)
    b = make_checkpoint(ckpt_root, "exp", "b", 6.0)
    _rayservice(kube, name, a)
    pointer = checkpoints.pointer_uri(ckpt_root, name)
    checkpoints.write_pointer(pointer, b)
    fault = kube.fail_next("GET", "rayservices", 403, 100_000)
    try:
        result = runner.invoke(
            app, ["promote", "--pointer", pointer, "--rayservice", name, "-n", NS, "--timeout", "1"]
        )
    finally:
        fault.times = 0
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "gave up" in result.output
    assert _served(kube, name) == a
