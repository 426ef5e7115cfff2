"""Prometheus metrics of the operator (served on ``RLOPS_METRICS_PORT``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from .engine import Decision

PROMOTIONS = Counter("rlops_promotions_total", "Checkpoints verified live", ["rollout"])
REFUSALS = Counter("rlops_refusals_total", "Pointers or checkpoints refused", ["rollout", "reason"])
ROLLBACKS = Counter("rlops_rollbacks_total", "Rollouts rolled back or failed", ["rollout", "reason"])
POLL_ERRORS = Counter(
    "rlops_poll_errors_total", "Transient errors (storage, Kubernetes or Ray API)", ["rollout", "reason"]
)
DURATION = Histogram(
    "rlops_rollout_duration_seconds",
    "From applying a checkpoint to verifying it live",
    ["rollout"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)


def record(rollout: str, decision: Decision) -> None:
    """Count one decision."""
    if decision.kind == "Promoted":
        PROMOTIONS.labels(rollout).inc()
        if decision.duration_s is not None:
            DURATION.labels(rollout).observe(decision.duration_s)
    elif decision.kind == "Refused":
        REFUSALS.labels(rollout, decision.reason).inc()
    elif decision.kind in ("RolledBack", "Failed"):
        ROLLBACKS.labels(rollout, decision.reason).inc()
    elif decision.kind == "Error":
        POLL_ERRORS.labels(rollout, decision.reason).inc()
