"""The ``rollouts`` list of the demo's summary.json: one entry per challenger the engine rolled out.

A progressive rollout's entry comes from the engine's ``status.progressive`` (camelCase, see
``rlops_operator.progressive.ProgressiveState.to_status``) beside what the load generator itself saw
per slot in each stage's time window (``load_generator``: the client's view, a cross-check of the
engine's evidence read from the decision logs). A ``Replace`` rollout has one ``full`` stage built from
the load generator alone: the episodes before the swap are the champion's, after it the challenger's.
"""

from __future__ import annotations

from typing import Any

from rlops_demo.load import SLOTS, LoadStats

STAGE_NAMES = ("shadow", "canary", "full")  # offPolicyGate feeds off_policy_estimate instead


def _slot_view(stats: LoadStats, start: float, end: float) -> dict[str, Any]:
    view = stats.slot_returns(start, end)
    return {slot: view[slot] for slot in (*SLOTS, "mixed")}


def progressive_entry(
    state: dict[str, Any],
    training_metric: float | None,
    stats: LoadStats | None = None,
    wall_at_load_start: float | None = None,
) -> dict[str, Any]:
    """One rollout from the engine's progressive state (terminal or not: ``outcome`` says ``running``).

    ``wall_at_load_start``: ``time.time()`` when the load generator's clock read 0, to place each stage
    (stamped in wall-clock seconds by the engine) on the load's clock.
    """
    outcome = state.get("outcome")
    stages: list[dict[str, Any]] = []
    estimate = state.get("offPolicy")
    for summary in state.get("stages") or []:
        if summary.get("offPolicyEstimate") and estimate is None:
            estimate = summary["offPolicyEstimate"]
        if summary.get("name") not in STAGE_NAMES:
            continue
        stage = {
            "name": summary["name"],
            "stage": summary.get("stage"),
            "weight": summary.get("weight"),
            "episodes": dict(summary.get("episodes") or {}),
            "mean_return": dict(summary.get("meanReturn") or {}),
            "return_interval": summary.get("returnInterval") or {},
            "mixed": summary.get("mixed", 0),
            "outcome": summary.get("outcome"),
        }
        if stats is not None and wall_at_load_start is not None:
            start = float(summary["startedAt"]) - wall_at_load_start
            ended = summary.get("endedAt")
            end = float(ended) - wall_at_load_start if ended is not None else float("inf")
            stage["seconds"] = [round(start, 2), round(end, 2) if ended is not None else None]
            stage["load_generator"] = _slot_view(stats, start, end)
        stages.append(stage)
    if outcome == "promoted":
        reason = "passed " + ", ".join(s.get("stage") or s["name"] for s in stages) + "; now the champion"
        overrides = state.get("overrides") or []
        if overrides:
            reason += f" (manual override: {overrides[-1].get('action')})"
        result = "promoted"
    elif outcome in ("aborted", "rolledBack"):
        result = "aborted"
        reason = state.get("abortReason") or f"{outcome} (the engine gave no reason)"
    else:
        result = "running"
        reason = f"still in stage {state.get('stage')} when the demo stopped"
    return {
        "challenger": state.get("challengerUri"),
        "champion": state.get("championUri"),
        "challenger_training_metric": training_metric,
        "strategy": "Progressive",
        "outcome": result,
        "reason": reason,
        "final_stage": state.get("stage"),
        "stages": stages,
        "off_policy_estimate": estimate,
    }


def replace_entry(
    stats: LoadStats, champion_uri: str, challenger_uri: str, training_metric: float | None, live_at: float
) -> dict[str, Any]:
    """One ``Replace`` rollout: all traffic moved at ``live_at`` (load clock); one ``full`` stage."""
    before = [e.total_return for e in stats.episodes if e.finished <= live_at]
    after = [e.total_return for e in stats.episodes if e.started >= live_at]

    def mean(xs: list[float]) -> float | None:
        return round(sum(xs) / len(xs), 3) if xs else None

    return {
        "challenger": challenger_uri,
        "champion": champion_uri,
        "challenger_training_metric": training_metric,
        "strategy": "Replace",
        "outcome": "promoted",
        "reason": "strategy Replace: the checks passed and all traffic moved at once",
        "final_stage": "Promoted",
        "stages": [
            {
                "name": "full",
                "stage": "Full",
                "weight": 1.0,
                "episodes": {"champion": len(before), "challenger": len(after)},
                "mean_return": {"champion": mean(before), "challenger": mean(after)},
                "seconds": [round(live_at, 2), None],
            }
        ],
        "off_policy_estimate": None,
    }


def progressive_events(
    state: dict[str, Any], wall_at_load_start: float, name: str | None = None
) -> list[tuple[float, str, str]]:
    """``(t, label, kind)`` on the load's clock for the report: each stage's start, then promote or abort.

    ``name``: how the labels call the challenger (default: the last part of its URI).
    """
    events: list[tuple[float, str, str]] = []
    label = name or str(state.get("challengerUri") or "").rstrip("/").rsplit("/", 1)[-1]
    last_end: float | None = None
    for summary in state.get("stages") or []:
        start = float(summary["startedAt"]) - wall_at_load_start
        weight = summary.get("weight")
        text = f"{summary.get('stage') or summary.get('name')}"
        if summary.get("name") in ("canary", "full") and weight is not None:
            text += f" {100 * float(weight):g}%"
        events.append((start, text, "info"))
        if summary.get("endedAt") is not None:
            last_end = float(summary["endedAt"]) - wall_at_load_start
    outcome = state.get("outcome")
    if outcome and last_end is not None:
        if outcome == "promoted":
            events.append((last_end, f"promoted {label}", "promote"))
        else:
            reason = str(state.get("abortReason") or outcome).split(":", 1)[0]
            events.append((last_end, f"ABORT {label}: {reason}"[:48], "abort"))
    return events


def progressive_estimates(
    state: dict[str, Any], wall_at_load_start: float, name: str | None = None
) -> list[tuple[float, float, float, str]]:
    """``(start, end, value, label)`` on the load's clock: the off-policy estimate over its shadow window."""
    label = name or str(state.get("challengerUri") or "").rstrip("/").rsplit("/", 1)[-1]
    shadow = next((s for s in state.get("stages") or [] if s.get("name") == "shadow"), None)
    for summary in state.get("stages") or []:
        estimate = summary.get("offPolicyEstimate")
        if estimate and shadow is not None and summary.get("endedAt") is not None:
            start = float(shadow["startedAt"]) - wall_at_load_start
            end = float(summary["endedAt"]) - wall_at_load_start
            text = f"{label}: off-policy estimate {float(estimate['estimate']):.2f}"
            return [(start, end, float(estimate["estimate"]), text)]
    return []
