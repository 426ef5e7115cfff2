"""kopf wiring: one timer per PolicyRollout drives the promotion engine; nothing else lives here.

Each tick reads the rollout's status, runs one engine step when the poll interval has passed (or a
rollout is in flight), writes back only what changed, posts a Kubernetes Event per decision and
counts it in Prometheus. All state is in ``.status``, so a restarted operator resumes from it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from prometheus_client import start_http_server

from . import metrics
from .dashboard import DashboardTarget
from .engine import Engine
from .patching import merge_diff
from .rayservice import RayServiceTarget
from .settings import OperatorSettings
from .spec import RolloutSpec, SpecError
from .targets import Target

SETTINGS = OperatorSettings.from_env()
log = logging.getLogger("rlops_operator")


class _QuietTicks(logging.Filter):
    """Drop kopf's "Timer 'tick' succeeded." lines: one per rollout per tick is noise in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno <= logging.INFO and record.getMessage().startswith("Timer 'tick' succeeded")
        )


logging.getLogger("kopf.objects").addFilter(_QuietTicks())
GROUP, VERSION, PLURAL = "rlops.io", "v1alpha1", "policyrollouts"
ENGINE_KEYS = (
    "phase",
    "message",
    "live",
    "previous",
    "rollout",
    "pointer",
    "conditions",
    "history",
    "lastError",
    "pausedFrom",
)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    """Event posting level, peering and the Prometheus endpoint."""
    settings.posting.level = SETTINGS.posting_level
    settings.watching.server_timeout = 60
    settings.networking.request_timeout = 30
    start_http_server(SETTINGS.metrics_port)
    logger.info(
        "rlops operator: %s, peering=%s, metrics on :%d",
        "cluster-wide" if SETTINGS.clusterwide else f"namespaces {','.join(SETTINGS.namespaces)}",
        SETTINGS.peering or "off",
        SETTINGS.metrics_port,
    )


def build_target(spec: RolloutSpec) -> Target:
    """The target a spec names."""
    t = spec.target
    if t.ray_service:
        return RayServiceTarget(t.ray_service, t.namespace or "default", t.application, t.deployment)
    assert t.dashboard_url
    return DashboardTarget(t.dashboard_url, t.application, t.deployment)


# Events for these decisions carry the decision as their reason (the cause is in the message);
# refusals and errors carry their cause (PointerMissing, CheckpointInvalid, StorageUnreachable, ...).
_KIND_REASONS = {"Applied", "Promoted", "RolledBack", "Failed", "Paused", "Resumed", "Recovered"}


def _post(body: Any, kind: str, reason: str, message: str, warning: bool) -> None:
    kopf.event(body, type="Warning" if warning else "Normal", reason=reason or kind, message=message[:1000])


@kopf.timer(GROUP, VERSION, PLURAL, interval=SETTINGS.tick_s, initial_delay=0.0)
def tick(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    name: str,
    namespace: str,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """One engine step for one PolicyRollout, rate-limited to its poll interval while idle."""
    current = {k: v for k, v in dict(status).items() if k in ENGINE_KEYS}
    generation = meta.get("generation")
    try:
        rollout_spec = RolloutSpec.from_resource(dict(spec), name=f"{namespace}/{name}", namespace=namespace)
    except SpecError as exc:
        if current.get("phase") != "Failed" or current.get("message") != str(exc):
            patch.status["phase"] = "Failed"
            patch.status["message"] = f"invalid spec: {exc}"
            patch.status["observedGeneration"] = generation
            _post(body, "Refused", "InvalidSpec", f"invalid spec: {exc}", warning=True)
        return
    now = time.monotonic()
    last = memo.get("last_poll")
    in_flight = bool(current.get("rollout"))
    if not in_flight and last is not None and now - last < rollout_spec.poll_interval_s:
        return
    memo["last_poll"] = now
    target = memo.get("target")
    if target is None or memo.get("target_spec") != rollout_spec.target:
        target = build_target(rollout_spec)
        memo["target"], memo["target_spec"] = target, rollout_spec.target
    result = Engine(rollout_spec, target).step(current)
    diff = merge_diff(current, result.status)
    if status.get("observedGeneration") != generation:
        diff["observedGeneration"] = generation
    for key, value in diff.items():
        patch.status[key] = value
    for decision in result.decisions:
        metrics.record(f"{namespace}/{name}", decision)
        # A plain logger: kopf's object logger would post every line as an Event a second time.
        log.log(
            logging.WARNING if decision.warning else logging.INFO,
            "%s/%s %s: %s",
            namespace,
            name,
            decision.kind,
            decision.message,
        )
        if decision.kind != "AlreadyLive":
            reason = decision.kind if decision.kind in _KIND_REASONS else decision.reason
            _post(body, decision.kind, reason, decision.message, decision.warning)
