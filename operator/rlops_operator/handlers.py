"""kopf wiring: one timer per PolicyRollout drives the promotion engine; nothing else lives here.

Each tick runs one engine step when the poll interval has passed (or a rollout is in flight), writes
the status itself (:mod:`rlops_operator.statuswriter`: a refused write is reported and retried, the
rollout goes on from the in-memory state), posts a Kubernetes Event per decision and counts it in
Prometheus. An index over all PolicyRollouts gives each target exactly one owner
(:mod:`rlops_operator.ownership`). A restarted operator resumes from the stored status and the target.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import kopf
from prometheus_client import start_http_server
from pydantic import ValidationError

from . import metrics, ownership
from .engine import Engine, HoldRequest, StepResult, hold_only
from .patching import merge_diff
from .progressive_driver import ProgressiveDriver
from .settings import OperatorSettings
from .spec import RolloutSpec, SpecError, TargetSpec
from .status import STATUS_KEYS, DecisionKind, HoldKind, Reason, RolloutStatus
from .statuswriter import StatusWriter, backoff_s, full_patch
from .target_factory import build_target as _build_target
from .targets import Target

SETTINGS = OperatorSettings.from_env()
WRITER = StatusWriter()
log = logging.getLogger("rlops_operator")


class _QuietTicks(logging.Filter):
    """Drop kopf's "Timer 'tick' succeeded." lines: one per rollout per tick is noise in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno <= logging.INFO and record.getMessage().startswith("Timer 'tick' succeeded")
        )


logging.getLogger("kopf.objects").addFilter(_QuietTicks())
GROUP, VERSION, PLURAL = "rlops.io", "v1alpha1", "policyrollouts"
ENGINE_KEYS = STATUS_KEYS


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
    """The target a spec names (the token only for the dashboards the settings allow)."""
    return _build_target(spec, SETTINGS)


# Events for these decisions carry the decision as their reason (the cause is in the message);
# refusals and errors carry their cause (PointerMissing, CheckpointInvalid, StorageUnreachable, ...).
_KIND_REASONS = {
    DecisionKind.APPLIED,
    DecisionKind.PROMOTED,
    DecisionKind.ROLLED_BACK,
    DecisionKind.FAILED,
    DecisionKind.PAUSED,
    DecisionKind.RESUMED,
    DecisionKind.RECOVERED,
    DecisionKind.DRIFT,
    DecisionKind.TARGET_CHANGED,
    DecisionKind.GATE_UNEVALUABLE,
}


def _post(body: Any, reason: str, message: str, warning: bool) -> None:
    kopf.event(body, type="Warning" if warning else "Normal", reason=reason, message=message[:1000])


@kopf.index(GROUP, VERSION, PLURAL)
def rollout_targets(
    spec: kopf.Spec, meta: kopf.Meta, name: str, namespace: str, **_: Any
) -> dict[Any, ownership.Claim] | None:
    """Target key -> the PolicyRollouts that name it (for one owner per target)."""
    key = ownership.target_key(dict(spec), namespace)
    if key is None:
        return None
    return {key: ownership.Claim(str(meta.get("creationTimestamp") or ""), f"{namespace}/{name}")}


def _stored_state(status: dict[str, Any], rollout: str) -> RolloutStatus:
    """The stored status as a model; a status that cannot be read starts fresh (the engine then reads
    the target, so nothing is assumed)."""
    try:
        return RolloutStatus.parse({k: v for k, v in status.items() if k in STATUS_KEYS})
    except ValidationError as exc:
        log.warning("%s: stored status unreadable, starting from the target: %s", rollout, exc)
        return RolloutStatus()


def _claim_stands(claim: ownership.Claim, key: tuple[str, ...]) -> bool:
    """Whether an older claim is real right now: the index can lag behind a deletion or a spec edit,
    so the owner is read from the API (an API error keeps the claim: holding is the safe side)."""
    namespace, _, name = claim.rollout.partition("/")
    try:
        obj = WRITER.api().get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=10
        )
    except Exception as exc:
        return getattr(exc, "status", None) != 404
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    return ownership.target_key(obj.get("spec") or {}, namespace) == key


def _conflict(spec: RolloutSpec, rollout: str, index: Any) -> HoldRequest | None:
    ref = spec.target.ref()
    claims = sorted(index.get(ref.key(), [])) if index is not None else []
    owner = None
    for claim in claims:
        if claim.rollout == rollout or _claim_stands(claim, ref.key()):
            owner = claim
            break
    if owner is None or owner.rollout == rollout:
        return None
    return HoldRequest(
        HoldKind.CONFLICT, Reason.TARGET_CONFLICT, ownership.conflict_message(rollout, owner, ref.describe())
    )


def _step(
    rollout: str,
    namespace: str,
    raw_spec: dict[str, Any],
    state: RolloutStatus,
    memo: Any,
    index: Any,
    annotations: dict[str, str] | None = None,
) -> StepResult | None:
    """One engine step with the hold that applies (invalid spec, conflict, pause); None: not yet due."""
    hold: HoldRequest | None = None
    try:
        spec: RolloutSpec | None = RolloutSpec.from_resource(raw_spec, name=rollout, namespace=namespace)
    except SpecError as exc:
        hold = HoldRequest(HoldKind.INVALID_SPEC, Reason.INVALID_SPEC, f"invalid spec: {exc}")
        r = state.rollout
        spec = None
        if r is not None and r.target is not None:  # finish the rollout in flight with what it recorded
            pointer = state.pointer.uri if state.pointer else "/invalid-spec/best_checkpoint.txt"
            spec = RolloutSpec.for_unfinished_rollout(r.target, pointer, r.timeout_seconds or 300.0, rollout)
    if spec is not None and hold is None:
        hold = _conflict(spec, rollout, index)
    if spec is None:
        assert hold is not None
        held = state.hold
        if held is not None and held.kind == hold.kind and held.message == hold.message[:1000]:
            return None
        return hold_only(state, hold)
    now = time.monotonic()
    last = memo.get("last_poll")
    due = state.rollout is not None or last is None or now - last >= spec.poll_interval_s
    held = state.hold
    wanted = hold.kind if hold is not None else (HoldKind.PAUSED if spec.paused else None)
    hold_changed = (held.kind if held is not None else None) != wanted
    if not due and not hold_changed:
        return None
    memo["last_poll"] = now
    target = memo.get("target")
    if target is None or memo.get("target_spec") != spec.target:
        target = build_target(spec)
        memo["target"], memo["target_spec"] = target, spec.target

    def factory(t: TargetSpec) -> Target:
        return build_target(dataclasses.replace(spec, target=t))

    driver = memo.get("driver")
    if driver is None:  # one per rollout for the operator's lifetime: it keeps the incremental log reader
        driver = memo["driver"] = ProgressiveDriver(
            lambda _n: spec.log_root, lambda _n: spec.target.application
        )
    engine = Engine(spec, target, target_factory=factory, driver=driver)
    return engine.step(state, hold, annotations=annotations)


def _write_status(body: Any, namespace: str, name: str, memo: Any, state: RolloutStatus) -> None:
    """Store the status (or retry a write that failed, with backoff); report failures once per streak."""
    rollout = f"{namespace}/{name}"
    new = state.to_json()
    failures = int(memo.get("write_failures", 0))
    if failures and time.monotonic() < memo.get("write_retry_at", 0.0):
        return
    patch = full_patch(new, STATUS_KEYS) if failures else merge_diff(memo.get("written", {}), new)
    if not patch:
        return
    failure = WRITER.write(namespace, name, patch)
    if failure is None:
        memo["written"] = new
        if failures:
            memo["write_failures"] = 0
            log.info("%s: status written again after %d failed attempts", rollout, failures)
            _post(body, "StatusWritten", f"status stored again after {failures} failed attempts", False)
        return
    failures += 1
    memo["write_failures"] = failures
    memo["write_retry_at"] = time.monotonic() + backoff_s(failures)
    metrics.STATUS_WRITE_ERRORS.labels(rollout, failure.reason).inc()
    log.warning("%s: status write failed (%d in a row): %s", rollout, failures, failure.message)
    if failures == 1:
        _post(
            body,
            "StatusWriteFailed",
            f"{failure.message}; the rollout goes on and the write is retried with backoff",
            True,
        )


@kopf.timer(GROUP, VERSION, PLURAL, interval=SETTINGS.tick_s, initial_delay=0.0)
def tick(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    name: str,
    namespace: str,
    memo: kopf.Memo,
    rollout_targets: kopf.Index | None = None,
    **_: Any,
) -> None:
    """One engine step for one PolicyRollout, rate-limited to its poll interval while idle."""
    rollout = f"{namespace}/{name}"
    state: RolloutStatus | None = memo.get("state")
    if state is None:
        stored = dict(status)
        state = _stored_state(stored, rollout)
        memo["written"] = {k: v for k, v in stored.items() if k in STATUS_KEYS}
    try:
        notes = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        result = _step(rollout, namespace, dict(spec), state, memo, rollout_targets, notes)
    except Exception:  # a bug must not stop the timer: log it, keep the state, try again next tick
        log.exception("%s: engine step failed", rollout)
        metrics.POLL_ERRORS.labels(rollout, "EngineError").inc()
        result = None
    if result is not None:
        state = result.state
    generation = meta.get("generation")
    if isinstance(generation, int) and state.observed_generation != generation:
        state = state.model_copy(update={"observed_generation": generation})
    memo["state"] = state
    _write_status(body, namespace, name, memo, state)
    for decision in result.decisions if result is not None else []:
        metrics.record(rollout, decision)
        # A plain logger: kopf's object logger would post every line as an Event a second time.
        log.log(
            logging.WARNING if decision.warning else logging.INFO,
            "%s %s: %s",
            rollout,
            decision.kind,
            decision.message,
        )
        if decision.kind != DecisionKind.ALREADY_LIVE:
            reason = decision.kind if decision.kind in _KIND_REASONS else decision.reason
            if decision.transition is not None:  # a progressive stage transition: its cause is the reason
                reason = decision.reason
            _post(body, str(reason), decision.message, decision.warning)
