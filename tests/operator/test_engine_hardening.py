"""The engine under hostile input and faults (issue 10, engine side).

Storage is real (local folders; S3 through moto's server where a storage outage is needed); the
target is the in-memory Serve config of ``tests/operator/doubles.py`` with injectable failures,
standing in for KubeRay/Serve so that every branch can be driven. Each test names its issue-10 class.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from rlops_operator.engine import Engine, HoldRequest, hold_only
from rlops_operator.spec import RolloutSpec, SpecError, TargetSpec
from rlops_operator.status import (
    DecisionKind,
    HoldKind,
    Phase,
    PointerOutcome,
    RolloutStatus,
    StageName,
    checkpoint_record,
)
from rlops_operator.targets import TargetError

from rlops_core import checkpoints, storage
from tests.helpers.rollout_data import make_checkpoint
from tests.operator.doubles import Clock, FlakyTarget


def spec_for(root: str, **kw: Any) -> RolloutSpec:
    target = kw.pop("target", None) or TargetSpec(dashboard_url="http://127.0.0.1:1")
    return RolloutSpec(pointer=checkpoints.pointer_uri(root, "corridor"), target=target, name="t", **kw)


def kinds(result: Any) -> list[str]:
    return [d.kind for d in result.decisions]


def set_manifest_metric(checkpoint_uri: str, raw_value: str) -> None:
    """Rewrite the manifest's metric value as raw JSON text (e.g. ``1e999``, ``"inf"``, ``NaN``)."""
    path = storage.parse_uri(storage.join_uri(checkpoint_uri, checkpoints.MANIFEST_NAME)).path
    body = json.loads(path.read_text())
    body["metric"]["value"] = "__VALUE__"
    path.write_text(json.dumps(body, indent=2).replace('"__VALUE__"', raw_value))


@pytest.fixture
def live(ckpt_root: str) -> str:
    return make_checkpoint(ckpt_root, "exp", "trial_a", 5.0)


def steps(engine: Engine, st: Any, n: int) -> tuple[dict[str, Any], list[str]]:
    seen: list[str] = []
    for _ in range(n):
        result = engine.step(st)
        st = result.status
        seen += kinds(result)
    return st, seen


# ------------------------------------------------------------------ class 2: non-finite values
@pytest.mark.parametrize("raw", ["1e999", "-1e999", '"inf"', '"-Infinity"', '"nan"', "NaN", "Infinity"])
def test_class2_non_finite_candidate_metric_is_refused(ckpt_root: str, live: str, raw: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    set_manifest_metric(new, raw)
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(live)
    result = Engine(spec, target).step({})
    assert kinds(result) == ["Refused"], result.decisions
    assert target.applied == [] and result.status["phase"] != "Verifying"
    json.dumps(result.status, allow_nan=False)  # the status is valid JSON


@pytest.mark.parametrize("raw", ["1e999", '"inf"', "NaN"])
def test_class2_non_finite_live_metric_is_never_stored_and_gate_says_so(
    ckpt_root: str, live: str, raw: str
) -> None:
    set_manifest_metric(live, raw)  # what serves now records a non-finite metric
    better = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root, require_improvement=True)
    checkpoints.write_pointer(spec.pointer, better)
    target = FlakyTarget(live)
    result = Engine(spec, target).step({})
    assert "metric" not in result.status["live"]  # unknown, never inf
    json.dumps(result.status, allow_nan=False)
    assert kinds(result) == ["GateUnevaluable"] and result.decisions[0].warning
    assert "requireImprovement cannot be evaluated" in result.decisions[0].message
    assert target.applied == []
    # said once, not every poll
    assert kinds(Engine(spec, target).step(result.status)) == []


def test_class2_gate_without_require_improvement_still_promotes(ckpt_root: str, live: str) -> None:
    set_manifest_metric(live, '"inf"')
    better = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, better)
    target = FlakyTarget(live)
    st, seen = steps(Engine(spec, target), {}, 2)
    assert seen == ["Applied", "Promoted"] and st["live"]["checkpointUri"] == better


@pytest.mark.parametrize(
    "change",
    [
        {"pollIntervalSeconds": float("nan")},
        {"pollIntervalSeconds": "inf"},
        {"rolloutTimeoutSeconds": float("inf")},
        {"rolloutTimeoutSeconds": "1e999"},
        {"minMetric": float("nan")},
        {"minMetric": "-inf"},
        {"minMetric": 1e999},
        {"maxHashBytes": float("inf")},
        {"pollIntervalSeconds": True},
    ],
)
def test_class2_non_finite_spec_fields_are_rejected(change: dict[str, Any]) -> None:
    raw = {"pointer": "/data/c/best_checkpoint.txt", "target": {"rayService": "rs"}, **change}
    with pytest.raises(SpecError) as err:
        RolloutSpec.from_resource(raw, name="x", namespace="ns")
    assert next(iter(change)) in str(err.value) or "invalid spec" in str(err.value)


def test_class2_status_models_refuse_non_finite() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        RolloutStatus.model_validate(
            {"live": {"checkpointUri": "/c", "metric": {"name": "m", "value": "inf"}}}
        )
    assert checkpoint_record("/c", ("m", math.inf)).metric is None
    assert checkpoint_record("/c", ("m", 1.5)).metric is not None


# ------------------------------------------------------------------ class 6: no hammering, no spam
def test_class6_target_down_reports_once_backs_off_and_never_rehashes(
    ckpt_root: str, live: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root, poll_interval_s=1)
    target = FlakyTarget(live)
    clock = Clock()
    engine = Engine(spec, target, clock=clock)
    verified: list[str] = []
    real_verify = checkpoints.verify_checkpoint

    def counting_verify(uri: str, **kw: Any) -> Any:  # counts, then does the real work
        verified.append(uri)
        return real_verify(uri, **kw)

    monkeypatch.setattr(checkpoints, "verify_checkpoint", counting_verify)
    checkpoints.write_pointer(spec.pointer, live)
    st = engine.step({}).status  # the live checkpoint first
    assert st["phase"] == "Live"
    target.down = TargetError("HTTP503", "the API answers 503")
    checkpoints.write_pointer(spec.pointer, new)
    st, seen = steps_with_clock(engine, st, clock, 40, 1.0)
    assert seen.count("Error") == 1 and "Recovered" not in seen
    attempts = target.calls["current"] + target.calls["apply"]
    assert attempts < 15, f"{attempts} target calls in 40 polls: no backoff"
    assert verified == []  # target unreachable before the check: nothing downloaded or hashed
    assert st["lastError"]["count"] >= 2 and st["phase"] in ("Live", "Idle", "Promoting")
    healthy = [c for c in st["conditions"] if c["type"] == "Healthy"]
    assert healthy and healthy[0]["status"] == "False"
    target.down = None
    st, seen = steps_with_clock(
        engine, st, clock, 400, 1.0, until=lambda s: s.get("live", {}).get("checkpointUri") == new
    )
    assert "Recovered" in seen and "Applied" in seen and "Promoted" in seen
    assert verified == [new]  # checked exactly once for this pointer version
    assert "lastError" not in st


def test_class6_apply_retries_do_not_recheck_the_checkpoint(
    ckpt_root: str, live: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(live)

    verified: list[str] = []
    real_verify = checkpoints.verify_checkpoint
    monkeypatch.setattr(
        checkpoints, "verify_checkpoint", lambda uri, **kw: (verified.append(uri), real_verify(uri, **kw))[1]
    )
    clock = Clock()
    engine = Engine(spec, target, clock=clock)
    original_apply = target.apply
    failures = {"n": 3}

    def flaky_apply(uri: str, lineage: Any) -> None:
        if failures["n"] > 0:
            failures["n"] -= 1
            raise TargetError("HTTP500", "patch refused")
        original_apply(uri, lineage)

    target.apply = flaky_apply  # type: ignore[method-assign]
    st = engine.step({})
    assert st.status["phase"] == "Promoting" and kinds(st) == ["Error"]
    _, seen = steps_with_clock(engine, st.status, clock, 60, 1.0, until=lambda s: s.get("phase") == "Live")
    assert "Applied" in seen and "Promoted" in seen and verified == [new]
    assert seen.count("Error") == 0  # the same error is not reported again


def test_class6_store_ignoring_if_none_match_gives_one_refusal(ckpt_root: str, live: str) -> None:
    """A store answering every conditional read with the full body and the same ETag."""
    spec = spec_for(ckpt_root)
    storage.write_bytes(spec.pointer, b"not a uri at all\nsecond line\n")
    target = FlakyTarget(live)
    engine = Engine(spec, target)
    st = engine.step({}).status
    for _ in range(5):
        st = dict(st)
        st["pointer"] = {**st["pointer"], "etag": "stale-etag-that-forces-a-full-read"}
        result = engine.step(st)
        assert kinds(result) == []
        st = result.status


def test_class6_refused_candidate_not_reannounced_on_rewrite(ckpt_root: str, live: str) -> None:
    low = make_checkpoint(ckpt_root, "exp", "low", 1.0)
    spec = spec_for(ckpt_root, min_metric=3.0)
    checkpoints.write_pointer(spec.pointer, low)
    target = FlakyTarget(live)
    engine = Engine(spec, target)
    result = engine.step({})
    assert kinds(result) == ["Refused"]
    for _ in range(3):  # same content rewritten: a new version, judged again, same answer, no new Event
        checkpoints.write_pointer(spec.pointer, low)
        result = engine.step(result.status)
        assert kinds(result) == []


# ------------------------------------------------------------------ class 7: rewritten pointer
def test_class7_pointer_before_manifest_then_rewritten_is_promoted(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    manifest = storage.parse_uri(storage.join_uri(new, checkpoints.MANIFEST_NAME)).path
    saved = manifest.read_bytes()
    manifest.unlink()
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, new)  # pointer first: refused, no manifest yet
    target = FlakyTarget(live)
    engine = Engine(spec, target)
    result = engine.step({})
    assert kinds(result) == ["Refused"] and result.decisions[0].reason == "CheckpointInvalid"
    manifest.write_bytes(saved)  # the manifest lands
    checkpoints.write_pointer(spec.pointer, new)  # and the same pointer is written again
    result = engine.step(result.status)
    assert kinds(result) == ["Applied"] and target.applied == [new]


def test_class7_refused_candidate_is_rechecked_later_with_backoff(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    manifest = storage.parse_uri(storage.join_uri(new, checkpoints.MANIFEST_NAME)).path
    saved = manifest.read_bytes()
    manifest.unlink()
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(live)
    clock = Clock()
    engine = Engine(spec, target, clock=clock)
    st = engine.step({}).status
    assert st["pointer"]["outcome"] == PointerOutcome.REFUSED
    clock.t += 5
    assert kinds(engine.step(st)) == []  # too early for a re-check
    manifest.write_bytes(saved)  # the manifest lands; the pointer is NOT rewritten
    clock.t += 60
    result = engine.step(st)
    assert kinds(result) == ["Applied"] and target.applied == [new]


# ------------------------------------------------------------------ class 8: live state is read
def test_class8_rollback_restores_what_really_served(ckpt_root: str, live: str) -> None:
    hand = make_checkpoint(ckpt_root, "exp", "by_hand", 6.0)
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root, rollout_timeout_s=30)
    target = FlakyTarget(live)
    engine = Engine(spec, target)
    checkpoints.write_pointer(spec.pointer, live)
    st = engine.step({}).status
    assert st["live"]["checkpointUri"] == live
    target.edit_by_hand(hand)  # someone edits the RayService by hand
    checkpoints.write_pointer(spec.pointer, new)
    result = engine.step(st)
    assert "Drift" in kinds(result) and "Applied" in kinds(result)
    assert result.status["rollout"]["previous"]["checkpointUri"] == hand
    target.state = "failed"
    result = engine.step(result.status)
    assert kinds(result) == ["RolledBack"]
    assert target.current_checkpoint() == hand and result.status["live"]["checkpointUri"] == hand


def test_class8_drift_is_detected_and_reported_once(ckpt_root: str, live: str) -> None:
    hand = make_checkpoint(ckpt_root, "exp", "by_hand", 6.0)
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, live)
    target = FlakyTarget(live)
    engine = Engine(spec, target)
    st = engine.step({}).status
    target.edit_by_hand(hand)
    result = engine.step(st)
    assert kinds(result) == ["Drift"] and result.status["live"]["checkpointUri"] == hand
    assert result.status["live"]["metric"]["value"] == 6.0
    assert result.status["deployed"]["checkpointUri"] == hand
    assert kinds(engine.step(result.status)) == []
    assert target.applied == []  # the operator reports drift, it does not fight the edit


def test_class8_already_live_only_when_the_target_names_it(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root)
    target = FlakyTarget(live)
    # a stale status claims `new` is live; the target serves `live`
    stale = {"live": {"checkpointUri": new}, "phase": "Live"}
    checkpoints.write_pointer(spec.pointer, new)
    result = Engine(spec, target).step(stale)
    assert "AlreadyLive" not in kinds(result) and "Applied" in kinds(result)
    assert target.applied == [new] and result.status["rollout"]["previous"]["checkpointUri"] == live


def test_class8_target_change_mid_rollout_rolls_back_the_old_target(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    old_t, new_t = FlakyTarget(live), FlakyTarget(live)
    old_spec = spec_for(ckpt_root, target=TargetSpec(ray_service="old", namespace="ns"))
    new_spec = spec_for(ckpt_root, target=TargetSpec(ray_service="new", namespace="ns"))
    checkpoints.write_pointer(old_spec.pointer, new)
    st = Engine(old_spec, old_t).step({}).status
    assert st["phase"] == "Verifying" and old_t.current_checkpoint() == new
    factory = {"old": old_t, "new": new_t}
    engine = Engine(new_spec, new_t, target_factory=lambda t: factory[t.ray_service or ""])
    result = engine.step(st)
    assert kinds(result)[0] == "TargetChanged" and "rolled" in result.decisions[0].message
    assert old_t.current_checkpoint() == live  # the old target was rolled back
    # and the new target gets the candidate, verified from scratch
    assert "Applied" in kinds(result) and new_t.applied == [new]
    assert result.status["target"]["rayService"] == "new"


def test_class8_target_change_without_factory_is_reported(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    old_spec = spec_for(ckpt_root, target=TargetSpec(ray_service="old", namespace="ns"))
    new_spec = spec_for(ckpt_root, target=TargetSpec(ray_service="new", namespace="ns"))
    checkpoints.write_pointer(old_spec.pointer, new)
    st = Engine(old_spec, FlakyTarget(live)).step({}).status
    result = Engine(new_spec, FlakyTarget(live)).step(st)
    assert result.decisions[0].kind == "TargetChanged" and result.decisions[0].warning
    assert "abandoned without rollback" in result.decisions[0].message


# ------------------------------------------------------------------ class 10: transient absence
def test_class10_brief_absence_during_verification_is_pending(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root, rollout_timeout_s=30)
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(live)
    clock = Clock()
    engine = Engine(spec, target, clock=clock)
    st = engine.step({}).status
    target.missing_reads = 2
    seen: list[str] = []
    for _ in range(6):
        clock.t += 2
        result = engine.step(st)
        st = result.status
        seen += kinds(result)
        if st["phase"] == "Live":
            break
    assert "RolledBack" not in seen and "Failed" not in seen
    assert st["phase"] == "Live" and st["live"]["checkpointUri"] == new
    assert target.applied == [new]


def test_class10_absence_past_the_timeout_rolls_back_and_status_names_the_truth(
    ckpt_root: str, live: str
) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root, rollout_timeout_s=10)
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(live)
    clock = Clock()
    engine = Engine(spec, target, clock=clock)
    st = engine.step({}).status
    target.missing_reads = 1000
    st, seen = steps_with_clock(engine, st, clock, 30, 1.0, until=lambda s: not s.get("rollout"))
    assert "RolledBack" in seen
    assert target.current_checkpoint() == live
    assert st["live"]["checkpointUri"] == live == st["deployed"]["checkpointUri"]


def test_class10_rollback_while_target_unreachable_keeps_trying(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root, rollout_timeout_s=30)
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(live)
    clock = Clock()
    engine = Engine(spec, target, clock=clock)
    st = engine.step({}).status
    target.state = "failed"
    target.apply_down = TargetError("HTTP503", "the API answers 503")
    st, seen = steps_with_clock(engine, st, clock, 10, 1.0)
    assert st["rollout"]["stage"] == StageName.ROLLBACK and "Failed" not in seen
    assert target.current_checkpoint() == new and st["deployed"]["checkpointUri"] == new
    assert seen.count("Error") == 1
    target.apply_down = None
    st, seen = steps_with_clock(engine, st, clock, 30, 1.0, until=lambda s: not s.get("rollout"))
    assert "RolledBack" in seen and target.current_checkpoint() == live
    progressing = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "False"


def test_failed_without_previous_clears_progressing(ckpt_root: str) -> None:
    """The rollback path with nothing to roll back to: Progressing False, status names what is deployed."""
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(new)
    target.text = target.text.replace(f"checkpoint_uri: {new}", "checkpoint_uri: ''")
    target.state = "failed"
    st, seen = steps(Engine(spec, target), {}, 2)
    assert "Failed" in seen and st["phase"] == "Failed"
    assert next(c for c in st["conditions"] if c["type"] == "Progressing")["status"] == "False"
    assert st["deployed"]["checkpointUri"] == new and "live" not in st


# ------------------------------------------------------------------ class 11: pause, invalid spec
def test_class11_pause_still_rolls_back_a_failed_rollout(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(live)
    st = Engine(spec, target).step({}).status
    assert st["phase"] == "Verifying"
    paused = spec_for(ckpt_root, paused=True)
    target.state = "failed"
    result = Engine(paused, target).step(st)
    assert kinds(result) == ["RolledBack", "Paused"] and target.current_checkpoint() == live
    assert result.status["phase"] == Phase.PAUSED
    other = make_checkpoint(ckpt_root, "exp", "trial_c", 9.5)
    checkpoints.write_pointer(spec.pointer, other)
    assert kinds(Engine(paused, target).step(result.status)) == [] and target.applied == [new, live]
    resumed = Engine(spec, target).step(result.status)
    assert kinds(resumed) == ["Resumed", "Applied"]


def test_class11_pause_still_verifies_a_rollout_in_flight(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(live)
    st = Engine(spec, target).step({}).status
    result = Engine(spec_for(ckpt_root, paused=True), target).step(st)
    assert kinds(result) == ["Promoted", "Paused"] and result.status["live"]["checkpointUri"] == new


def test_class11_invalid_spec_finishes_the_rollout_in_flight(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root, target=TargetSpec(ray_service="rs", namespace="ns"))
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(live)
    st = RolloutStatus.parse(Engine(spec, target).step({}).status)
    assert st.rollout is not None and st.rollout.target is not None
    saved = RolloutSpec.for_unfinished_rollout(st.rollout.target, spec.pointer, 300, "t")
    target.state = "failed"
    hold = HoldRequest(
        HoldKind.INVALID_SPEC, "InvalidSpec", "invalid spec: pollIntervalSeconds must be positive"
    )
    result = Engine(saved, target).step(st, hold)
    assert kinds(result) == ["RolledBack", "Refused"] and target.current_checkpoint() == live
    assert result.status["phase"] == "Failed" and "invalid spec" in result.status["message"]
    assert kinds(hold_only(result.status, hold)) == []  # said once
    fixed = Engine(spec, target).step(result.status)
    assert kinds(fixed)[0] == "Resumed" and fixed.status["phase"] == "RolledBack"


def test_conflict_hold_stops_polling_and_clears(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(live)
    hold = HoldRequest(HoldKind.CONFLICT, "TargetConflict", "owned by default/older")
    result = Engine(spec, target).step({}, hold)
    assert kinds(result) == ["Conflict"] and target.applied == []
    assert any(c["type"] == "Conflict" and c["status"] == "True" for c in result.status["conditions"])
    assert kinds(Engine(spec, target).step(result.status, hold)) == []
    freed = Engine(spec, target).step(result.status)
    assert kinds(freed) == ["Resumed", "Applied"]
    assert not any(c["type"] == "Conflict" for c in freed.status["conditions"])


# ------------------------------------------------------------------ helpers
def steps_with_clock(
    engine: Engine, st: Any, clock: Clock, n: int, dt: float, until: Any = None
) -> tuple[dict[str, Any], list[str]]:
    seen: list[str] = []
    for _ in range(n):
        clock.t += dt
        result = engine.step(st)
        st = result.status
        seen += kinds(result)
        if until is not None and until(st):
            break
    return st, seen


def test_step_is_pure_and_resumable(ckpt_root: str, live: str) -> None:
    """The same (spec, status, target state, clock) gives the same result; a restart resumes."""
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(live)
    clock = Clock()
    st = Engine(spec, target, clock=clock).step({}).status
    again = Engine(spec, target, clock=clock).step(json.loads(json.dumps(st)))  # a restarted operator
    assert kinds(again) == ["Promoted"] and target.applied == [new]
    assert RolloutStatus.parse(again.status).to_json() == again.status
    assert DecisionKind.PROMOTED in {d.kind for d in again.decisions}


def test_class6_storage_outage_while_checking_is_one_error_no_flapping(
    ckpt_root: str, live: str, s3_server: Any, s3_bucket: str
) -> None:
    """Pointer readable (local), checkpoint on S3 (moto's server, stopped): one Error, no Recovered/Error
    pair per poll, a steady Healthy=False condition, and the candidate promoted once S3 is back."""
    new = make_checkpoint(s3_bucket, "exp", "b", 9.0)
    spec = spec_for(ckpt_root, allowed_prefixes=(ckpt_root, s3_bucket), poll_interval_s=1)
    target = FlakyTarget(live)
    clock = Clock()
    engine = Engine(spec, target, clock=clock)
    checkpoints.write_pointer(spec.pointer, live)
    st = engine.step({}).status
    s3_server.stop()
    try:
        checkpoints.write_pointer(spec.pointer, new)
        st, seen = steps_with_clock(engine, st, clock, 12, 1.0)
        assert seen == ["Error"], seen
        assert st["lastError"]["source"] == "storage" and st["lastError"]["count"] >= 2
        assert st["pointer"]["outcome"] == "Pending" and target.applied == []
        healthy = next(c for c in st["conditions"] if c["type"] == "Healthy")
        assert healthy["status"] == "False"
    finally:
        s3_server.start()
    st, seen = steps_with_clock(
        engine, st, clock, 200, 1.0, until=lambda s: s.get("live", {}).get("checkpointUri") == new
    )
    assert seen[:2] == ["Recovered", "Applied"] or seen[:2] == ["Applied", "Recovered"], seen
    assert "Promoted" in seen and "lastError" not in st


def test_class9_target_keys_and_owner() -> None:
    from rlops_operator.ownership import Claim, owner_of, target_key

    rs = {"pointer": "/d/c/best_checkpoint.txt", "target": {"rayService": "rs"}}
    assert target_key(rs, "ns") == target_key({**rs, "pollIntervalSeconds": 5}, "ns")
    assert target_key(rs, "ns") != target_key(rs, "other")
    other_app = {**rs, "target": {"rayService": "rs", "application": "b"}}
    assert target_key(other_app, "ns") != target_key(rs, "ns")
    d1 = {"pointer": "/d/c/best_checkpoint.txt", "target": {"dashboardUrl": "http://Head:8265/"}}
    d2 = {"pointer": "/e/c/best_checkpoint.txt", "target": {"dashboardUrl": "http://head:8265"}}
    assert target_key(d1, "a") == target_key(d2, "b")  # same dashboard from any namespace
    assert target_key({"pointer": "ftp://x", "target": {}}, "ns") is None
    claims = [Claim("2026-01-02T00:00:00Z", "a/young"), Claim("2026-01-01T00:00:00Z", "z/old")]
    assert owner_of(claims) == claims[1]
    tie = [Claim("2026-01-01T00:00:00Z", "ns/b"), Claim("2026-01-01T00:00:00Z", "ns/a")]
    assert owner_of(tie) == tie[1]


def test_status_written_before_typed_state_resumes(ckpt_root: str, live: str) -> None:
    """A status stored by the untyped engine (``stage: verifying``, ``pausedFrom``) is read and resumed."""
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, new)
    target = FlakyTarget(new)  # the old operator applied it, then stopped
    old = {
        "phase": "Verifying",
        "live": {"checkpointUri": live, "metric": {"name": "m", "value": 5.0}},
        "rollout": {
            "checkpointUri": new,
            "metric": {"name": "m", "value": 9.0},
            "startedAt": "2026-01-01T00:00:00Z",
            "startedAtEpoch": Clock().t,
            "stage": "verifying",
            "previous": {"checkpointUri": live},
        },
        "pointer": {"uri": spec.pointer, "etag": "x", "checkpointUri": new, "readAt": "2026-01-01T00:00:00Z"},
        "lastError": {"source": "target", "reason": "HTTP500", "message": "m", "at": "2026-01-01T00:00:00Z"},
        "history": [{"at": "2026-01-01T00:00:00Z", "decision": "Applied"}] * 15,
    }
    result = Engine(spec, target, clock=Clock()).step(old)
    assert "Promoted" in kinds(result) and result.status["live"]["checkpointUri"] == new
    assert len(result.status["history"]) <= 10
    paused = {"phase": "Paused", "pausedFrom": "Live", "live": {"checkpointUri": new}}
    resumed = Engine(spec, target).step(paused)
    assert kinds(resumed)[0] == "Resumed" and resumed.status["phase"] == "Live"
