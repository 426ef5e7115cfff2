"""Progressive delivery end to end on the Kubernetes path: PolicyRollout with a Progressive strategy →
operator → RayService patches (challenger slot: shadow, canary weights) → KubeRay → Ray Serve → decision
logs on storage → the operator's evidence → promotion or abort.

Real: the training job's checkpoints, the kopf operator as its own process, a real Ray cluster with Serve
and its dashboard REST API, the policy server with its challenger slot and decision log, the load
generator playing episodes (``episode_id`` and ``POST /feedback``), local storage. Emulated: the
Kubernetes API (kmock's KubernetesEmulator) and KubeRay (tests/e2e/kuberay.py forwards serveConfigV2 to
the dashboard). The statistics are exercised with loose tolerances here (the verdicts are unit-tested):
these tests prove the wiring, the traffic shifts, the abort and the resume.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from rlops_core import checkpoints
from rlops_demo.load import LoadGenerator
from tests.e2e.served import TrainedCheckpoints, metadata
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FAST: dict[str, Any] = {
    "type": "Progressive",
    "settleSeconds": 3,
    "shadow": {"minEpisodes": 10, "maxDurationSeconds": 300},
    "offPolicyGate": {
        "minEpisodes": 10,
        "minEss": 1,
        "maxWeightShare": 1.0,
        "tolerance": 1000,
        "bootstrapSamples": 100,
    },
    "steps": [
        {"weight": 0.5, "holdSeconds": 2, "minEpisodes": 3},
        {"weight": 1.0, "holdSeconds": 2, "minEpisodes": 3},
    ],
    "analysis": {
        "minEpisodes": 3,
        "minRequests": 5,
        "maxErrorRate": 0.5,
        "tolerance": 1000,
        "maxStepSeconds": 300,
    },
}


def _user_config(served: Any) -> dict[str, Any]:
    config = yaml.safe_load(served.rayservice()["spec"]["serveConfigV2"])
    app = next(a for a in config["applications"] if a["name"] == served.app)
    return app["deployments"][0]["user_config"]


def _stage(st: dict[str, Any]) -> str | None:
    return (st.get("progressive") or {}).get("stage")


def _challengers_seen(served: Any) -> list[Any]:
    return [_challenger(f.config, served.app) for f in served.kuberay.forwarded_for(served.rs)]


def _challenger(config: Any, app: str) -> Any:
    if isinstance(config, str):
        config = yaml.safe_load(config)
    application = next(a for a in config["applications"] if a["name"] == app)
    ch = application["deployments"][0]["user_config"].get("challenger")
    return (ch["mode"], ch["weight"]) if ch else None


def test_full_progressive_rollout(served_factory: Any, trained: TrainedCheckpoints) -> None:
    served = served_factory(trained.a, strategy=FAST)
    load = LoadGenerator(served.endpoint, workers=2, max_seconds=600, episodes=True).start()
    try:
        checkpoints.write_pointer(served.pointer, trained.b)
        served.wait(
            lambda st: _stage(st) in ("Shadow", "OffPolicyGate", "Canary", "Full", "Promoted"), "shadow"
        )
        st = served.wait(
            lambda st: _stage(st) in ("Promoted", "Aborted"), "the rollout to finish", timeout=400
        )
        wait_for(
            lambda: (metadata(served.endpoint) or {}).get("checkpoint_uri") == trained.b,
            60,
            what="/metadata to name B as the champion",
        )
    finally:
        stats = load.stop()
    prog = st["progressive"]
    assert prog["stage"] == "Promoted", prog.get("abortReason")
    uc = _user_config(served)
    assert uc["checkpoint_uri"] == trained.b and uc.get("challenger") is None
    assert uc["decision_log"]["root"] == trained.root
    assert st["live"]["checkpointUri"] == trained.b and st["previous"]["checkpointUri"] == trained.a
    assert st["phase"] == "Live"
    assert [s["name"] for s in prog["stages"]] == ["shadow", "canary", "full"]
    assert prog["offPolicy"] is not None and prog["offPolicy"]["episodes"] >= 10
    assert prog["stages"][1]["episodes"]["challenger"] >= 3
    # KubeRay saw: champion only, shadow, canary 50%, 100%, then the challenger as the champion
    seen = [
        c for i, c in enumerate(_challengers_seen(served)) if i == 0 or c != _challengers_seen(served)[i - 1]
    ]
    assert seen == [None, ("shadow", 0.0), ("canary", 0.5), ("canary", 1.0), None]
    reasons = [e["reason"] for e in served.events()]
    for reason in ("ShadowStarted", "ShadowComplete", "OffPolicyGatePassed", "AnalysisPassed"):
        assert reason in reasons, reasons
    assert stats.failed == 0, [r for r in stats.requests if not r.ok][:5]
    slots = {e.policy for e in stats.episodes}  # who answered each played episode (from the answers)
    assert {"champion", "challenger"} <= slots, slots


def test_abort_on_online_evidence(served_factory: Any, trained: TrainedCheckpoints) -> None:
    """A latency limit no policy can meet: the canary aborts on the logged latencies, all traffic returns."""
    strict = {**FAST, "analysis": {**FAST["analysis"], "maxP99LatencyMs": 0.001}}
    served = served_factory(trained.a, strategy=strict)
    load = LoadGenerator(served.endpoint, workers=2, max_seconds=600, episodes=True).start()
    try:
        checkpoints.write_pointer(served.pointer, trained.b)
        st = served.wait(
            lambda st: _stage(st) in ("Promoted", "Aborted"), "the rollout to finish", timeout=400
        )
        wait_for(
            lambda: (metadata(served.endpoint) or {}).get("challenger") is None,
            60,
            what="/metadata to show no challenger",
        )
        time.sleep(2)  # traffic after the abort, all to the champion
    finally:
        stats = load.stop()
    prog = st["progressive"]
    assert prog["stage"] == "Aborted" and prog["abortReason"].startswith("Latency"), prog.get("abortReason")
    uc = _user_config(served)
    assert uc["checkpoint_uri"] == trained.a and uc.get("challenger") is None
    assert st["live"]["checkpointUri"] == trained.a and st["phase"] == "RolledBack"
    assert _challengers_seen(served)[-1] is None
    assert "Latency" in [e["reason"] for e in served.events()]
    assert stats.failed == 0, [r for r in stats.requests if not r.ok][:5]
    # the same pointer version is not tried again
    time.sleep(3)
    assert _stage(served.status()) == "Aborted" and _user_config(served).get("challenger") is None


def test_operator_restart_mid_step_resumes(
    served_factory: Any, trained: TrainedCheckpoints, e2e_operator: Any
) -> None:
    slow_step = {
        **FAST,
        "steps": [
            {"weight": 0.5, "holdSeconds": 25, "minEpisodes": 3},
            {"weight": 1.0, "holdSeconds": 2, "minEpisodes": 3},
        ],
    }
    served = served_factory(trained.a, strategy=slow_step)
    load = LoadGenerator(served.endpoint, workers=2, max_seconds=600, episodes=True).start()
    try:
        checkpoints.write_pointer(served.pointer, trained.b)
        before = served.wait(lambda st: _stage(st) == "Canary", "the canary step", timeout=400)
        e2e_operator.stop()
        time.sleep(3)
        assert _stage(served.status()) == "Canary"
        assert _challenger(served.rayservice()["spec"]["serveConfigV2"], served.app) == ("canary", 0.5)
        e2e_operator.start()
        st = served.wait(
            lambda st: _stage(st) in ("Promoted", "Aborted"), "the rollout to finish", timeout=400
        )
    finally:
        stats = load.stop()
    prog = st["progressive"]
    assert prog["stage"] == "Promoted", prog.get("abortReason")
    b = before["progressive"]
    assert prog["startedAt"] == b["startedAt"]  # the same rollout, resumed, not restarted
    assert prog["stages"][1]["startedAt"] == b["stageStartedAt"]  # the same canary step, resumed
    assert [s["name"] for s in prog["stages"]] == ["shadow", "canary", "full"]
    reasons = [e["reason"] for e in served.events()]
    assert reasons.count("ShadowStarted") == 1, reasons
    assert _user_config(served)["checkpoint_uri"] == trained.b
    assert stats.failed == 0, [r for r in stats.requests if not r.ok][:5]
