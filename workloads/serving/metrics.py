"""The server's metrics, exported through ``ray.serve.metrics`` (Ray's Prometheus endpoint on each node).

The per-request counters (requests by shape, actions by value, answers by slot) are tallied as plain
integers on the request path and pushed to their Ray counters by :meth:`ServerMetrics.flush`, which the
replica calls every second: one ``inc`` per series and second instead of one per request, with the same
series names and labels. Everything else is recorded as it happens.
"""

from __future__ import annotations

from typing import Any

FLUSH_INTERVAL_S = 1.0


class ServerMetrics:
    """Requests, errors by kind, actions by value, checkpoint swaps and loads, capture outcomes."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.requests = metrics.Counter(
            "rlops_serve_requests", description="Requests by shape (single, batch).", tag_keys=("shape",)
        )
        self.errors = metrics.Counter(
            "rlops_serve_request_errors", description="Rejected requests by kind.", tag_keys=("kind",)
        )
        self.actions = metrics.Counter(
            "rlops_serve_actions", description="Served discrete actions by value.", tag_keys=("action",)
        )
        self.swaps = metrics.Counter(
            "rlops_serve_checkpoint_swaps",
            description="Checkpoint loads by outcome (loaded, failed, unchanged).",
            tag_keys=("outcome",),
        )
        self.load_seconds = metrics.Histogram(
            "rlops_serve_checkpoint_load_seconds",
            description="Time to fetch, verify and load a checkpoint.",
            boundaries=[0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
        )
        self.stale = metrics.Gauge(
            "rlops_serve_checkpoint_stale",
            description="1 while the configured checkpoint failed to load and an older one is serving.",
        )
        self.capture = metrics.Counter(
            "rlops_serve_capture_records", description="Capture records by outcome.", tag_keys=("outcome",)
        )
        # progressive delivery (issue 11): per slot, for dashboards; the decision log is the record
        self.slot_requests = metrics.Counter(
            "rlops_serve_slot_requests",
            description="Answered requests by the slot that answered (champion, challenger).",
            tag_keys=("slot",),
        )
        self.slot_errors = metrics.Counter(
            "rlops_serve_slot_errors",
            description="Server errors of a slot's policy (a failed canary answer falls back to champion).",
            tag_keys=("slot",),
        )
        self.slot_latency_ms = metrics.Histogram(
            "rlops_serve_slot_latency_ms",
            description="Time to answer one request, by the slot that answered.",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
            tag_keys=("slot",),
        )
        self.shadow_scores = metrics.Counter(
            "rlops_serve_shadow_scores",
            description="Challenger shadow scores by outcome (scored, failed).",
            tag_keys=("outcome",),
        )
        self.feedback = metrics.Counter(
            "rlops_serve_feedback",
            description="Accepted POST /feedback by whether this replica saw the episode (known, unknown).",
            tag_keys=("episode",),
        )
        self.decision_log = metrics.Counter(
            "rlops_serve_decision_log_records",
            description="Decision-log records: written, queue_full, write_failed, invalid, closed.",
            tag_keys=("outcome",),
        )
        self.challenger_weight = metrics.Gauge(
            "rlops_serve_challenger_weight",
            description="Share of episodes the challenger answers (canary); 0 in shadow mode or without one.",
            tag_keys=("mode",),
        )

        # (counter attribute, tag value) -> count not yet pushed; see flush()
        self._pending: dict[tuple[str, Any], int] = {}
        self._tallied = {"requests": "shape", "actions": "action", "slot_requests": "slot"}

    def count_request(self, shape: str) -> None:
        """One answered request of ``shape`` (single, batch); pushed by flush()."""
        key = ("requests", shape)
        self._pending[key] = self._pending.get(key, 0) + 1

    def count_slot(self, slot: str) -> None:
        """One request answered by ``slot`` (champion, challenger); pushed by flush()."""
        key = ("slot_requests", slot)
        self._pending[key] = self._pending.get(key, 0) + 1

    def count_actions(self, actions: list[Any]) -> None:
        """Served discrete (int) actions by value; pushed by flush()."""
        pending = self._pending
        for action in actions:
            if isinstance(action, int):
                key = ("actions", action)
                pending[key] = pending.get(key, 0) + 1

    def flush(self) -> None:
        """Push the tallied counts to their Ray counters (one ``inc`` per series)."""
        pending, self._pending = self._pending, {}
        for (attr, value), n in pending.items():
            getattr(self, attr).inc(n, tags={self._tallied[attr]: str(value)})


_active: list[ServerMetrics] = []


def activate_metrics(metrics: ServerMetrics) -> None:
    """Make ``metrics`` the ones module-level handlers (validation errors) report to in this replica."""
    _active[:] = [metrics]


def active_metrics() -> ServerMetrics | None:
    return _active[0] if _active else None
