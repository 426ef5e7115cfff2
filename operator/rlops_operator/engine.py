"""The promotion engine: one small, resumable step at a time, all state in a status dict.

``Engine.step(status)`` reads the pointer (one conditional GET when nothing changed), checks a new
checkpoint, applies it to the target, verifies it went live, or rolls back to the previous one.
The status dict is exactly what a PolicyRollout's ``.status`` holds, so an operator that restarts
resumes from it; the same pointer version is never applied twice.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rlops_core import storage

from . import checks
from .spec import RolloutSpec
from .targets import Lineage, Metadata, Target, TargetError, TargetMissing, probe_metadata

HISTORY_LIMIT = 10
PHASES = ("Idle", "Promoting", "Verifying", "Live", "RolledBack", "Failed", "Paused")


@dataclass(frozen=True)
class Decision:
    """Something worth telling people: becomes a Kubernetes Event, a log line and a metric."""

    kind: str  # Promoted, Applied, Refused, RolledBack, Failed, AlreadyLive, Error, Paused, Resumed
    reason: str
    message: str
    checkpoint_uri: str | None = None
    warning: bool = False
    duration_s: float | None = None


@dataclass
class StepResult:
    """The new status and the decisions taken in this step."""

    status: dict[str, Any]
    decisions: list[Decision] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.decisions)


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


def _record(manifest_uri: str, metric: tuple[str, float] | None, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"checkpointUri": manifest_uri}
    if metric is not None:
        rec["metric"] = {"name": metric[0], "value": metric[1]}
    rec.update({k: v for k, v in extra.items() if v not in (None, "")})
    return rec


class Engine:
    """Drives one rollout: a spec, a target, a clock and a way to read the endpoint's /metadata."""

    def __init__(
        self,
        spec: RolloutSpec,
        target: Target,
        clock: Callable[[], float] = time.time,
        metadata_probe: Callable[[str], Metadata | None] = probe_metadata,
    ) -> None:
        self.spec = spec
        self.target = target
        self.clock = clock
        self.metadata_probe = metadata_probe

    # ----------------------------------------------------------------- helpers
    def _set_condition(self, st: dict[str, Any], ctype: str, ok: bool, reason: str, message: str) -> None:
        conds = [c for c in st.get("conditions") or [] if c.get("type") != ctype]
        old = next((c for c in st.get("conditions") or [] if c.get("type") == ctype), None)
        value = "True" if ok else "False"
        since = old["lastTransitionTime"] if old and old.get("status") == value else now_iso(self.clock())
        conds.append(
            {
                "type": ctype,
                "status": value,
                "reason": reason,
                "message": message[:1000],
                "lastTransitionTime": since,
            }
        )
        st["conditions"] = sorted(conds, key=lambda c: c["type"])

    def _history(self, st: dict[str, Any], d: Decision) -> None:
        entry = {
            "at": now_iso(self.clock()),
            "decision": d.kind,
            "reason": d.reason,
            "message": d.message[:300],
        }
        if d.checkpoint_uri:
            entry["checkpointUri"] = d.checkpoint_uri
        st["history"] = ([*(st.get("history") or []), entry])[-HISTORY_LIMIT:]

    def _decide(self, st: dict[str, Any], d: Decision, out: list[Decision], history: bool = True) -> None:
        st["message"] = d.message[:1000]
        if history:
            self._history(st, d)
        out.append(d)

    def _error(
        self, st: dict[str, Any], reason: str, message: str, out: list[Decision], source: str = "target"
    ) -> None:
        """A transient problem: say it once (status, one Event), then stay quiet until it changes."""
        if (st.get("lastError") or {}).get("message") == message[:1000]:
            return
        st["lastError"] = {
            "source": source,
            "reason": reason,
            "message": message[:1000],
            "at": now_iso(self.clock()),
        }
        self._set_condition(st, "Healthy", False, reason, message)
        self._decide(st, Decision("Error", reason, message, warning=True), out, history=False)

    def _recovered(self, st: dict[str, Any], what: str, out: list[Decision]) -> None:
        """Clear a transient error once the thing that failed (``storage`` or ``target``) works again."""
        err = st.get("lastError")
        if err and err.get("source") == what:
            st.pop("lastError")
            self._set_condition(st, "Healthy", True, "Recovered", f"{what} works again")
            self._decide(st, Decision("Recovered", "Recovered", f"{what} works again"), out, history=False)

    def _lineage(self, candidate: checks.Candidate) -> Lineage:
        m = candidate.manifest
        return Lineage(
            checkpoint_uri=candidate.checkpoint_uri,
            metric_name=m.metric_name,
            metric_value=m.metric_value,
            experiment=m.experiment,
            trial_id=m.trial_id,
            promoted_at=now_iso(self.clock()),
            rollout=self.spec.name,
        )

    # -------------------------------------------------------------------- step
    def step(self, status: dict[str, Any] | None) -> StepResult:
        """Advance by one step; the returned status is the input plus what changed."""
        st = copy.deepcopy(status or {})
        out: list[Decision] = []
        st.setdefault("phase", "Idle")
        if self.spec.paused:
            if st["phase"] != "Paused":
                st["pausedFrom"] = st["phase"]
                st["phase"] = "Paused"
                self._decide(st, Decision("Paused", "Paused", "rollout paused by spec.paused"), out)
            return StepResult(st, out)
        if st["phase"] == "Paused":
            st["phase"] = st.pop("pausedFrom", None) or ("Live" if st.get("live") else "Idle")
            self._decide(st, Decision("Resumed", "Resumed", "rollout resumed"), out)
        if st.get("rollout"):
            self._advance(st, out)
        else:
            self._poll(st, out)
        return StepResult(st, out)

    def _poll(self, st: dict[str, Any], out: list[Decision]) -> None:
        pointer = st.get("pointer") or {}
        if pointer.get("uri") != self.spec.pointer:  # spec.pointer changed: forget the old ETag
            pointer = {}
        try:
            read = checks.read_pointer(self.spec.pointer, pointer.get("etag"))
        except checks.Refusal as exc:
            self._recovered(st, "storage", out)
            if pointer.get("refused") == exc.message:
                return
            st["pointer"] = {
                "uri": self.spec.pointer,
                "etag": exc.etag or "",
                "refused": exc.message,
                "readAt": now_iso(self.clock()),
            }
            self._set_condition(st, "Refused", True, exc.reason, exc.message)
            self._decide(st, Decision("Refused", exc.reason, exc.message, warning=True), out)
            return
        except checks.TransientError as exc:
            self._error(st, exc.reason, exc.message, out, source="storage")
            return
        self._recovered(st, "storage", out)
        if read.checkpoint_uri is None:
            return
        uri = read.checkpoint_uri
        if not st.get("live"):
            try:
                current = self.target.current_checkpoint()
            except TargetError as exc:
                self._error(st, exc.reason, exc.message, out)
                return
            if current:
                st["live"] = _record(current, checks.live_metric_of(current), since=now_iso(self.clock()))
        live = st.get("live") or {}
        if same_uri(uri, live.get("checkpointUri")):
            st["pointer"] = {
                "uri": self.spec.pointer,
                "etag": read.etag,
                "checkpointUri": uri,
                "readAt": now_iso(self.clock()),
            }
            st["phase"] = "Live"
            self._set_condition(st, "Ready", True, "Live", f"{uri} is live")
            self._decide(
                st, Decision("AlreadyLive", "AlreadyLive", f"{uri} is already live"), out, history=False
            )
            return
        live_metric = None
        if live.get("metric"):
            live_metric = (str(live["metric"].get("name", "")), float(live["metric"]["value"]))
        try:
            candidate = checks.check_candidate(self.spec, uri, live_metric)
        except checks.Refusal as exc:
            st["pointer"] = {
                "uri": self.spec.pointer,
                "etag": read.etag,
                "checkpointUri": uri,
                "readAt": now_iso(self.clock()),
            }
            self._set_condition(st, "Refused", True, exc.reason, exc.message)
            self._decide(st, Decision("Refused", exc.reason, exc.message, uri, warning=True), out)
            return
        except checks.TransientError as exc:
            self._error(st, exc.reason, exc.message, out, source="storage")
            return
        self._apply(st, candidate, read.etag, out)

    def _apply(self, st: dict[str, Any], candidate: checks.Candidate, etag: str, out: list[Decision]) -> None:
        uri = candidate.checkpoint_uri
        lineage = self._lineage(candidate)
        try:
            current = self.target.current_checkpoint()
            if not same_uri(current, uri):  # after a restart mid-apply the target may already name it
                self.target.apply(uri, lineage)
        except TargetError as exc:
            self._error(st, exc.reason, exc.message, out)
            return
        self._recovered(st, "target", out)
        now = self.clock()
        m = candidate.manifest
        st["pointer"] = {"uri": self.spec.pointer, "etag": etag, "checkpointUri": uri, "readAt": now_iso(now)}
        st["rollout"] = {
            "checkpointUri": uri,
            "metric": {"name": m.metric_name, "value": m.metric_value},
            "experiment": m.experiment,
            "trialId": m.trial_id,
            "startedAt": now_iso(now),
            "startedAtEpoch": now,
            "stage": "verifying",
            "previous": copy.deepcopy(st.get("live")) if st.get("live") else None,
        }
        st["phase"] = "Verifying"
        self._set_condition(st, "Refused", False, "Accepted", f"{uri} passed every check")
        self._set_condition(st, "Progressing", True, "Applied", f"{uri} applied to {self.target.describe()}")
        self._decide(
            st,
            Decision(
                "Applied",
                "Applied",
                f"{uri} ({m.metric_name}={m.metric_value:g}) applied to {self.target.describe()}",
                uri,
            ),
            out,
        )

    def _advance(self, st: dict[str, Any], out: list[Decision]) -> None:
        r = st["rollout"]
        uri = r["checkpointUri"]
        if r.get("stage") == "rollback":
            self._rollback(st, out)
            return
        elapsed = self.clock() - float(r.get("startedAtEpoch", self.clock()))
        try:
            health = self.target.health(uri)
        except TargetMissing as exc:
            self._fail(st, exc.reason, exc.message, out)
            return
        except TargetError as exc:
            if elapsed > self.spec.rollout_timeout_s:
                self._fail(st, "Timeout", f"not verified after {elapsed:.0f} s: {exc.message}", out)
            else:
                self._error(st, exc.reason, exc.message, out)
            return
        self._recovered(st, "target", out)
        meta = self.metadata_probe(self.spec.target.endpoint_url) if self.spec.target.endpoint_url else None
        if meta is not None and same_uri(meta.failed_uri, uri) and not same_uri(meta.checkpoint_uri, uri):
            self._fail(st, "SwapFailed", f"the endpoint could not load {uri}: {meta.error}", out)
        elif health.state == "failed":
            self._fail(st, "ApplicationFailed", f"{self.target.describe()}: {health.detail}", out)
        elif health.state == "healthy" and (meta is None or same_uri(meta.checkpoint_uri, uri)):
            self._succeed(st, elapsed, meta is not None, out)
        elif elapsed > self.spec.rollout_timeout_s:
            seen = f"; /metadata names {meta.checkpoint_uri}" if meta is not None else ""
            self._fail(st, "Timeout", f"not live after {elapsed:.0f} s: {health.detail}{seen}", out)
        else:
            detail = (
                health.detail
                if meta is None or health.state != "healthy"
                else f"/metadata names {meta.checkpoint_uri}"
            )
            r["waitingFor"] = detail

    def _succeed(
        self, st: dict[str, Any], elapsed: float, endpoint_checked: bool, out: list[Decision]
    ) -> None:
        r = st.pop("rollout")
        uri = r["checkpointUri"]
        if st.get("live"):
            st["previous"] = st["live"]
        metric = r.get("metric") or {}
        st["live"] = _record(
            uri,
            (metric.get("name", ""), metric["value"]) if "value" in metric else None,
            experiment=r.get("experiment"),
            trialId=r.get("trialId"),
            since=now_iso(self.clock()),
        )
        st["phase"] = "Live"
        how = "the endpoint reports it" if endpoint_checked else "the application is RUNNING and HEALTHY"
        self._set_condition(st, "Ready", True, "Live", f"{uri} is live")
        self._set_condition(st, "Progressing", False, "Promoted", f"{uri} verified live")
        self._set_condition(st, "Healthy", True, "Promoted", "last rollout succeeded")
        self._decide(
            st,
            Decision(
                "Promoted",
                "Promoted",
                f"{uri} is live after {elapsed:.1f} s ({how})",
                uri,
                duration_s=elapsed,
            ),
            out,
        )

    def _fail(self, st: dict[str, Any], reason: str, message: str, out: list[Decision]) -> None:
        r = st["rollout"]
        r["stage"] = "rollback"
        r["failure"] = {"reason": reason, "message": message[:500]}
        self._rollback(st, out)

    def _rollback(self, st: dict[str, Any], out: list[Decision]) -> None:
        r = st["rollout"]
        failure = r.get("failure") or {"reason": "Failed", "message": "rollout failed"}
        uri = r["checkpointUri"]
        previous = r.get("previous") or {}
        prev_uri = previous.get("checkpointUri")
        if not prev_uri:
            st.pop("rollout")
            st["phase"] = "Failed"
            self._set_condition(st, "Progressing", False, failure["reason"], failure["message"])
            msg = f"{uri} failed ({failure['reason']}: {failure['message']}); nothing to roll back to"
            self._decide(st, Decision("Failed", failure["reason"], msg, uri, warning=True), out)
            return
        metric = previous.get("metric") or {}
        lineage = Lineage(
            checkpoint_uri=prev_uri,
            metric_name=str(metric.get("name", "")),
            metric_value=metric.get("value"),
            experiment=str(previous.get("experiment", "")),
            trial_id=str(previous.get("trialId", "")),
            promoted_at=now_iso(self.clock()),
            rollout=self.spec.name,
            extra={"rolled-back-from": uri},
        )
        try:
            current = self.target.current_checkpoint()
            if not same_uri(current, prev_uri):
                self.target.apply(prev_uri, lineage)
        except TargetMissing as exc:
            st.pop("rollout")
            st["phase"] = "Failed"
            self._decide(
                st, Decision("Failed", exc.reason, f"{uri} failed and {exc.message}", uri, warning=True), out
            )
            return
        except TargetError as exc:
            self._error(st, exc.reason, f"rolling back to {prev_uri}: {exc.message}", out)
            return
        self._recovered(st, "target", out)
        st.pop("rollout")
        st["phase"] = "RolledBack"
        self._set_condition(st, "Progressing", False, failure["reason"], failure["message"])
        self._set_condition(st, "Healthy", False, failure["reason"], f"{uri} rolled back")
        msg = f"rolled back to {prev_uri} because {uri} failed: {failure['reason']}: {failure['message']}"
        self._decide(st, Decision("RolledBack", failure["reason"], msg, uri, warning=True), out)
