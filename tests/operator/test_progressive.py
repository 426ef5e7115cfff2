"""The progressive delivery state machine: every transition, every abort rule, manual controls, restarts.

The state machine is pure, so most tests feed it evidence directly. The last tests drive it from real decision
logs (a local folder, written by the replica-side writer, read by the operator-side collector).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from rlops_operator import progressive as pg
from rlops_operator.evidence import EvidenceCollector
from rlops_operator.progressive import (
    Command,
    Controls,
    Evidence,
    OffPolicyEvidence,
    ProgressiveSpec,
    ProgressiveSpecError,
    ProgressiveState,
    SlotEvidence,
)

CHAMP, CHALL = "s3://b/champion", "s3://b/challenger"
T = 1_795_000_000.0


def make_spec(**over: Any) -> ProgressiveSpec:
    base: dict[str, Any] = {
        "type": "Progressive",
        "shadow": {"minEpisodes": 100, "maxDurationSeconds": 600},
        "offPolicyGate": {"minEpisodes": 100, "minEss": 30, "tolerance": 0.5},
        "steps": [
            {"weight": 0.1, "holdSeconds": 60, "minEpisodes": 20},
            {"weight": 0.5, "holdSeconds": 60, "minEpisodes": 20},
            {"weight": 1.0, "holdSeconds": 30, "minEpisodes": 20},
        ],
        "analysis": {
            "minEpisodes": 20,
            "minRequests": 50,
            "maxErrorRate": 0.05,
            "maxP99LatencyMs": 100,
            "maxStepSeconds": 600,
            "tolerance": 0.5,
        },
        "settleSeconds": 0,
    }
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return ProgressiveSpec.from_resource(base)


def slot(n: int, mean: float, sd: float = 1.0, requests: int = 0, errors: int = 0, p99: float | None = None):
    return SlotEvidence(
        episodes=n, mean=mean, m2=sd**2 * max(n - 1, 0), requests=requests, errors=errors, p99_latency_ms=p99
    )


def ope(low: float, trustworthy: bool = True, reasons: tuple[str, ...] = ()) -> OffPolicyEvidence:
    return OffPolicyEvidence(
        method="PDWIS",
        estimate=9.0 + low + 0.3,
        interval=[8.0, 10.0],
        champion_mean=9.0,
        difference=low + 0.3,
        difference_interval=[low, low + 0.6],
        episodes=150,
        ess=80.0,
        trustworthy=trustworthy,
        reasons=list(reasons),
    )


def ev(st: ProgressiveState, **kw: Any) -> Evidence:
    return Evidence(stage_key=st.stage_key, **kw)


def started(spec: ProgressiveSpec | None = None) -> tuple[ProgressiveSpec, ProgressiveState]:
    spec = spec or make_spec()
    st, out = pg.start(spec, CHAMP, CHALL, T)
    assert [t.kind for t in out] == ["Started"]
    return spec, st


def at_canary(step: int = 0) -> tuple[ProgressiveSpec, ProgressiveState, float]:
    spec, st = started()
    st, _ = pg.advance(
        spec, st, ev(st, shadow_episodes=150, champion=slot(150, 9.0), off_policy=ope(-0.1)), T + 10
    )
    assert st.stage_name == "Canary(0)"
    now = T + 10
    for i in range(step):
        now += 61
        st, _ = pg.advance(spec, st, ev(st, champion=slot(200, 9.0), challenger=slot(30, 9.1)), now)
        assert st.stage_name == (f"Canary({i + 1})" if i + 1 < 2 else "Full")
    return spec, st, now


# ------------------------------------------------------------------------------------------------- spec
def test_replace_is_the_default_and_progressive_parses_camel_case() -> None:
    assert ProgressiveSpec.from_resource(None).type == "Replace"
    assert not ProgressiveSpec.from_resource({}).progressive
    spec = make_spec()
    assert spec.progressive and spec.off_policy_gate.min_ess == 30 and spec.steps[1].weight == 0.5
    assert spec.shadow_episodes_needed == 100
    with pytest.raises(ProgressiveSpecError, match="Replace"):
        pg.start(ProgressiveSpec(), CHAMP, CHALL, T)


@pytest.mark.parametrize(
    "strategy, match",
    [
        ({"steps": [{"weight": 0.5}, {"weight": 0.2}]}, "weights must increase"),
        ({"steps": [{"weight": 0.0}]}, r"strategy\.steps\.0\.weight"),
        ({"steps": [{"weight": 1.5}]}, r"strategy\.steps\.0\.weight"),
        ({"steps": []}, r"strategy\.steps"),
        ({"shadow": {"enabled": False}}, "offPolicyGate needs shadow"),
        ({"offPolicyGate": {"method": "IS"}}, r"strategy\.offPolicyGate\.method"),
        ({"analysis": {"maxErrorRate": 2}}, r"strategy\.analysis\.maxErrorRate"),
        ({"abort": {"onInconclusive": "maybe"}}, r"strategy\.abort\.onInconclusive"),
        ({"type": "BlueGreen"}, r"strategy\.type"),
        ({"shadoww": {}}, r"strategy\.shadoww"),
    ],
)
def test_bad_strategy_names_the_field(strategy: dict, match: str) -> None:
    with pytest.raises(ProgressiveSpecError, match=match):
        ProgressiveSpec.from_resource({"type": "Progressive", **strategy})


# ------------------------------------------------------------------------------------- shadow and gate
def test_start_shadow_serving_config() -> None:
    _, st = started()
    assert st.stage == "Shadow" and st.weight == 0.0
    assert pg.serving_config(st) == {
        "checkpoint_uri": CHAMP,
        "challenger": {"checkpoint_uri": CHALL, "mode": "shadow", "weight": 0.0},
    }


def test_shadow_waits_then_times_out() -> None:
    spec, st = started()
    st, out = pg.advance(spec, st, ev(st, shadow_episodes=99, champion=slot(99, 9.0)), T + 599)
    assert st.stage == "Shadow" and out == []
    st, out = pg.advance(spec, st, ev(st, shadow_episodes=99, champion=slot(99, 9.0)), T + 600)
    assert st.stage == "Aborted" and out[0].reason == "ShadowTimeout" and out[0].warning
    assert "only 99 of 100 shadow episodes" in st.abort_reason
    assert pg.serving_config(st) == {"checkpoint_uri": CHAMP, "challenger": None}


def test_shadow_timeout_also_without_fresh_evidence() -> None:
    spec, st = started()
    st, out = pg.advance(spec, st, None, T + 601)
    assert st.stage == "Aborted" and out[0].reason == "ShadowTimeout"


def test_gate_passes_into_the_first_canary_step() -> None:
    spec, st = started()
    st, out = pg.advance(
        spec, st, ev(st, shadow_episodes=150, champion=slot(150, 9.0), off_policy=ope(-0.4)), T + 5
    )
    assert [t.reason for t in out] == ["ShadowComplete", "OffPolicyGatePassed"]
    assert "difference lower bound -0.4" in out[1].message and "ESS 80 of 150" in out[1].message
    assert st.stage_name == "Canary(0)" and st.weight == 0.1 and st.mode == "canary"
    assert st.stage_started_at == T + 5 and st.off_policy is not None
    assert pg.serving_config(st)["challenger"] == {"checkpoint_uri": CHALL, "mode": "canary", "weight": 0.1}
    shadow, canary = st.stages
    assert shadow.name == "shadow" and shadow.outcome == "passed" and shadow.off_policy_estimate.ess == 80
    assert shadow.episodes == {"champion": 150, "challenger": 0} and canary.name == "canary"


def test_gate_refuses_a_low_lower_bound() -> None:
    spec, st = started()
    st, out = pg.advance(spec, st, ev(st, shadow_episodes=150, off_policy=ope(-0.6)), T + 5)
    assert st.stage == "Aborted" and out[-1].reason == "OffPolicyRefused"
    assert "tolerance 0.5" in st.abort_reason and pg.serving_config(st)["challenger"] is None


def test_relative_tolerance_uses_the_champion_mean() -> None:
    spec = make_spec(offPolicyGate={"tolerance": 0.0, "relativeTolerance": 0.1})  # 10% of 9.0 = 0.9
    _, st = started(spec)
    st, _ = pg.advance(spec, st, ev(st, shadow_episodes=150, off_policy=ope(-0.8)), T + 5)
    assert st.stage_name == "Canary(0)"


def test_gate_waits_for_the_estimate_and_for_trust() -> None:
    spec, st = started()
    st, out = pg.advance(spec, st, ev(st, shadow_episodes=150), T + 5)  # no estimate yet
    assert st.stage == "OffPolicyGate" and [t.reason for t in out] == ["ShadowComplete"]
    bad = ope(0.2, trustworthy=False, reasons=("effective sample size too small: 12.0 < 30",))
    st, out = pg.advance(spec, st, ev(st, shadow_episodes=150, off_policy=bad), T + 100)
    assert st.stage == "OffPolicyGate" and out == []  # more episodes may help
    st, out = pg.advance(spec, st, ev(st, shadow_episodes=160, off_policy=bad), T + 600)
    assert st.stage == "Aborted" and out[0].reason == "OffPolicyUntrustworthy"
    assert "effective sample size too small" in st.abort_reason


def test_untrustworthy_estimate_can_be_configured_to_continue() -> None:
    spec = make_spec(abort={"onUntrustworthy": "continue"})
    _, st = started(spec)
    bad = ope(0.2, trustworthy=False, reasons=("exploding weights",))
    st, out = pg.advance(spec, st, ev(st, shadow_episodes=150, off_policy=bad), T + 600)
    assert st.stage_name == "Canary(0)" and out[-1].reason == "OffPolicyGateSkipped" and out[-1].warning
    assert st.stages[0].outcome == "skipped"


def test_gate_disabled_goes_from_shadow_to_canary_and_shadow_disabled_starts_at_canary() -> None:
    spec = make_spec(offPolicyGate={"enabled": False}, shadow={"minEpisodes": 10})
    _, st = started(spec)
    st, out = pg.advance(spec, st, ev(st, shadow_episodes=0, champion=slot(10, 9.0)), T + 5)
    assert st.stage == "Shadow"  # usable shadow episodes count, not champion ones
    st, out = pg.advance(spec, st, ev(st, shadow_episodes=10), T + 6)
    assert st.stage_name == "Canary(0)" and out[0].reason == "ShadowPassed"
    spec2 = make_spec(offPolicyGate={"enabled": False}, shadow={"enabled": False})
    st2, out2 = pg.start(spec2, CHAMP, CHALL, T)
    assert st2.stage_name == "Canary(0)" and out2[0].reason == "CanaryStarted"


# ---------------------------------------------------------------------------------------------- canary
def test_canary_holds_needs_episodes_then_steps_up_to_full_and_promotes() -> None:
    spec, st, now = at_canary()
    good = dict(champion=slot(200, 9.0), challenger=slot(30, 9.1))
    st, out = pg.advance(spec, st, ev(st, **good), now + 59)
    assert st.stage_name == "Canary(0)" and out == []  # hold not over
    st, out = pg.advance(spec, st, ev(st, champion=slot(200, 9.0), challenger=slot(19, 9.1)), now + 61)
    assert st.stage_name == "Canary(0)" and out == []  # 19 < 20 challenger episodes
    st, out = pg.advance(spec, st, ev(st, **good), now + 61)
    assert st.stage_name == "Canary(1)" and st.weight == 0.5 and out[0].reason == "AnalysisPassed"
    assert "challenger mean return 9.1" in out[0].message
    st, out = pg.advance(spec, st, ev(st, champion=slot(100, 9.2, 1.0), challenger=slot(100, 9.3)), now + 200)
    assert st.stage == "Full" and st.weight == 1.0 and st.champion_baseline == [100.0, 9.2, 99.0]
    assert pg.serving_config(st)["challenger"]["weight"] == 1.0
    st, out = pg.advance(spec, st, ev(st, challenger=slot(25, 9.25)), now + 231)
    assert st.stage == "Promoted" and st.outcome == "promoted" and out[-1].kind == "Promoted"
    assert pg.serving_config(st) == {"checkpoint_uri": CHALL, "challenger": None}
    assert st.previous_champion_uri == CHAMP
    assert [s.name for s in st.stages] == ["shadow", "canary", "canary", "full"]
    assert all(s.outcome == "passed" for s in st.stages) and st.stages[-1].episodes["challenger"] == 25


def test_full_compares_with_the_last_canary_champion() -> None:
    spec, st, now = at_canary(2)
    assert st.stage == "Full"
    st, out = pg.advance(spec, st, ev(st, challenger=slot(50, 7.0)), now + 5)  # far below the baseline
    assert st.stage == "Aborted" and out[0].reason == "Regression"


def test_a_lone_full_step_is_judged_on_errors_and_latency() -> None:
    spec = make_spec(
        steps=[{"weight": 1.0, "holdSeconds": 10, "minEpisodes": 5}],
        offPolicyGate={"enabled": False},
        shadow={"enabled": False},
    )
    st, _ = pg.start(spec, CHAMP, CHALL, T)
    assert st.stage == "Full"
    st, out = pg.advance(spec, st, ev(st, challenger=slot(5, 1.0, requests=60)), T + 11)
    assert st.stage == "Promoted" and "errors and latency only" in out[-1].message


def test_regression_aborts_early_before_the_hold_is_over() -> None:
    spec, st, now = at_canary()
    st, out = pg.advance(spec, st, ev(st, champion=slot(200, 9.0), challenger=slot(40, 8.0, 1.0)), now + 5)
    assert st.stage == "Aborted" and out[0].reason == "Regression" and out[0].warning
    assert "interval [" in st.abort_reason and pg.serving_config(st)["challenger"] is None
    assert st.stages[-1].outcome == "aborted" and st.stages[-1].mean_return["challenger"] == 8.0


def test_worse_but_within_tolerance_passes_and_regression_rule_can_be_off() -> None:
    spec, st, now = at_canary()
    st2, _ = pg.advance(
        spec, st, ev(st, champion=slot(400, 9.0, 0.5), challenger=slot(400, 8.8, 0.5)), now + 61
    )
    assert st2.stage_name == "Canary(1)"  # 0.2 worse, tolerance 0.5
    off = make_spec(abort={"onRegression": False})
    st3, _ = pg.advance(off, st, ev(st, champion=slot(200, 9.0), challenger=slot(40, 8.0)), now + 5)
    assert st3.stage_name == "Canary(0)"


def test_error_rate_aborts_only_after_enough_requests() -> None:
    spec, st, now = at_canary()
    few = ev(st, challenger=slot(0, 0, requests=49, errors=10))
    st2, out = pg.advance(spec, st, few, now + 1)
    assert st2.stage_name == "Canary(0)" and out == []
    st3, out = pg.advance(spec, st, ev(st, challenger=slot(0, 0, requests=100, errors=6)), now + 1)
    assert (
        st3.stage == "Aborted"
        and out[0].reason == "ErrorRate"
        and "6.00% over 100 requests" in out[0].message
    )
    off = make_spec(abort={"onErrorRate": False})
    st4, _ = pg.advance(off, st, ev(st, challenger=slot(0, 0, requests=100, errors=6)), now + 1)
    assert st4.stage_name == "Canary(0)"


def test_latency_aborts() -> None:
    spec, st, now = at_canary()
    st2, out = pg.advance(spec, st, ev(st, challenger=slot(0, 0, requests=100, p99=150.0)), now + 1)
    assert st2.stage == "Aborted" and out[0].reason == "Latency" and "p99 150.0 ms > 100 ms" in out[0].message
    st3, _ = pg.advance(spec, st, ev(st, challenger=slot(0, 0, requests=100, p99=90.0)), now + 1)
    assert st3.stage_name == "Canary(0)"


def test_inconclusive_step_aborts_or_continues_as_configured() -> None:
    spec, st, now = at_canary()
    wide = ev(st, champion=slot(30, 9.0, 5.0), challenger=slot(30, 8.8, 5.0))  # interval far wider than 0.5
    st2, out = pg.advance(spec, st, wide, now + 100)
    assert st2.stage_name == "Canary(0)" and out == []
    st3, out = pg.advance(spec, st, wide, now + 600)
    assert st3.stage == "Aborted" and out[0].reason == "Inconclusive"
    cont = make_spec(abort={"onInconclusive": "continue"})
    st4, out = pg.advance(cont, st, wide, now + 600)
    assert st4.stage_name == "Canary(1)" and out[0].reason == "InconclusiveContinue" and out[0].warning
    st5, out = pg.advance(spec, st, None, now + 600)  # no evidence at all (the log could not be read)
    assert st5.stage == "Aborted" and "no evidence" in st5.abort_reason


def test_stale_evidence_for_another_stage_is_ignored() -> None:
    spec, st, now = at_canary()
    stale = Evidence(
        stage_key=pg.stage_key("shadow", 0, CHALL), challenger=slot(0, 0, requests=100, errors=50)
    )
    st2, out = pg.advance(spec, st, stale, now + 1)
    assert st2.stage_name == "Canary(0)" and out == []


def test_mixed_episodes_are_reported() -> None:
    spec, st, now = at_canary()
    st2, _ = pg.advance(spec, st, ev(st, champion=slot(10, 9.0), challenger=slot(2, 9.0), mixed=3), now + 1)
    assert st2.evidence.mixed == 3 and st2.stages[-1].mixed == 3


# ------------------------------------------------------------------------------------- manual controls
def test_pause_stops_the_hold_clock_but_not_the_abort_rules() -> None:
    spec, st, now = at_canary()
    good = ev(st, champion=slot(200, 9.0), challenger=slot(30, 9.1))
    st, out = pg.advance(spec, st, good, now + 10, Controls(paused=True))
    assert st.paused and out[0].kind == "Paused"
    st, out = pg.advance(spec, st, good, now + 500, Controls(paused=True))
    assert st.stage_name == "Canary(0)" and out == []  # would have passed, but paused
    st, out = pg.advance(spec, st, good, now + 510, Controls(paused=False))
    assert out[0].kind == "Resumed" and st.paused_seconds == 500 and st.stage_name == "Canary(0)"
    st, out = pg.advance(spec, st, good, now + 559)  # 559 - 500 paused = 59 s held of 60
    assert st.stage_name == "Canary(0)"
    st, out = pg.advance(spec, st, good, now + 560)
    assert st.stage_name == "Canary(1)"
    st, _ = pg.advance(spec, st, good, now + 562, Controls(paused=True))
    bad = ev(st, challenger=slot(0, 0, requests=100, errors=50))
    st, out = pg.advance(spec, st, bad, now + 563, Controls(paused=True))
    assert st.stage == "Aborted" and out[0].reason == "ErrorRate"


def test_manual_abort_is_applied_once_and_recorded() -> None:
    spec, st, now = at_canary()
    cmd = Command(id="abort-1", action="abort", by="alice", reason="pager")
    st, out = pg.advance(spec, st, None, now + 1, Controls(commands=[cmd]))
    assert st.stage == "Aborted" and out[0].reason == "ManualAbort" and "by alice: pager" in out[0].message
    assert st.overrides[0].action == "abort" and st.overrides[0].by == "alice"
    st2, out2 = pg.advance(spec, st, None, now + 2, Controls(commands=[cmd]))
    assert out2 == [] and st2 == st


def test_promote_needs_skip_analysis_and_is_recorded_as_override() -> None:
    spec, st, now = at_canary()
    st, out = pg.advance(spec, st, None, now + 1, Controls(commands=[Command(id="p1", action="promote")]))
    assert (
        st.stage_name == "Canary(0)" and out[0].kind == "CommandRefused" and "skipAnalysis" in out[0].message
    )
    skip = Command(id="p2", action="promote", skip_analysis=True, by="bob")
    st, out = pg.advance(spec, st, None, now + 2, Controls(commands=[skip]))
    assert [t.kind for t in out] == ["Override", "Promoted"] and out[1].reason == "ManualPromotion"
    assert st.stage == "Promoted" and st.overrides[-1].action == "promote --skip-analysis"
    assert st.stages[-1].outcome == "overridden"
    assert pg.serving_config(st) == {"checkpoint_uri": CHALL, "challenger": None}


def test_undo_after_promotion_brings_back_the_previous_champion() -> None:
    spec, st, now = at_canary()
    st, _ = pg.advance(
        spec, st, None, now, Controls(commands=[Command(id="p", action="promote", skip_analysis=True)])
    )
    st, out = pg.advance(spec, st, None, now + 1, Controls(commands=[Command(id="u", action="undo")]))
    assert st.stage == "RolledBack" and out[0].kind == "RolledBack" and st.outcome == "rolledBack"
    assert pg.serving_config(st) == {"checkpoint_uri": CHAMP, "challenger": None}
    st, out = pg.advance(spec, st, None, now + 2, Controls(commands=[Command(id="a", action="abort")]))
    assert out[0].kind == "CommandRefused" and st.stage == "RolledBack"


def test_undo_during_a_rollout_aborts() -> None:
    spec, st = started()
    st, out = pg.advance(spec, st, None, T + 1, Controls(commands=[Command(id="u", action="undo")]))
    assert st.stage == "Aborted" and out[0].reason == "ManualUndo"


def test_command_memory_is_bounded() -> None:
    spec, st = started()
    cmds = [Command(id=f"p{i}", action="promote") for i in range(30)]
    st, out = pg.advance(spec, st, None, T + 1, Controls(commands=cmds))
    assert len(out) == 30 and len(st.handled_commands) == pg.COMMAND_MEMORY


# --------------------------------------------------------------------------------------------- restart
def roundtrip(st: ProgressiveState) -> ProgressiveState:
    return ProgressiveState.from_status(json.loads(json.dumps(st.to_status())))


def test_status_is_camel_case_json_and_round_trips() -> None:
    _, st, _ = at_canary(1)
    status = st.to_status()
    assert status["stage"] == "Canary" and status["step"] == 1 and "stageStartedAt" in status
    assert "championUri" in status and status["stages"][0]["offPolicyEstimate"]["ess"] == 80
    assert roundtrip(st) == st


def test_restart_mid_step_resumes_identically() -> None:
    """Drive one rollout twice: straight through, and with a serialise/deserialise before every step."""
    spec, st0 = started()
    script: list[tuple[float, Any, Controls | None]] = [
        (T + 5, dict(shadow_episodes=150, champion=slot(150, 9.0), off_policy=ope(-0.1)), None),
        (T + 30, dict(champion=slot(100, 9.0), challenger=slot(10, 9.1)), Controls(paused=True)),
        (T + 90, dict(champion=slot(150, 9.0), challenger=slot(25, 9.1)), Controls(paused=False)),
        (T + 95, dict(champion=slot(150, 9.0), challenger=slot(25, 9.1)), None),  # held 30 of 60 s
        (T + 126, dict(champion=slot(200, 9.0), challenger=slot(30, 9.1)), None),  # 61 s held: next step
        (T + 190, dict(champion=slot(100, 9.0), challenger=slot(100, 9.05)), None),
        (T + 230, dict(challenger=slot(30, 9.05)), None),
    ]

    def run(restart: bool) -> tuple[ProgressiveState, list[str]]:
        st, log = st0, []
        for now, kw, controls in script:
            if restart:
                st = roundtrip(st)
            st, out = pg.advance(spec, st, ev(st, **kw), now, controls)
            log += [f"{t.kind}:{t.reason}:{t.to_stage}" for t in out]
        return st, log

    straight, log1 = run(False)
    resumed, log2 = run(True)
    assert straight == resumed and log1 == log2
    assert straight.stage == "Promoted" and straight.paused_seconds == 0  # reset when the step changed
    assert log1[:3] == [
        "Advanced:ShadowComplete:OffPolicyGate",
        "Advanced:OffPolicyGatePassed:Canary(0)",
        "Paused:Paused:Canary(0)",
    ]


# ---------------------------------------------------------------------------------- from real logs
BEHAVIOUR = np.array([0.5, 0.3, 0.2])  # the champion
ARM_MEANS = np.array([0.2, 0.5, 0.8])


def play_shadow(root: str, challenger_probs: np.ndarray, n: int, seed: int, start: float) -> None:
    """Shadow traffic on a 3-armed bandit: the champion samples and answers, the challenger scores."""
    from workloads.serving.decision_writer import DecisionLogSettings, DecisionWriter

    rng = np.random.default_rng(seed)
    clock = [start]
    settings = DecisionLogSettings(root=root)
    writers = [DecisionWriter(settings, "bandit", f"replica-{i}", clock=lambda: clock[0]) for i in range(2)]
    for i in range(n):
        a = int(rng.choice(3, p=BEHAVIOUR))
        w = writers[i % 2]
        w.decision(
            episode_id=f"ep-{seed}-{i}",
            step=0,
            slot="champion",
            checkpoint_uri=CHAMP,
            mode="shadow",
            weight=0.0,
            challenger_uri=CHALL,
            action=a,
            prob=float(BEHAVIOUR[a]),
            observation=[0],
            probs=BEHAVIOUR.tolist(),
            latency_ms=2.0,
            shadow={
                "checkpoint_uri": CHALL,
                "prob": float(challenger_probs[a]),
                "probs": challenger_probs.tolist(),
            },
        )
        writers[(i + 1) % 2].feedback(f"ep-{seed}-{i}", float(rng.random() < ARM_MEANS[a]), True, step=0)
        clock[0] += 0.01
    for w in writers:
        w.close()
        assert w.dropped == 0


@pytest.mark.parametrize(
    "challenger, method, outcome",
    [
        (np.array([0.1, 0.2, 0.7]), "PDWIS", "Canary(0)"),  # better: true value 0.68 vs 0.41
        (np.array([0.8, 0.15, 0.05]), "PDWIS", "Aborted"),  # worse: true value 0.27
        (np.array([0.8, 0.15, 0.05]), "DR", "Aborted"),
    ],
)
def test_gate_from_real_shadow_logs(tmp_path, challenger: np.ndarray, method: str, outcome: str) -> None:
    root = str(tmp_path / "store")
    spec = make_spec(
        offPolicyGate={"method": method, "tolerance": 0.02, "bootstrapSamples": 500},
        shadow={"minEpisodes": 400},
    )
    _, st = started(spec)
    play_shadow(root, challenger, 600, seed=1, start=T + 1)
    collector = EvidenceCollector.for_state(root, "bandit", spec, st, T + 60)
    evidence = collector.collect(st, T + 60)
    assert evidence.shadow_episodes == 600 and evidence.champion.episodes == 600
    assert evidence.champion.requests == 600 and evidence.champion.p99_latency_ms == 2.0
    assert evidence.off_policy is not None and evidence.off_policy.trustworthy
    assert evidence.off_policy.method == ("WDR" if method == "DR" else "PDWIS")
    st, out = pg.advance(spec, st, evidence, T + 60)
    assert st.stage_name == outcome, [t.message for t in out]
    truth = float(challenger @ ARM_MEANS)
    assert st.off_policy.interval[0] - 0.1 <= truth <= st.off_policy.interval[1] + 0.1


def test_collector_rebuilt_after_restart_gives_the_same_evidence(tmp_path) -> None:
    root = str(tmp_path / "store")
    spec = make_spec(offPolicyGate={"bootstrapSamples": 300}, shadow={"minEpisodes": 100})
    _, st = started(spec)
    play_shadow(root, np.array([0.1, 0.2, 0.7]), 150, seed=2, start=T + 1)
    first = EvidenceCollector.for_state(root, "bandit", spec, st, T + 30)
    a = first.collect(st, T + 30)
    again = first.collect(st, T + 40)  # incremental: nothing new read, nothing counted twice
    b = EvidenceCollector.for_state(root, "bandit", spec, st, T + 40).collect(st, T + 40)  # after a restart
    assert a.champion == again.champion == b.champion and a.off_policy == b.off_policy
    assert a.shadow_episodes == again.shadow_episodes == b.shadow_episodes == 150


def test_collector_files_episodes_by_their_first_decision_and_counts_slots(tmp_path) -> None:
    """Canary traffic across a weight change, with a challenger error, a mixed and a partial episode."""
    from workloads.serving.decision_writer import DecisionLogSettings, DecisionWriter

    root = str(tmp_path / "store")
    spec = make_spec()
    _, st, _ = at_canary(1)  # Canary(1): weight 0.5
    st = st.model_copy(update={"stage_started_at": T + 100})
    clock = [T + 50]
    w = DecisionWriter(DecisionLogSettings(root=root), "corridor", "r0", clock=lambda: clock[0])

    def step(eid: str, i: int, slot_: str, weight: float, **kw: Any) -> None:
        uri = CHALL if slot_ == "challenger" else CHAMP
        w.decision(
            episode_id=eid,
            step=i,
            slot=slot_,
            checkpoint_uri=uri,
            mode="canary",
            weight=weight,
            challenger_uri=CHALL,
            action=0,
            prob=0.5,
            latency_ms=kw.pop("latency_ms", 1.0),
            **kw,
        )

    step("old", 0, "challenger", 0.1)  # began at weight 0.1 ...
    clock[0] = T + 150
    step("old", 1, "challenger", 0.5)  # ... and ended after the change: filed under 0.1, not 0.5
    w.feedback("old", 100.0, True, step=1)
    for i in range(4):
        step(f"c{i}", 0, "challenger", 0.5, latency_ms=10.0 * (i + 1))
        w.feedback(f"c{i}", 9.0 + i, True, step=0)
        step(f"p{i}", 0, "champion", 0.5)
        w.feedback(f"p{i}", 8.0, True, step=0)
    step("bad", 0, "challenger", 0.5, error="policy_error")
    w.feedback("bad", 0.0, True, step=0)
    step("mix", 0, "champion", 0.5)
    step("mix", 1, "challenger", 0.5)
    w.feedback("mix", 1.0, True, step=1)
    step("tail", 3, "challenger", 0.5)  # its steps 0-2 were never read
    w.feedback("tail", 50.0, True, step=3)
    w.close()
    assert w.dropped == 0
    collector = EvidenceCollector.for_state(root, "corridor", spec, st, T + 200)
    e = collector.collect(st, T + 200)
    assert e.stage_key == st.stage_key and e.off_policy is None
    assert e.challenger.episodes == 5 and e.champion.episodes == 4  # c0-c3 + bad; p0-p3
    assert e.challenger.mean == pytest.approx((9 + 10 + 11 + 12 + 0) / 5) and e.champion.mean == 8.0
    assert e.mixed == 1 and e.partial == 1
    assert e.challenger.requests == 8 and e.challenger.errors == 1  # old's 2nd step, c0-c3, bad, mix, tail
    assert e.champion.requests == 5 and e.champion.errors == 0
    assert e.challenger.p99_latency_ms == pytest.approx(np.percentile([1.0, 10, 20, 30, 40, 1, 1, 1], 99))
    old_key = pg.stage_key("canary", 0.1, CHALL)
    assert collector._stages[old_key].slots["challenger"].returns.mean == 100.0


def test_crd_schema_is_structural_and_agrees_with_the_model() -> None:
    import jsonschema

    schema = pg.crd_schema()

    def walk(node: Any, path: str = "strategy") -> None:
        if isinstance(node, dict):
            for bad in ("$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "const", "additionalProperties"):
                assert bad not in node or path.endswith(".properties"), f"{bad} at {path}"
            if "properties" in node or "items" in node:
                assert node.get("type") in ("object", "array"), path
            if node.get("type") == "object" and not path.endswith(".properties"):
                assert "properties" in node, f"object without properties at {path}"
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(schema)
    validator = jsonschema.Draft4Validator(schema)  # OpenAPI 3.0 bounds are Draft 4's
    good = {
        "type": "Progressive",
        "steps": [{"weight": 0.2, "holdSeconds": 5, "minEpisodes": 3}],
        "offPolicyGate": {"method": "DR", "confidence": 0.9},
        "abort": {"onInconclusive": "continue"},
    }
    assert not list(validator.iter_errors(good))
    ProgressiveSpec.from_resource(good)
    for bad in (
        {"type": "Blue"},
        {"steps": [{"weight": 0}]},
        {"steps": [{"weight": 1.01}]},
        {"offPolicyGate": {"confidence": 1.0}},
        {"analysis": {"maxErrorRate": -0.1}},
        {"shadow": {"minEpisodes": 0}},
    ):
        assert list(validator.iter_errors(bad)), bad
        with pytest.raises(ProgressiveSpecError):
            ProgressiveSpec.from_resource(bad)


def test_controls_from_spec_and_annotations() -> None:
    spec = make_spec(paused=True, command={"id": "c1", "action": "abort", "by": "kubectl"})
    controls, problems = pg.controls_from(spec, {})
    assert controls.paused and [c.id for c in controls.commands] == ["c1"] and problems == []
    note = '{"id": "c2", "action": "promote", "skipAnalysis": true, "by": "alice"}'
    controls, problems = pg.controls_from(
        make_spec(), {pg.COMMAND_ANNOTATION: note, pg.PAUSED_ANNOTATION: "true"}
    )
    assert controls.paused and controls.commands[0].skip_analysis and controls.commands[0].by == "alice"
    assert pg.controls_from(make_spec(), None, paused=True)[0].paused  # the rollout's own spec.paused
    for bad in ("not json", '{"id": "x", "action": "explode"}', '{"action": "abort"}', "[]"):
        controls, problems = pg.controls_from(make_spec(), {pg.COMMAND_ANNOTATION: bad})
        assert (
            controls.commands == []
            and "rlops.io/command ignored" in problems[0]
            and "expected JSON" in problems[0]
        )
    controls, problems = pg.controls_from(make_spec(), {pg.PAUSED_ANNOTATION: "yes"})
    assert not controls.paused and 'must be "true" or "false"' in problems[0]
    with pytest.raises(ProgressiveSpecError, match=r"strategy\.command\.action"):
        make_spec(command={"id": "x", "action": "explode"})


def test_spec_command_drives_the_state_machine_once() -> None:
    spec = make_spec(command={"id": "abort-7", "action": "abort", "reason": "drill"})
    _, st = started(spec)
    controls, _ = pg.controls_from(spec, {})
    st, out = pg.advance(spec, st, None, T + 1, controls)
    assert st.stage == "Aborted" and "drill" in out[0].message
    assert st.evidence is not None and st.evidence.outcome == "aborted" and st.stages[-1].ended_at == T + 1
    st2, out2 = pg.advance(spec, st, None, T + 2, controls)  # the spec still names it: not applied again
    assert out2 == [] and st2 == st


# ------------------------------------------------------------------- a whole rollout, from real logs
GOOD = np.array([0.1, 0.2, 0.7])  # true value 0.68 (champion: 0.41)
BAD = np.array([0.7, 0.2, 0.1])  # true value 0.32


def run_rollout(tmp_path, challenger: np.ndarray, spec: ProgressiveSpec, restart_at: str | None = None):
    """Bandit traffic served as serving_config(state) says (routing by episode), logged, read, judged."""
    from workloads.serving.decision_writer import DecisionLogSettings, DecisionWriter
    from workloads.serving.routing import ChallengerSettings, route

    root = str(tmp_path / "store")
    rng = np.random.default_rng(7)
    state, _ = pg.start(spec, CHAMP, CHALL, T)
    collector = EvidenceCollector.for_state(root, "bandit", spec, state, T)
    now, seen, restarted, n = T, [state.stage_name], False, 0
    while not state.terminal and now < T + 3000:
        now += 2.0
        config = pg.serving_config(state)
        settings = ChallengerSettings(**config["challenger"]) if config["challenger"] else None
        writer = DecisionWriter(DecisionLogSettings(root=root), "bandit", f"r{n % 2}", clock=lambda t=now: t)
        for _ in range(60):
            n += 1
            eid = f"ep-{n}"
            slot_ = route(eid, settings)
            probs = challenger if slot_ == "challenger" else BEHAVIOUR
            a = int(rng.choice(3, p=probs))
            fields: dict[str, Any] = dict(episode_id=eid, step=0, slot=slot_, action=a, prob=float(probs[a]),
                                          checkpoint_uri=CHALL if slot_ == "challenger" else CHAMP,
                                          mode=settings.mode if settings else "none",
                                          weight=settings.weight if settings else 0.0,
                                          challenger_uri=settings.checkpoint_uri if settings else None,
                                          latency_ms=3.0)  # fmt: skip
            if settings is not None and settings.mode == "shadow":
                fields["shadow"] = {"checkpoint_uri": CHALL, "prob": float(challenger[a])}
            writer.decision(**fields)
            writer.feedback(eid, float(rng.random() < ARM_MEANS[a]), True, step=0)
        writer.close()
        if restart_at is not None and state.stage_name == restart_at and not restarted:
            restarted = True  # the operator restarts: state from the status JSON, collector rebuilt
            state = ProgressiveState.from_status(json.loads(json.dumps(state.to_status())))
            collector = EvidenceCollector.for_state(root, "bandit", spec, state, now)
        state, _ = pg.advance(spec, state, collector.collect(state, now), now)
        if state.stage_name != seen[-1]:
            seen.append(state.stage_name)
    return state, seen


FAST = {
    "shadow": {"minEpisodes": 300, "maxDurationSeconds": 600},
    "offPolicyGate": {"minEpisodes": 300, "minEss": 30, "tolerance": 0.05, "bootstrapSamples": 300},
    "steps": [{"weight": 0.2, "holdSeconds": 10, "minEpisodes": 30},
              {"weight": 0.5, "holdSeconds": 10, "minEpisodes": 30},
              {"weight": 1.0, "holdSeconds": 4, "minEpisodes": 30}],
    "analysis": {"minEpisodes": 30, "tolerance": 0.05, "maxStepSeconds": 600, "maxP99LatencyMs": 50},
}  # fmt: skip


def test_a_better_challenger_goes_all_the_way_and_a_restart_mid_step_changes_nothing(tmp_path) -> None:
    spec = make_spec(**FAST)
    straight, stages = run_rollout(tmp_path / "a", GOOD, spec)
    assert stages == ["Shadow", "Canary(0)", "Canary(1)", "Full", "Promoted"]
    assert straight.outcome == "promoted" and pg.serving_config(straight)["checkpoint_uri"] == CHALL
    shadow, c0, c1, full = straight.stages
    assert shadow.off_policy_estimate.trustworthy and shadow.off_policy_estimate.difference > 0
    assert 0.15 <= c0.episodes["challenger"] / (c0.episodes["challenger"] + c0.episodes["champion"]) <= 0.25
    assert c1.mean_return["challenger"] > c1.mean_return["champion"] and full.episodes["champion"] == 0
    resumed, stages2 = run_rollout(tmp_path / "b", GOOD, spec, restart_at="Canary(1)")
    assert stages2 == stages and resumed.stages == straight.stages


def test_a_worse_challenger_is_refused_by_the_gate_before_any_traffic(tmp_path) -> None:
    state, stages = run_rollout(tmp_path, BAD, make_spec(**FAST))
    assert stages == ["Shadow", "Aborted"] and state.abort_reason.startswith("OffPolicyRefused")
    assert state.stages[0].episodes["challenger"] == 0  # no request reached the challenger
    assert pg.serving_config(state) == {"checkpoint_uri": CHAMP, "challenger": None}


def test_without_the_gate_the_canary_aborts_on_online_evidence(tmp_path) -> None:
    spec = make_spec(**{**FAST, "offPolicyGate": {"enabled": False}})
    state, stages = run_rollout(tmp_path, BAD, spec)
    assert stages[:2] == ["Shadow", "Canary(0)"] and stages[-1] == "Aborted"
    assert state.abort_reason.startswith("Regression") and state.stages[-1].outcome == "aborted"


def test_a_full_step_right_after_shadow_compares_with_the_shadow_champion() -> None:
    spec = make_spec(steps=[{"weight": 1.0, "holdSeconds": 10, "minEpisodes": 20}])
    _, st = started(spec)
    st, _ = pg.advance(
        spec, st, ev(st, shadow_episodes=150, champion=slot(150, 9.0), off_policy=ope(0.0)), T + 5
    )
    assert st.stage == "Full" and st.champion_baseline == [150.0, 9.0, 149.0]
    st2, out = pg.advance(spec, st, ev(st, challenger=slot(40, 7.0)), T + 20)
    assert st2.stage == "Aborted" and out[0].reason == "Regression"
    st3, out = pg.advance(spec, st, ev(st, challenger=slot(40, 9.2)), T + 20)
    assert st3.stage == "Promoted" and "vs champion 9 (n=150)" in out[-1].message
