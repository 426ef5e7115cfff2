"""The promotion engine: one small, resumable step at a time, all state in a typed status.

``Engine.step(status)`` reads the pointer (one conditional GET when nothing changed), checks a new
checkpoint, applies it to the target, verifies it went live, or rolls back to what really served
before. The step is a function of (spec, status, what it reads, the clock): the status
(:class:`~rlops_operator.status.RolloutStatus`, the PolicyRollout's ``.status``) is all the state, so
an operator that restarts resumes from it; the same pointer version is never applied twice.

A rollout in flight goes through stages (Apply, Verify, Rollback); a hold (pause, invalid spec,
another owner of the target) stops new promotions but never stops a rollout in flight from being
verified or rolled back.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rlops_core import storage

from . import checks
from .progressive import COMMAND_ANNOTATION, TERMINAL, ProgressiveState, Transition
from .progressive_driver import ProgressiveDriver
from .serveconfig import Serving
from .spec import RolloutSpec, TargetSpec
from .status import (
    HISTORY_LIMIT,
    CheckpointRecord,
    Condition,
    ConditionType,
    DecisionKind,
    DeployedRecord,
    Failure,
    HistoryEntry,
    Hold,
    HoldKind,
    LastError,
    Metric,
    Phase,
    PointerOutcome,
    PointerRecord,
    Reason,
    RolloutRecord,
    RolloutStatus,
    StageName,
    StageRecord,
    TargetRef,
    checkpoint_record,
)
from .targets import Health, Lineage, Metadata, Target, TargetError, TargetMissing, probe_metadata

__all__ = [
    "HISTORY_LIMIT",
    "PHASES",
    "Decision",
    "Engine",
    "HoldRequest",
    "StepResult",
    "hold_only",
    "same_uri",
]

PHASES = tuple(Phase)
RECHECK_BASE_S = 30.0  # a refused checkpoint is checked again after 30 s, 60 s, ... (storage may catch up)
RECHECK_MAX_S = 600.0
IDLE_BACKOFF_MAX_S = 300.0  # repeated errors while idle: poll interval doubling up to this
FLIGHT_BACKOFF_MAX_S = 10.0  # repeated errors while a rollout is in flight: 1 s doubling up to this


@dataclass(frozen=True)
class Decision:
    """Something worth telling people: becomes a Kubernetes Event, a log line and a metric."""

    kind: DecisionKind
    reason: str
    message: str
    checkpoint_uri: str | None = None
    warning: bool = False
    duration_s: float | None = None
    transition: str | None = None  # progressive: Started, Advanced, Promoted, Aborted, RolledBack, ...
    weight: float | None = None  # progressive: the challenger's share of episodes after the transition


@dataclass
class StepResult:
    """The new status (as the camelCase JSON stored in ``.status``), its model, and the decisions."""

    state: RolloutStatus
    decisions: list[Decision] = field(default_factory=list)

    @property
    def status(self) -> dict[str, Any]:
        return self.state.to_json()

    @property
    def changed(self) -> bool:
        return bool(self.decisions)


@dataclass(frozen=True)
class HoldRequest:
    """Hold polling for a reason the caller knows (invalid spec, another owner); see :class:`Hold`."""

    kind: HoldKind
    reason: str
    message: str


def now_iso(ts: float | None = None) -> str:
    """An RFC 3339 UTC timestamp."""
    return (
        datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def same_uri(a: str | None, b: str | None) -> bool:
    """Whether two storage URIs name the same place (``file://`` vs plain paths, trailing slashes)."""
    if not a or not b:
        return False
    try:
        return storage.parse_uri(a) == storage.parse_uri(b)
    except storage.StorageURIError:
        return a == b


def _finite_metric(metric: tuple[str, float] | None) -> tuple[str, float] | None:
    if metric is None:
        return None
    try:
        return metric if math.isfinite(float(metric[1])) else None
    except (TypeError, ValueError):
        return None


class Engine:
    """Drives one rollout: a spec, a target, a clock and a way to read the endpoint's /metadata.

    ``target_factory`` builds a target from a recorded :class:`TargetRef`; with it, a rollout whose
    target changed in the spec is rolled back on its old target before the new one is touched.
    """

    def __init__(
        self,
        spec: RolloutSpec,
        target: Target,
        clock: Callable[[], float] = time.time,
        metadata_probe: Callable[[str], Metadata | None] = probe_metadata,
        target_factory: Callable[[TargetSpec], Target] | None = None,
        driver: ProgressiveDriver | None = None,
    ) -> None:
        self.spec = spec
        self.target = target
        self.clock = clock
        self.metadata_probe = metadata_probe
        self.target_factory = target_factory
        # one driver per rollout for the operator's lifetime (it keeps the incremental log reader)
        self.driver = driver or ProgressiveDriver(
            lambda _n: spec.log_root, lambda _n: spec.target.application
        )
        if driver is not None:
            driver.point_at(lambda _n: spec.log_root, lambda _n: spec.target.application)

    def step(
        self,
        status: RolloutStatus | dict[str, Any] | None,
        hold: HoldRequest | None = None,
        annotations: dict[str, str] | None = None,
    ) -> StepResult:
        """Advance by one step; the returned status is the input plus what changed.

        ``annotations``: the PolicyRollout's annotations (``rlops.io/command``, ``rlops.io/paused``: the
        manual controls of a progressive rollout, docs/progressive.md).
        """
        run = _Step(self, RolloutStatus.parse(status))
        run.annotations = dict(annotations or {})
        run.run(hold)
        return StepResult(run.st, run.decisions)

    def abort_progressive(self, status: RolloutStatus | dict[str, Any], why: str) -> StepResult:
        """Abort a progressive rollout in progress now: all traffic back to the champion (one update)."""
        command = {"id": f"abort-{self.clock():.6f}", "action": "abort", "by": "rlops-rollout", "reason": why}
        return self.step(status, annotations={COMMAND_ANNOTATION: json.dumps(command)})

    def abort(self, status: RolloutStatus | dict[str, Any], reason: str, message: str) -> RolloutStatus:
        """Mark the rollout in flight as failed so that the next step rolls it back."""
        st = RolloutStatus.parse(status)
        if st.rollout is not None:
            _Step(self, st).fail_later(reason, message)
        return st


def hold_only(
    status: RolloutStatus | dict[str, Any] | None, hold: HoldRequest, clock: Callable[[], float] = time.time
) -> StepResult:
    """Record a hold when there is no usable spec at all (an invalid spec, nothing in flight)."""
    run = _Step(None, RolloutStatus.parse(status), clock())
    run.enter_hold(hold)
    return StepResult(run.st, run.decisions)


class _Step:
    """One engine step: the status being changed and the decisions taken, in order."""

    engine: Engine
    spec: RolloutSpec
    target: Target

    def __init__(self, engine: Engine | None, st: RolloutStatus, now: float | None = None) -> None:
        if engine is not None:
            self.engine, self.spec, self.target = engine, engine.spec, engine.target
        self.st = st
        self.now = engine.clock() if now is None and engine is not None else float(now or 0.0)
        self.decisions: list[Decision] = []
        self.annotations: dict[str, str] = {}
        self.failed_sources: set[str] = set()
        self.ok_sources: set[str] = set()

    # ------------------------------------------------------------------ bookkeeping
    def iso(self) -> str:
        return now_iso(self.now)

    def condition(self, ctype: ConditionType, ok: bool, reason: str, message: str) -> None:
        value = "True" if ok else "False"
        old = self.st.condition(ctype)
        since = old.last_transition_time if old and old.status == value else self.iso()
        if old and old.status == value and old.reason == reason and old.message == message[:1000]:
            return
        rest = [c for c in self.st.conditions if c.type != ctype]
        new = Condition(type=ctype, status=value, reason=reason, message=message, last_transition_time=since)
        self.st.conditions = sorted([*rest, new], key=lambda c: c.type)

    def drop_condition(self, ctype: ConditionType) -> None:
        if self.st.condition(ctype) is not None:
            self.st.conditions = [c for c in self.st.conditions if c.type != ctype]

    def decide(self, d: Decision, history: bool = True) -> None:
        self.st.message = d.message
        if history:
            entry = HistoryEntry(
                at=self.iso(),
                decision=d.kind,
                reason=d.reason,
                message=d.message,
                checkpoint_uri=d.checkpoint_uri,
            )
            self.st.history = [*self.st.history, entry][-HISTORY_LIMIT:]
        self.decisions.append(d)

    def backoff(self, count: int) -> float:
        """Extra wait before the next attempt: none after the first failure, then doubling."""
        in_flight = self.st.rollout is not None or self.progressive_running()
        base, cap = (
            (1.0, FLIGHT_BACKOFF_MAX_S) if in_flight else (self.spec.poll_interval_s, IDLE_BACKOFF_MAX_S)
        )
        return min(base * (2.0 ** min(count - 1, 30) - 1), max(cap, base))

    def error(self, source: str, reason: str, message: str) -> None:
        """A transient problem: report it once (status, one Event), count it, back off, retry."""
        self.failed_sources.add(source)
        le = self.st.last_error
        if le is not None and le.source == source and le.reason == reason:
            count = min(le.count + 1, 1_000_000)
            self.st.last_error = le.model_copy(
                update={"count": count, "retry_at_epoch": self.now + self.backoff(count)}
            )
            return
        self.st.last_error = LastError(
            source=source,
            reason=reason,
            message=message,
            at=self.iso(),
            retry_at_epoch=self.now + self.backoff(1),
        )
        self.condition(ConditionType.HEALTHY, False, reason, message)
        self.decide(Decision(DecisionKind.ERROR, reason, message, warning=True), history=False)

    def settle_errors(self) -> None:
        """After the step: a reported error whose source worked again (and nothing failed) is cleared."""
        le = self.st.last_error
        if le is None or self.failed_sources or le.source not in self.ok_sources:
            return
        self.st.last_error = None
        message = f"{le.source} works again"
        self.condition(ConditionType.HEALTHY, True, Reason.RECOVERED, message)
        self.decide(Decision(DecisionKind.RECOVERED, Reason.RECOVERED, message), history=False)

    def backing_off(self) -> bool:
        le = self.st.last_error
        return le is not None and le.retry_at_epoch is not None and self.now < le.retry_at_epoch

    def on_target(self, what: Callable[[], Any]) -> Any:
        """Call the target; anything it raises that is not a TargetError becomes one (never a crash)."""
        try:
            result = what()
        except TargetError:
            raise
        except Exception as exc:  # a target bug or an unexpected answer must not stop the rollout
            raise TargetError(Reason.TARGET_FAILED, f"{type(exc).__name__}: {exc}") from exc
        self.ok_sources.add("target")
        return result

    def read_current(self, target: Target | None = None) -> str | None:
        """What the target's config names now (None for nothing or an empty value)."""
        t = target or self.target
        current = self.on_target(t.current_checkpoint)
        if current is not None and not isinstance(current, str):
            raise TargetError(Reason.TARGET_FAILED, f"the target names {current!r}, not a checkpoint URI")
        return current.strip() or None if current else None

    def saw_deployed(self, uri: str | None) -> None:
        old = self.st.deployed
        if old is None or not (same_uri(old.checkpoint_uri, uri) or old.checkpoint_uri == uri):
            self.st.deployed = DeployedRecord(checkpoint_uri=uri, since=self.iso())

    def lineage(self, rec: CheckpointRecord | RolloutRecord, **extra: str) -> Lineage:
        return Lineage(
            checkpoint_uri=rec.checkpoint_uri,
            metric_name=rec.metric.name if rec.metric else "",
            metric_value=rec.metric.value if rec.metric else None,
            experiment=rec.experiment or "",
            trial_id=rec.trial_id or "",
            promoted_at=self.iso(),
            rollout=self.spec.name,
            extra=dict(extra),
        )

    def record_of(self, uri: str) -> CheckpointRecord:
        """A record for what the target really serves: the status's own when it names the same, else
        built from that checkpoint's manifest (metric unknown when unreadable or not finite)."""
        for known in (self.st.live, self.st.previous):
            if known is not None and same_uri(known.checkpoint_uri, uri):
                return known.model_copy(deep=True)
        return checkpoint_record(uri, _finite_metric(checks.live_metric_of(uri)), since=self.iso())

    # ------------------------------------------------------------------ the step
    def run(self, hold: HoldRequest | None) -> None:
        if hold is None and self.spec.paused:
            hold = HoldRequest(HoldKind.PAUSED, Reason.PAUSED, "rollout paused by spec.paused")
        if not self.follow_target():
            self.settle_errors()
            return
        if self.st.rollout is not None:
            if not self.backing_off():
                self.advance()
            if self.st.rollout is None and hold is not None:  # finished: now the hold applies
                self.enter_hold(hold)
            self.settle_errors()  # the next pointer read waits for the next step
            return
        if self.progressive_running():
            # a hold (pause, conflict) pauses the step's clock; abort rules and commands still apply
            if not self.spec.progressive:  # strategy changed to Replace mid-rollout: abort it, once
                started = (self.st.progressive or {}).get("startedAt")
                command = {"id": f"strategy-replace-{started}", "action": "abort", "by": "spec"}
                command["reason"] = "spec.strategy is no longer Progressive"
                self.annotations = {**self.annotations, COMMAND_ANNOTATION: json.dumps(command)}
            if not self.backing_off():
                self.progressive_step(paused=hold is not None)
            self.settle_errors()
            return
        if self.progressive_promoted() and self.annotations_or_command():
            self.progressive_step(paused=False)  # only commands are judged: undo brings the champion back
        if hold is not None:
            self.enter_hold(hold)
            self.settle_errors()
            return
        self.leave_hold()
        if not self.backing_off():
            self.poll()
        self.settle_errors()

    def enter_hold(self, hold: HoldRequest) -> None:
        current = self.st.hold
        if current is not None and current.kind == hold.kind and current.message == hold.message[:1000]:
            return
        resume = current.resume_phase if current is not None else self.st.phase
        self.st.hold = Hold(
            kind=hold.kind, reason=hold.reason, message=hold.message, since=self.iso(), resume_phase=resume
        )
        if hold.kind == HoldKind.PAUSED:
            self.st.phase = Phase.PAUSED
            self.decide(Decision(DecisionKind.PAUSED, Reason.PAUSED, hold.message))
        elif hold.kind == HoldKind.INVALID_SPEC:
            self.st.phase = Phase.FAILED
            self.condition(ConditionType.READY, False, Reason.INVALID_SPEC, hold.message)
            self.decide(Decision(DecisionKind.REFUSED, Reason.INVALID_SPEC, hold.message, warning=True))
        else:
            self.condition(ConditionType.CONFLICT, True, hold.reason, hold.message)
            self.decide(Decision(DecisionKind.CONFLICT, hold.reason, hold.message, warning=True))

    def leave_hold(self) -> None:
        held = self.st.hold
        if held is None:
            return
        self.st.hold = None
        if held.kind == HoldKind.CONFLICT:
            self.drop_condition(ConditionType.CONFLICT)
        if held.kind in (HoldKind.PAUSED, HoldKind.INVALID_SPEC) and self.st.phase in (
            Phase.PAUSED,
            Phase.FAILED,
        ):
            resume = held.resume_phase
            if resume in (None, Phase.PAUSED) or (
                held.kind == HoldKind.INVALID_SPEC and resume == Phase.FAILED
            ):
                resume = Phase.LIVE if self.st.live else Phase.IDLE
            self.st.phase = resume
        if held.kind == HoldKind.INVALID_SPEC and self.st.live is not None:
            self.condition(ConditionType.READY, True, Reason.LIVE, f"{self.st.live.checkpoint_uri} is live")
        what = {HoldKind.PAUSED: "rollout resumed", HoldKind.INVALID_SPEC: "the spec is valid again"}
        self.decide(
            Decision(DecisionKind.RESUMED, Reason.RESUMED, what.get(held.kind, "the target conflict is gone"))
        )

    # ------------------------------------------------------------------ target identity
    def follow_target(self) -> bool:
        """Handle a ``spec.target`` change: the old target's rollout is rolled back there first, then
        the status starts fresh for the new target. False while the old target cannot be reached."""
        new = self.spec.target.ref()
        old = self.st.target
        if old is None or old.key() == new.key():
            self.st.target = new
            return True
        r = self.st.rollout
        note = ""
        if r is not None:
            note = self.abandon_on(old, r)
            if note is None:
                return False
        if self.progressive_running():
            note += self.abandon_progressive_on(old)
        self.st.progressive = self.st.challenger = None
        self.st.rollout = None
        self.st.live = self.st.previous = self.st.deployed = self.st.pointer = None
        self.st.target = new
        self.st.phase = Phase.IDLE
        self.drop_condition(ConditionType.READY)
        self.condition(
            ConditionType.PROGRESSING, False, Reason.TARGET_CHANGED, f"target is now {new.describe()}"
        )
        message = f"target changed from {old.describe()} to {new.describe()}{note}; starting fresh there"
        self.decide(Decision(DecisionKind.TARGET_CHANGED, Reason.TARGET_CHANGED, message, warning=bool(r)))
        return True

    def abandon_progressive_on(self, old: TargetRef) -> str:
        """Empty the challenger slot on the old target (best effort: it may be gone)."""
        state = self.progressive_state()
        if state is None or self.engine.target_factory is None:
            return "; its progressive rollout was abandoned"
        old_target = self.engine.target_factory(TargetSpec.from_ref(old))
        try:
            apply = old_target.apply_serving  # type: ignore[attr-defined]
            champion = checkpoint_record(state.champion_uri)
            self.on_target(lambda: apply(Serving(state.champion_uri, None), self.lineage(champion)))
        except (TargetError, AttributeError) as exc:
            return f"; its progressive rollout was abandoned (emptying the challenger slot failed: {exc})"
        return f"; its progressive rollout was aborted there ({state.champion_uri} serves everything)"

    def abandon_on(self, old: TargetRef, r: RolloutRecord) -> str | None:
        """Roll a rollout in flight back on its old target. None: could not yet (retried)."""
        if self.engine.target_factory is None:
            return f"; the rollout of {r.checkpoint_uri} there was abandoned without rollback"
        old_target = self.engine.target_factory(TargetSpec.from_ref(old))
        prev = r.previous
        try:
            current = self.read_current(old_target)
            if prev is not None and same_uri(current, r.checkpoint_uri):
                self.on_target(
                    lambda: old_target.apply(
                        prev.checkpoint_uri, self.lineage(prev, **{"rolled-back-from": r.checkpoint_uri})
                    ),
                )
                return f"; rolled {old.describe()} back from {r.checkpoint_uri} to {prev.checkpoint_uri}"
        except TargetMissing:
            return f"; {old.describe()} no longer exists"
        except TargetError as exc:
            self.error(
                "target", exc.reason, f"rolling back {old.describe()} after a target change: {exc.message}"
            )
            return None
        if same_uri(current, r.checkpoint_uri):
            return f"; {r.checkpoint_uri} stays on {old.describe()} (nothing to roll back to)"
        return f"; {old.describe()} no longer served {r.checkpoint_uri}"

    # ------------------------------------------------------------------ polling
    def poll(self) -> None:
        ptr = self.st.pointer if self.st.pointer and self.st.pointer.uri == self.spec.pointer else None
        recheck = bool(
            ptr
            and ptr.outcome == PointerOutcome.REFUSED
            and ptr.checkpoint_uri
            and ptr.recheck_at_epoch is not None
            and self.now >= ptr.recheck_at_epoch
        )
        try:
            read = checks.read_pointer(self.spec.pointer, ptr.etag if ptr else None)
        except checks.Refusal as exc:
            self.ok_sources.add("storage")
            self.refuse_pointer(ptr, exc)
            return
        except checks.TransientError as exc:
            self.error("storage", exc.reason, exc.message)
            return
        except Exception as exc:  # an unexpected answer from storage is retried, never a crash
            self.error(
                "storage", Reason.CHECK_FAILED, f"reading {self.spec.pointer}: {type(exc).__name__}: {exc}"
            )
            return
        self.ok_sources.add("storage")
        if read.checkpoint_uri is None:  # unchanged since the version we hold
            if ptr is not None and ptr.checkpoint_uri and (ptr.outcome == PointerOutcome.PENDING or recheck):
                self.evaluate(ptr.checkpoint_uri, ptr.etag, ptr)
            else:
                self.watch_drift()
            return
        if (
            ptr is not None
            and ptr.etag == read.etag
            and same_uri(ptr.checkpoint_uri, read.checkpoint_uri)
            and ptr.outcome != PointerOutcome.PENDING
            and not recheck
        ):  # a store that ignores If-None-Match: same version, same content
            self.watch_drift()
            return
        self.evaluate(read.checkpoint_uri, read.etag, ptr)

    def refuse_pointer(self, ptr: PointerRecord | None, exc: checks.Refusal) -> None:
        same = ptr is not None and ptr.outcome == PointerOutcome.REFUSED and ptr.checkpoint_uri is None
        if (
            same
            and ptr is not None
            and ptr.refused_reason == exc.reason
            and ptr.refused == exc.message[:1000]
        ):
            if ptr.etag != (exc.etag or ""):
                self.st.pointer = ptr.model_copy(update={"etag": exc.etag or ""})
            return
        self.st.pointer = self.pointer_record(None, exc.etag or "", PointerOutcome.REFUSED, None, exc)
        self.condition(ConditionType.REFUSED, True, exc.reason, exc.message)
        self.decide(Decision(DecisionKind.REFUSED, exc.reason, exc.message, warning=True))

    def pointer_record(
        self,
        uri: str | None,
        etag: str,
        outcome: PointerOutcome,
        old: PointerRecord | None,
        refusal: checks.Refusal | None = None,
        refusals: int = 0,
    ) -> PointerRecord:
        """The one builder of the pointer record (the read time is kept when the version is the same;
        a refused candidate gets its re-check time from how often it was refused in a row)."""
        same_version = old is not None and old.etag == etag and old.checkpoint_uri == uri
        recheck = None
        if refusal is not None and uri is not None:
            recheck = self.now + min(RECHECK_BASE_S * 2.0 ** (max(refusals, 1) - 1), RECHECK_MAX_S)
        return PointerRecord(
            uri=self.spec.pointer,
            etag=etag,
            checkpoint_uri=uri,
            outcome=outcome,
            refused=refusal.message if refusal is not None else None,
            refused_reason=refusal.reason if refusal is not None else None,
            refusals=refusals,
            recheck_at_epoch=recheck,
            read_at=old.read_at if same_version and old is not None and old.read_at else self.iso(),
        )

    def watch_drift(self) -> None:
        """Idle: read what the target names; a change nobody made through the operator is drift."""
        if self.st.live is None and self.st.deployed is None:
            return
        try:
            current = self.read_current()
        except TargetError as exc:
            self.error("target", exc.reason, exc.message)
            return
        deployed = self.st.deployed
        if self.st.live is None and deployed is not None and same_uri(deployed.checkpoint_uri, current):
            return  # a failed candidate that stays deployed is not claimed live
        self.reconcile_live(current)

    def reconcile_live(self, current: str | None) -> None:
        self.saw_deployed(current)
        live = self.st.live
        if live is not None and same_uri(live.checkpoint_uri, current):
            return
        if current is None:
            if live is not None:
                msg = f"the target names no checkpoint any more (the status said {live.checkpoint_uri})"
                self.st.live = None
                self.st.phase = Phase.IDLE
                self.condition(ConditionType.READY, False, Reason.DRIFT, msg)
                self.decide(Decision(DecisionKind.DRIFT, Reason.DRIFT, msg, warning=True))
            return
        self.st.live = self.record_of(current)
        if live is not None:
            msg = (
                f"{self.target.describe()} serves {current}, not {live.checkpoint_uri} "
                "(changed outside the operator)"
            )
            self.condition(ConditionType.READY, True, Reason.DRIFT, msg)
            self.decide(Decision(DecisionKind.DRIFT, Reason.DRIFT, msg, current, warning=True))

    def evaluate(self, uri: str, etag: str, ptr: PointerRecord | None) -> None:
        """A pointer version names ``uri``: already live, refused, or a new rollout."""
        try:
            current = self.read_current()
        except TargetError as exc:
            self.st.pointer = self.pointer_record(uri, etag, PointerOutcome.PENDING, ptr)
            self.error("target", exc.reason, exc.message)
            return
        self.saw_deployed(current)
        if same_uri(uri, current) and (self.st.live is None or same_uri(self.st.live.checkpoint_uri, uri)):
            self.st.live = self.record_of(uri)
            self.st.pointer = self.pointer_record(uri, etag, PointerOutcome.ALREADY_LIVE, ptr)
            self.st.phase = Phase.LIVE
            self.condition(ConditionType.READY, True, Reason.LIVE, f"{uri} is live")
            self.drop_condition(ConditionType.REFUSED)
            self.decide(
                Decision(DecisionKind.ALREADY_LIVE, DecisionKind.ALREADY_LIVE, f"{uri} is already live"),
                history=False,
            )
            return
        if same_uri(uri, current):
            # The target names the candidate but the status says something else is live: a restart
            # between patch and status write, or a hand edit. Verify it; never claim it live unverified.
            self.start_rollout(uri, etag, ptr, None, applied_by_someone=True)
            return
        self.reconcile_live(current)
        self.check(uri, etag, ptr)

    def check(self, uri: str, etag: str, ptr: PointerRecord | None) -> None:
        live = self.st.live
        live_metric = (live.metric.name, live.metric.value) if live is not None and live.metric else None
        try:
            if self.spec.require_improvement and live is not None and live_metric is None:
                raise checks.Refusal(
                    Reason.LIVE_METRIC_UNKNOWN,
                    f"requireImprovement cannot be evaluated: the metric of the live checkpoint "
                    f"{live.checkpoint_uri} is unknown (no readable rlops.json or a non-finite value); "
                    "refusing; set requireImprovement: false to promote without comparing",
                    uri,
                )
            candidate = checks.check_candidate(self.spec, uri, live_metric)
            value = candidate.manifest.metric_value
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise checks.Refusal(
                    Reason.METRIC_INVALID, f"{uri} records a non-finite metric ({value!r})", uri
                )
        except checks.Refusal as exc:
            self.refuse_candidate(uri, etag, ptr, exc)
            return
        except checks.TransientError as exc:
            self.st.pointer = self.pointer_record(uri, etag, PointerOutcome.PENDING, ptr)
            self.error("storage", exc.reason, exc.message)
            return
        except Exception as exc:  # an unexpected failure while checking: retried with backoff
            self.st.pointer = self.pointer_record(uri, etag, PointerOutcome.PENDING, ptr)
            self.error("storage", Reason.CHECK_FAILED, f"checking {uri}: {type(exc).__name__}: {exc}")
            return
        self.ok_sources.add("storage")
        live = self.st.live
        if self.spec.progressive and live is not None and not same_uri(live.checkpoint_uri, uri):
            self.begin_progressive(uri, etag, ptr, candidate, live)
            return
        self.start_rollout(uri, etag, ptr, candidate)

    def refuse_candidate(self, uri: str, etag: str, ptr: PointerRecord | None, exc: checks.Refusal) -> None:
        """Refuse; say it once per (candidate, reason, message); check it again later with backoff."""
        self.ok_sources.add("storage")
        same = (
            ptr is not None
            and ptr.outcome == PointerOutcome.REFUSED
            and same_uri(ptr.checkpoint_uri, uri)
            and ptr.refused_reason == exc.reason
            and ptr.refused == exc.message[:1000]
        )
        refusals = (ptr.refusals + 1) if same and ptr is not None else 1
        record = self.pointer_record(uri, etag, PointerOutcome.REFUSED, ptr if same else None, exc, refusals)
        self.st.pointer = record
        if same:
            return
        self.condition(ConditionType.REFUSED, True, exc.reason, exc.message)
        kind = (
            DecisionKind.GATE_UNEVALUABLE
            if exc.reason == Reason.LIVE_METRIC_UNKNOWN
            else DecisionKind.REFUSED
        )
        self.decide(Decision(kind, exc.reason, exc.message, uri, warning=True))

    # ------------------------------------------------------------------ a rollout in flight
    def start_rollout(
        self,
        uri: str,
        etag: str,
        ptr: PointerRecord | None,
        candidate: checks.Candidate | None,
        applied_by_someone: bool = False,
    ) -> None:
        m = candidate.manifest if candidate is not None else None
        metric = None
        if m is not None:
            metric = Metric(name=m.metric_name, value=m.metric_value)
        elif applied_by_someone:
            known = checkpoint_record(uri, _finite_metric(checks.live_metric_of(uri)))
            metric = known.metric
        self.st.pointer = self.pointer_record(uri, etag, PointerOutcome.ACCEPTED, ptr)
        self.st.rollout = RolloutRecord(
            checkpoint_uri=uri,
            metric=metric,
            experiment=(m.experiment if m else None) or None,
            trial_id=(m.trial_id if m else None) or None,
            started_at=self.iso(),
            started_at_epoch=self.now,
            stage=StageName.APPLY,
            stages=[StageRecord(name=StageName.APPLY, started_at=self.iso())],
            previous=self.st.live.model_copy(deep=True) if applied_by_someone and self.st.live else None,
            target=self.spec.target.ref(),
            timeout_seconds=self.spec.rollout_timeout_s,
        )
        self.st.phase = Phase.PROMOTING
        self.condition(ConditionType.REFUSED, False, Reason.ACCEPTED, f"{uri} passed every check")
        self.condition(
            ConditionType.PROGRESSING, True, Reason.APPLIED, f"applying {uri} to {self.target.describe()}"
        )
        self.apply_stage(applied_by_someone)

    def advance(self) -> None:
        r = self.st.rollout
        assert r is not None
        if r.stage == StageName.APPLY:
            self.apply_stage()
        elif r.stage == StageName.VERIFY:
            self.verify_stage()
        else:
            self.rollback_stage()

    def next_stage(self, name: StageName, outcome: str, detail: str = "") -> None:
        r = self.st.rollout
        assert r is not None
        stages = list(r.stages)
        if stages and stages[-1].finished_at is None:
            stages[-1] = stages[-1].model_copy(
                update={"finished_at": self.iso(), "outcome": outcome, "detail": detail or None}
            )
        stages.append(StageRecord(name=name, started_at=self.iso()))
        self.st.rollout = r.model_copy(
            update={"stage": name, "stages": stages, "started_at_epoch": self.now, "waiting_for": None}
        )

    def apply_stage(self, applied_by_someone: bool = False) -> None:
        r = self.st.rollout
        assert r is not None
        uri = r.checkpoint_uri
        try:
            current = self.read_current()
            self.saw_deployed(current)
            previous = r.previous
            if not same_uri(current, uri):
                previous = self.record_of(current) if current else None
                self.on_target(lambda: self.target.apply(uri, self.lineage(r)))
                self.saw_deployed(uri)
        except TargetError as exc:
            self.error("target", exc.reason, exc.message)
            return
        self.st.rollout = r.model_copy(update={"previous": previous})
        self.next_stage(StageName.VERIFY, "Applied", f"{self.target.describe()} names {uri}")
        self.st.phase = Phase.VERIFYING
        self.condition(
            ConditionType.PROGRESSING, True, Reason.APPLIED, f"{uri} applied to {self.target.describe()}"
        )
        metric = f" ({r.metric.name}={r.metric.value:g})" if r.metric else ""
        how = "found on" if applied_by_someone else "applied to"
        note = ""
        if self.spec.require_improvement and previous is None:
            note = " (requireImprovement not evaluated: nothing was live to compare with)"
        if self.spec.progressive and previous is None:
            note += " (strategy Progressive: nothing was live to compare with, so it replaced)"
        self.decide(
            Decision(
                DecisionKind.APPLIED,
                Reason.APPLIED,
                f"{uri}{metric} {how} {self.target.describe()}{note}",
                uri,
            )
        )

    def verify_stage(self) -> None:
        r = self.st.rollout
        assert r is not None
        uri = r.checkpoint_uri
        timeout = r.timeout_seconds or self.spec.rollout_timeout_s
        elapsed = self.now - r.started_at_epoch
        try:
            health: Health = self.on_target(lambda: self.target.health(uri))
        except TargetError as exc:  # TargetMissing included: a brief absence is pending, not failure
            if elapsed > timeout:
                self.fail(Reason.TIMEOUT, f"not verified after {elapsed:.0f} s: {exc.message}")
            else:
                self.st.rollout = r.model_copy(update={"waiting_for": exc.message})
                self.error("target", exc.reason, exc.message)
            return
        endpoint = (r.target.endpoint_url if r.target else None) or self.spec.target.endpoint_url
        meta = self.engine.metadata_probe(endpoint) if endpoint else None
        if meta is not None and same_uri(meta.failed_uri, uri) and not same_uri(meta.checkpoint_uri, uri):
            self.fail(Reason.SWAP_FAILED, f"the endpoint could not load {uri}: {meta.error}")
        elif health.state == "failed":
            self.fail(Reason.APPLICATION_FAILED, f"{self.target.describe()}: {health.detail}")
        elif health.state == "healthy" and (meta is None or same_uri(meta.checkpoint_uri, uri)):
            self.succeed(elapsed, meta is not None, health.detail)
        elif elapsed > timeout:
            seen = f"; /metadata names {meta.checkpoint_uri}" if meta is not None else ""
            self.fail(Reason.TIMEOUT, f"not live after {elapsed:.0f} s: {health.detail}{seen}")
        else:
            detail = (
                health.detail
                if meta is None or health.state != "healthy"
                else f"/metadata names {meta.checkpoint_uri}"
            )
            if r.waiting_for != detail[:1000]:
                self.st.rollout = r.model_copy(update={"waiting_for": detail})

    def end_rollout(self) -> RolloutRecord:
        r = self.st.rollout
        assert r is not None
        self.st.rollout = None
        return r

    def succeed(self, elapsed: float, endpoint_checked: bool, detail: str) -> None:
        r = self.end_rollout()
        uri = r.checkpoint_uri
        if r.previous is not None and not same_uri(r.previous.checkpoint_uri, uri):
            self.st.previous = r.previous  # what really served when the candidate was applied
        elif self.st.live is not None and not same_uri(self.st.live.checkpoint_uri, uri):
            self.st.previous = self.st.live
        self.st.live = checkpoint_record(
            uri, r.metric, experiment=r.experiment, trial_id=r.trial_id, since=self.iso()
        )
        self.saw_deployed(uri)
        self.st.phase = Phase.LIVE
        how = "the endpoint reports it" if endpoint_checked else "the application is RUNNING and HEALTHY"
        self.condition(ConditionType.READY, True, Reason.LIVE, f"{uri} is live")
        self.condition(ConditionType.PROGRESSING, False, Reason.PROMOTED, f"{uri} verified live")
        self.condition(ConditionType.HEALTHY, True, Reason.PROMOTED, "last rollout succeeded")
        self.decide(
            Decision(
                DecisionKind.PROMOTED,
                Reason.PROMOTED,
                f"{uri} is live after {elapsed:.1f} s ({how})",
                uri,
                duration_s=elapsed,
            )
        )

    def fail_later(self, reason: str, message: str) -> None:
        r = self.st.rollout
        assert r is not None
        if r.stage == StageName.ROLLBACK:
            return
        self.st.rollout = r.model_copy(update={"failure": Failure(reason=reason, message=message[:500])})
        self.next_stage(StageName.ROLLBACK, "Failed", message)

    def fail(self, reason: str, message: str) -> None:
        self.fail_later(reason, message)
        self.rollback_stage()

    def rollback_stage(self) -> None:
        r = self.st.rollout
        assert r is not None
        failure = r.failure or Failure(reason="Failed", message="rollout failed")
        uri = r.checkpoint_uri
        prev = r.previous
        try:
            current = self.read_current()
            self.saw_deployed(current)
            if prev is not None and same_uri(current, uri):
                self.on_target(
                    lambda: self.target.apply(
                        prev.checkpoint_uri, self.lineage(prev, **{"rolled-back-from": uri})
                    )
                )
                current = prev.checkpoint_uri
                self.saw_deployed(current)
        except TargetError as exc:  # missing or unreachable: keep trying (reported once), never give up
            where = f"rolling back to {prev.checkpoint_uri}" if prev else f"reading {self.target.describe()}"
            self.error("target", exc.reason, f"{where}: {exc.message}")
            return
        self.end_rollout()
        self.condition(ConditionType.PROGRESSING, False, failure.reason, failure.message)
        self.condition(ConditionType.HEALTHY, False, failure.reason, f"{uri} failed")
        cause = f"{failure.reason}: {failure.message}"
        if prev is None and same_uri(current, uri):
            self.st.phase = Phase.FAILED
            self.st.live = None
            self.condition(ConditionType.READY, False, failure.reason, f"{uri} failed and stays deployed")
            msg = f"{uri} failed ({cause}); nothing to roll back to, it stays on {self.target.describe()}"
            self.decide(Decision(DecisionKind.FAILED, failure.reason, msg, uri, warning=True))
            return
        if not current:
            self.st.phase = Phase.FAILED
            self.st.live = None
            msg = f"{uri} failed ({cause}); {self.target.describe()} names no checkpoint now"
            self.condition(ConditionType.READY, False, failure.reason, msg)
            self.decide(Decision(DecisionKind.FAILED, failure.reason, msg, uri, warning=True))
            return
        self.st.live = (
            self.record_of(current) if prev is None or not same_uri(prev.checkpoint_uri, current) else prev
        )
        self.st.phase = Phase.ROLLED_BACK
        self.condition(ConditionType.READY, True, Reason.ROLLED_BACK, f"{current} is live")
        if prev is not None and same_uri(prev.checkpoint_uri, current):
            msg = f"rolled back to {current} because {uri} failed: {cause}"
        else:
            msg = (
                f"{uri} failed ({cause}); {self.target.describe()} now names {current} "
                "(changed outside the operator), left as is"
            )
        self.decide(Decision(DecisionKind.ROLLED_BACK, failure.reason, msg, uri, warning=True))

    # ------------------------------------------------------------------ progressive delivery
    def progressive_state(self) -> ProgressiveState | None:
        raw = self.st.progressive
        if not raw:
            return None
        try:
            return ProgressiveState.from_status(raw)
        except ValueError:
            return None

    def progressive_running(self) -> bool:
        raw = self.st.progressive
        return bool(raw) and raw.get("stage") not in TERMINAL

    def progressive_promoted(self) -> bool:
        raw = self.st.progressive
        return bool(raw) and raw.get("stage") == "Promoted"

    def annotations_or_command(self) -> bool:
        from .progressive import COMMAND_ANNOTATION as NOTE

        return bool(self.annotations.get(NOTE)) or self.spec.strategy.command is not None

    def serving_from(self, serving: dict[str, Any]) -> Serving:
        return Serving(serving["checkpoint_uri"], serving.get("challenger"), self.spec.log_root)

    def apply_serving(self, serving: Serving, rec: CheckpointRecord | RolloutRecord, **extra: str) -> bool:
        """Make the target serve ``serving`` (one update, only when it differs). False: reported, retried."""
        apply = getattr(self.target, "apply_serving", None)
        read = getattr(self.target, "current_serving", None)
        if apply is None or read is None:
            self.error(
                "target",
                Reason.TARGET_FAILED,
                f"{self.target.describe()} cannot hold a challenger slot; use strategy type Replace",
            )
            return False
        try:
            current = self.on_target(read)
            if current != serving:
                self.on_target(lambda: apply(serving, self.lineage(rec, **extra)))
        except TargetError as exc:
            self.error("target", exc.reason, f"progressive rollout: {exc.message}")
            return False
        self.saw_deployed(serving.checkpoint_uri)
        return True

    def begin_progressive(
        self,
        uri: str,
        etag: str,
        ptr: PointerRecord | None,
        candidate: checks.Candidate,
        live: CheckpointRecord,
    ) -> None:
        """A checked candidate and a live champion: start shadow (or the first canary step)."""
        m = candidate.manifest
        record = checkpoint_record(
            uri,
            Metric(name=m.metric_name, value=m.metric_value),
            experiment=m.experiment,
            trial_id=m.trial_id,
            since=self.iso(),
        )
        out = self.engine.driver.begin(self.spec.name, self.spec.strategy, live.checkpoint_uri, uri, self.now)
        if not self.apply_serving(self.serving_from(out.serving), record, role="challenger"):
            self.st.pointer = self.pointer_record(uri, etag, PointerOutcome.PENDING, ptr)
            self.engine.driver.forget(self.spec.name)
            return
        self.st.pointer = self.pointer_record(uri, etag, PointerOutcome.ACCEPTED, ptr)
        self.st.challenger = record
        self.st.progressive = out.status
        self.st.phase = Phase.PROMOTING
        self.condition(ConditionType.REFUSED, False, Reason.ACCEPTED, f"{uri} passed every check")
        self.condition(
            ConditionType.PROGRESSING,
            True,
            Reason.APPLIED,
            f"progressive rollout of {uri} against {live.checkpoint_uri} on {self.target.describe()}",
        )
        self.report_transitions(out.transitions, uri)

    def progressive_step(self, paused: bool) -> None:
        """One poll of the progressive rollout: evidence, the state machine, the target, the status."""
        assert self.st.progressive is not None
        before = self.st.progressive
        try:
            out = self.engine.driver.step(
                self.spec.name,
                self.spec.strategy,
                before,
                self.now,
                self.annotations,
                paused or self.spec.paused,
            )
        except ValueError as exc:  # a status the state machine cannot read: champion only, say so once
            self.drop_unreadable_progressive(str(exc))
            return
        log_problems = [p for p in out.problems if p.startswith("decision log:")]
        if log_problems:
            self.error("storage", Reason.DECISION_LOG_UNREADABLE, "; ".join(log_problems))
        elif out.evidence is not None:
            self.ok_sources.add("storage")
        for problem in out.problems:
            if problem in log_problems or problem in self.st.reported:
                continue
            self.st.reported = [*self.st.reported, problem][-10:]
            self.decide(
                Decision(DecisionKind.ERROR, Reason.BAD_CONTROL, problem, warning=True), history=False
            )
        state = out.state
        if state.terminal and not out.transitions:
            return  # a finished rollout: nothing to serve differently (drift is watched as usual)
        challenger = self.st.challenger or checkpoint_record(state.challenger_uri, since=self.iso())
        serving = self.serving_from(out.serving)
        known = [r for r in (challenger, self.st.live, self.st.previous) if r is not None]
        rec = next(
            (r for r in known if same_uri(r.checkpoint_uri, serving.checkpoint_uri)),
            checkpoint_record(serving.checkpoint_uri or state.champion_uri),
        )
        extra = {"challenger": state.challenger_uri} if out.serving.get("challenger") else {}
        if not self.apply_serving(serving, rec, **extra):
            return  # the new state is not stored: the same transition is judged again next time
        self.st.progressive = out.status
        self.report_transitions(out.transitions, state.challenger_uri)
        if not out.transitions:
            return
        if state.stage == "Promoted" and before.get("stage") != "Promoted":
            self.progressive_promoted_now(state, challenger)
        elif state.stage == "Aborted" and before.get("stage") != "Aborted":
            self.progressive_aborted(state)
        elif state.stage == "RolledBack" and before.get("stage") != "RolledBack":
            self.progressive_undone(state)

    def drop_unreadable_progressive(self, why: str) -> None:
        """status.progressive cannot be read (edited by hand?): the live champion takes all traffic."""
        live = self.st.live
        if live is not None and not self.apply_serving(Serving(live.checkpoint_uri, None), live):
            return
        self.st.progressive = self.st.challenger = None
        self.st.phase = Phase.ROLLED_BACK if live is not None else Phase.IDLE
        keep = f"; {live.checkpoint_uri} serves everything" if live is not None else ""
        msg = f"status.progressive unreadable, rollout abandoned{keep}: {why[:300]}"
        self.condition(ConditionType.PROGRESSING, False, Reason.ABORTED, msg)
        self.decide(Decision(DecisionKind.ROLLED_BACK, Reason.ABORTED, msg, warning=True))

    def progressive_promoted_now(self, state: ProgressiveState, challenger: CheckpointRecord) -> None:
        old = self.st.live
        if old is not None and not same_uri(old.checkpoint_uri, challenger.checkpoint_uri):
            self.st.previous = old
        self.st.live = challenger.model_copy(update={"since": self.iso()})
        self.st.phase = Phase.LIVE
        uri = challenger.checkpoint_uri
        self.condition(ConditionType.READY, True, Reason.LIVE, f"{uri} is live")
        self.condition(ConditionType.PROGRESSING, False, Reason.PROMOTED, f"{uri} promoted progressively")
        self.condition(ConditionType.HEALTHY, True, Reason.PROMOTED, "last rollout succeeded")

    def progressive_aborted(self, state: ProgressiveState) -> None:
        reason = (state.abort_reason or "Aborted").split(":", 1)[0]
        self.st.phase = Phase.ROLLED_BACK
        msg = f"{state.challenger_uri} aborted: {state.abort_reason}"
        self.condition(ConditionType.READY, True, Reason.ROLLED_BACK, f"{state.champion_uri} is live")
        self.condition(ConditionType.PROGRESSING, False, reason, msg)
        self.condition(ConditionType.HEALTHY, False, reason, msg)

    def progressive_undone(self, state: ProgressiveState) -> None:
        back = state.previous_champion_uri or state.champion_uri
        promoted = self.st.live
        restored = (
            self.st.previous if self.st.previous and same_uri(self.st.previous.checkpoint_uri, back) else None
        )
        self.st.live = (restored or self.record_of(back)).model_copy(update={"since": self.iso()})
        if promoted is not None and not same_uri(promoted.checkpoint_uri, back):
            self.st.previous = promoted
        self.st.phase = Phase.ROLLED_BACK
        self.condition(ConditionType.READY, True, Reason.ROLLED_BACK, f"{back} is live again (undo)")
        self.condition(ConditionType.PROGRESSING, False, "ManualUndo", f"undo of {state.challenger_uri}")

    def report_transitions(self, transitions: list[Transition], uri: str) -> None:
        kinds = {
            "Promoted": DecisionKind.PROMOTED,
            "Aborted": DecisionKind.ROLLED_BACK,
            "RolledBack": DecisionKind.ROLLED_BACK,
        }
        for t in transitions:
            message = (
                f"{t.from_stage} -> {t.to_stage}: {t.message}" if t.from_stage != t.to_stage else t.message
            )
            self.decide(
                Decision(
                    kinds.get(t.kind, DecisionKind.PROGRESSED),
                    t.reason,
                    message,
                    uri,
                    warning=t.warning,
                    transition=t.kind,
                    weight=t.weight,
                )
            )
