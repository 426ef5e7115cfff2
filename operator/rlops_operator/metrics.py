"""Prometheus metrics of the operator (served on ``RLOPS_METRICS_PORT``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from .engine import Decision
from .status import DecisionKind

PROMOTIONS = Counter("rlops_promotions_total", "Checkpoints verified live", ["rollout"])
REFUSALS = Counter("rlops_refusals_total", "Pointers or checkpoints refused", ["rollout", "reason"])
ROLLBACKS = Counter("rlops_rollbacks_total", "Rollouts rolled back or failed", ["rollout", "reason"])
POLL_ERRORS = Counter(
    "rlops_poll_errors_total", "Transient errors (storage, Kubernetes or Ray API)", ["rollout", "reason"]
)
STATUS_WRITE_ERRORS = Counter(
    "rlops_status_write_errors_total", "PolicyRollout status writes the API refused", ["rollout", "reason"]
)
DRIFTS = Counter("rlops_drift_total", "Target changes made outside the operator", ["rollout"])
CONFLICTS = Counter(
    "rlops_conflicts_total", "Holds because another PolicyRollout owns the target", ["rollout"]
)
DURATION = Histogram(
    "rlops_rollout_duration_seconds",
    "From applying a checkpoint to verifying it live",
    ["rollout"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)


PROGRESSIVE_TRANSITIONS = Counter(
    "rlops_progressive_transitions_total",
    "Progressive rollout stage transitions (Started, Advanced, Promoted, Aborted, RolledBack, ...)",
    ["rollout", "kind", "reason"],
)
CHALLENGER_WEIGHT = Gauge(
    "rlops_progressive_challenger_weight",
    "Share of episodes the challenger answers (0 in shadow, after an abort or with no rollout)",
    ["rollout"],
)


def record(rollout: str, decision: Decision) -> None:
    """Count one decision."""
    kind = decision.kind
    if decision.transition is not None:
        PROGRESSIVE_TRANSITIONS.labels(rollout, decision.transition, decision.reason).inc()
        weight = decision.weight or 0.0
        CHALLENGER_WEIGHT.labels(rollout).set(
            0.0 if decision.transition in ("Promoted", "RolledBack") else weight
        )
    if kind == DecisionKind.PROMOTED:
        PROMOTIONS.labels(rollout).inc()
        if decision.duration_s is not None:
            DURATION.labels(rollout).observe(decision.duration_s)
    elif kind in (DecisionKind.REFUSED, DecisionKind.GATE_UNEVALUABLE):
        REFUSALS.labels(rollout, decision.reason).inc()
    elif kind in (DecisionKind.ROLLED_BACK, DecisionKind.FAILED):
        ROLLBACKS.labels(rollout, decision.reason).inc()
    elif kind == DecisionKind.ERROR:
        POLL_ERRORS.labels(rollout, decision.reason).inc()
    elif kind == DecisionKind.DRIFT:
        DRIFTS.labels(rollout).inc()
    elif kind == DecisionKind.CONFLICT:
        CONFLICTS.labels(rollout).inc()
