"""ProgressiveDriver: polls of a progressive rollout from stored status, real decision logs and controls."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rlops_operator import progressive as pg
from rlops_operator.progressive_driver import ProgressiveDriver

from rlops_core import storage
from tests.operator.test_progressive import CHALL, CHAMP, T, make_spec, play_shadow

GOOD = np.array([0.1, 0.2, 0.7])


def driver_for(root: str) -> ProgressiveDriver:
    return ProgressiveDriver(log_root=lambda name: root, app=lambda name: "bandit")


def spec() -> pg.ProgressiveSpec:
    return make_spec(offPolicyGate={"bootstrapSamples": 300, "tolerance": 0.02}, shadow={"minEpisodes": 100})


def test_begin_step_restart_and_abort_by_annotation(tmp_path) -> None:
    root = str(tmp_path / "store")
    s = spec()
    first = driver_for(root).begin("corridor", s, CHAMP, CHALL, T)
    assert first.state.stage == "Shadow" and first.serving["challenger"]["mode"] == "shadow"
    status = json.loads(json.dumps(first.status))  # what the PolicyRollout's status holds
    play_shadow(root, GOOD, 150, seed=3, start=T + 1)
    driver = driver_for(root)  # a restarted operator: a new driver, the stored status
    out = driver.step("corridor", s, status, T + 30)
    assert out.state.stage_name == "Canary(0)" and out.problems == [] and not out.finished
    assert out.serving["challenger"] == {"checkpoint_uri": CHALL, "mode": "canary", "weight": 0.1}
    assert out.evidence is not None and out.evidence.shadow_episodes == 150
    assert [t.reason for t in out.transitions] == ["ShadowComplete", "OffPolicyGatePassed"]
    again = driver.step("corridor", s, out.status, T + 31)  # nothing new: no transition, same stage
    assert again.transitions == [] and again.state.stage_name == "Canary(0)"
    note = {pg.COMMAND_ANNOTATION: '{"id": "a1", "action": "abort", "by": "kubectl"}'}
    aborted = driver.step("corridor", s, again.status, T + 32, annotations=note)
    assert aborted.finished and aborted.state.abort_reason.startswith("ManualAbort")
    assert aborted.serving == {"checkpoint_uri": CHAMP, "challenger": None}
    assert "corridor" not in driver._collectors  # forgotten once finished
    done = driver.step("corridor", s, aborted.status, T + 33, annotations=note)
    assert done.transitions == [] and done.evidence is None


def test_bad_annotation_and_paused_spec(tmp_path) -> None:
    root = str(tmp_path / "store")
    s = spec()
    d = driver_for(root)
    st = d.begin("r", s, CHAMP, CHALL, T).status
    out = d.step("r", s, st, T + 1, annotations={pg.COMMAND_ANNOTATION: "{nope"}, paused=True)
    assert out.state.paused and out.transitions[0].kind == "Paused"
    assert out.problems and "rlops.io/command ignored" in out.problems[0]


def test_unreadable_log_is_a_problem_not_an_exception(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import free_port

    s = spec()
    d = driver_for(s3_bucket + "/store")
    st = d.begin("r", s, CHAMP, CHALL, T).status
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    storage.reset_clients()
    try:
        out = d.step("r", s, st, T + 1)
    finally:
        monkeypatch.undo()
        storage.reset_clients()
    assert (
        out.state.stage == "Shadow" and out.problems and out.problems[0].startswith("decision log: listing")
    )
