"""``rlops-rollout`` controls of a progressive rollout: a PolicyRollout's annotations (kmock's Kubernetes
emulator stands in for the API server) and a ``watch --control-file`` (a real file, read by the real engine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rlops_operator import controls
from rlops_operator.cli import app, load_strategy
from rlops_operator.progressive import COMMAND_ANNOTATION, PAUSED_ANNOTATION, Command
from typer.testing import CliRunner

from tests.operator.kube import EmulatedCluster, rollout_path
from tests.operator.test_progressive_engine import STRATEGY, started, step, user_config, world  # noqa: F401

runner = CliRunner()


def test_control_file_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "ctl" / "control.json"
    assert controls.read_control_file(f) == {}
    assert runner.invoke(app, ["pause", "--control-file", str(f)]).exit_code == 0
    assert controls.read_control_file(f) == {PAUSED_ANNOTATION: "true"}
    out = runner.invoke(app, ["abort", "--control-file", str(f), "--reason", "bad smell"])
    assert out.exit_code == 0, out.output
    notes = controls.read_control_file(f)
    cmd = Command.model_validate(json.loads(notes[COMMAND_ANNOTATION]))
    assert (
        cmd.action == "abort" and cmd.reason == "bad smell" and cmd.by and notes[PAUSED_ANNOTATION] == "true"
    )
    assert runner.invoke(app, ["resume", "--control-file", str(f)]).exit_code == 0
    assert controls.read_control_file(f)[PAUSED_ANNOTATION] == "false"
    out = runner.invoke(app, ["promote", "--skip-analysis", "--control-file", str(f)])
    assert out.exit_code == 0, out.output
    cmd2 = Command.model_validate(json.loads(controls.read_control_file(f)[COMMAND_ANNOTATION]))
    assert cmd2.action == "promote" and cmd2.skip_analysis and cmd2.id != cmd.id
    f.write_text("{not json")
    assert controls.read_control_file(f) == {COMMAND_ANNOTATION: "{not json"}  # the engine reports it once


@pytest.mark.parametrize(
    "args",
    [
        ["abort"],  # neither a PolicyRollout nor a control file
        ["abort", "x", "--control-file", "/tmp/c.json"],  # both
        ["promote"],  # no pointer and no --skip-analysis
        ["promote", "--rollout", "x"],  # --rollout without --skip-analysis
    ],
)
def test_control_needs_exactly_one_destination(args: list[str]) -> None:
    out = runner.invoke(app, args)
    assert out.exit_code == 2, out.output


def test_strategy_file(tmp_path: Path) -> None:
    f = tmp_path / "strategy.yaml"
    f.write_text("type: Progressive\nsteps:\n- {weight: 0.2, holdSeconds: 5}\n- {weight: 1.0}\n")
    s = load_strategy(f)
    assert s.progressive and [x.weight for x in s.steps] == [0.2, 1.0]
    f.write_text(json.dumps({"strategy": STRATEGY}))  # a spec fragment works too
    assert load_strategy(f).steps[0].weight == 0.5
    f.write_text("type: Progressive\nsteps: [{weight: 0.5}, {weight: 0.4}]\n")
    out = runner.invoke(
        app,
        [
            "watch",
            "-p",
            "/x/c/best_checkpoint.txt",
            "--dashboard-url",
            "http://127.0.0.1:1",
            "--strategy-file",
            str(f),
            "--duration",
            "1",
        ],
    )
    assert out.exit_code == 2 and "increase strictly" in out.output


def test_control_file_drives_the_engine(world: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    """What `watch --control-file` does each step: the file's controls reach the engine as annotations."""
    w = world
    status = started(w)
    f = tmp_path / "control.json"
    assert runner.invoke(app, ["abort", "--control-file", str(f)]).exit_code == 0
    out = step(w, status, notes=controls.read_control_file(f))
    assert out.status["progressive"]["stage"] == "Aborted"
    assert user_config(w["target"])["challenger"] is None


@pytest.fixture
def cluster(kube: EmulatedCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EmulatedCluster:
    monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    kube.request(
        "POST",
        rollout_path("default"),
        {
            "apiVersion": "rlops.io/v1alpha1",
            "kind": "PolicyRollout",
            "metadata": {"name": "corridor", "namespace": "default"},
            "spec": {"pointer": "/x/c/best_checkpoint.txt", "target": {"rayService": "rs"}},
        },
    )
    return kube


def test_commands_annotate_the_policyrollout(cluster: EmulatedCluster) -> None:
    def notes() -> dict[str, str]:
        return cluster.get(rollout_path("default", "corridor"))["metadata"].get("annotations") or {}

    assert runner.invoke(app, ["pause", "corridor"]).exit_code == 0
    assert notes()[PAUSED_ANNOTATION] == "true"
    out = runner.invoke(app, ["promote", "--skip-analysis", "--rollout", "corridor", "--reason", "hotfix"])
    assert out.exit_code == 0, out.output
    cmd = Command.model_validate(json.loads(notes()[COMMAND_ANNOTATION]))
    assert cmd.action == "promote" and cmd.skip_analysis and cmd.reason == "hotfix"
    assert runner.invoke(app, ["undo", "corridor"]).exit_code == 0
    assert Command.model_validate(json.loads(notes()[COMMAND_ANNOTATION])).action == "undo"
    assert runner.invoke(app, ["resume", "corridor"]).exit_code == 0
    assert PAUSED_ANNOTATION not in notes()
    missing = runner.invoke(app, ["abort", "nope"])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_watch_writes_the_status_file(tmp_path: Path) -> None:
    """--status-file holds the status after every step (here: a pointer that does not exist yet)."""
    f = tmp_path / "out" / "status.json"
    pointer = tmp_path / "store" / "c" / "best_checkpoint.txt"
    args = ["watch", "-p", str(pointer), "--dashboard-url", "http://127.0.0.1:1", "--duration", "0.5"]
    out = runner.invoke(app, [*args, "--poll-interval", "0.2", "--status-file", str(f)])
    assert out.exit_code == 0, out.output
    status = json.loads(f.read_text())
    assert status["pointer"]["outcome"] == "Refused" and "progressive" not in status
