"""The PolicyRollout status as typed models, and the names (phases, decisions, conditions) it uses.

Every field is documented where it is declared; ``crdschema.status_schema()`` turns these models into
the CRD's ``status`` schema and a test fails when the two drift apart. The JSON is camelCase
(``model_dump(by_alias=True, exclude_none=True, mode="json")``, see :meth:`RolloutStatus.to_json`).
All floats are finite: a status that the API server would reject as invalid JSON cannot be built.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

HISTORY_LIMIT = 10
MESSAGE_LIMIT = 1000
HISTORY_MESSAGE_LIMIT = 300


class Phase(StrEnum):
    """Where a PolicyRollout stands (``status.phase``)."""

    IDLE = "Idle"  # nothing known to be live yet
    PROMOTING = "Promoting"  # a checked candidate is being applied to the target
    VERIFYING = "Verifying"  # applied; waiting for the target to report it live
    LIVE = "Live"  # the live checkpoint is the one the pointer names
    ROLLED_BACK = "RolledBack"  # the last candidate failed and the previous checkpoint was restored
    FAILED = "Failed"  # the last candidate failed with nothing to roll back to, or the spec is invalid
    PAUSED = "Paused"  # spec.paused: no new promotions


class DecisionKind(StrEnum):
    """What one engine step decided; each becomes an Event, a log line and a metric."""

    APPLIED = "Applied"
    PROMOTED = "Promoted"
    REFUSED = "Refused"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    ALREADY_LIVE = "AlreadyLive"
    ERROR = "Error"
    RECOVERED = "Recovered"
    PAUSED = "Paused"
    RESUMED = "Resumed"
    DRIFT = "Drift"
    TARGET_CHANGED = "TargetChanged"
    CONFLICT = "Conflict"
    GATE_UNEVALUABLE = "GateUnevaluable"
    PROGRESSED = "Progressed"  # a progressive stage transition (the Event's reason is the transition)


class ConditionType(StrEnum):
    """The conditions in ``status.conditions``."""

    READY = "Ready"  # a checkpoint is live on the target
    PROGRESSING = "Progressing"  # a rollout is in flight
    REFUSED = "Refused"  # the last pointer version was refused
    HEALTHY = "Healthy"  # storage and target answer, the last rollout succeeded
    CONFLICT = "Conflict"  # another PolicyRollout owns the same target


class Reason(StrEnum):
    """Condition and decision reasons the engine itself sets (refusal and error causes come from
    :mod:`rlops_operator.checks` and the targets, e.g. ``CheckpointInvalid``, ``HTTP500``)."""

    LIVE = "Live"
    APPLIED = "Applied"
    ACCEPTED = "Accepted"
    PROMOTED = "Promoted"
    RECOVERED = "Recovered"
    ROLLED_BACK = "RolledBack"
    TIMEOUT = "Timeout"
    SWAP_FAILED = "SwapFailed"
    APPLICATION_FAILED = "ApplicationFailed"
    ABORTED = "Aborted"
    NOTHING_TO_ROLL_BACK = "NothingToRollBack"
    PAUSED = "Paused"
    RESUMED = "Resumed"
    INVALID_SPEC = "InvalidSpec"
    TARGET_CONFLICT = "TargetConflict"
    OWNER = "Owner"
    DRIFT = "Drift"
    TARGET_CHANGED = "TargetChanged"
    LIVE_METRIC_UNKNOWN = "LiveMetricUnknown"
    METRIC_INVALID = "MetricInvalid"
    CHECK_FAILED = "CheckFailed"
    TARGET_FAILED = "TargetFailed"
    DECISION_LOG_UNREADABLE = "DecisionLogUnreadable"
    BAD_CONTROL = "BadControl"


class StageName(StrEnum):
    """Stages of a rollout in flight. Multi-step rollouts (shadow, canary) add stages here."""

    APPLY = "Apply"  # change the target's checkpoint (skipped when it already names it)
    VERIFY = "Verify"  # wait for the target (and /metadata) to report the candidate live
    ROLLBACK = "Rollback"  # restore the checkpoint that served before the rollout


class HoldKind(StrEnum):
    """Why polling is held (a rollout in flight still finishes: verified or rolled back)."""

    PAUSED = "Paused"
    INVALID_SPEC = "InvalidSpec"
    CONFLICT = "Conflict"


class PointerOutcome(StrEnum):
    """What became of the last pointer version read."""

    PENDING = "Pending"  # read, its checkpoint not yet judged (a transient error interrupted)
    REFUSED = "Refused"
    ACCEPTED = "Accepted"  # passed the checks; a rollout was started for it
    ALREADY_LIVE = "AlreadyLive"


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return value


def _clip(limit: int) -> AfterValidator:
    return AfterValidator(lambda text: text if len(text) <= limit else text[: limit - 1] + "…")


def _finite_tree(value: Any) -> Any:
    """A JSON tree with every non-finite float replaced by None (the API server rejects NaN/inf)."""
    if isinstance(value, dict):
        return {str(k): _finite_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_tree(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


FiniteFloat = Annotated[float, AfterValidator(_finite)]
Message = Annotated[str, _clip(MESSAGE_LIMIT)]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class StatusModel(BaseModel):
    """camelCase JSON, populated by field name or alias, unknown stored keys ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", validate_assignment=True
    )


class Metric(StatusModel):
    """A checkpoint's metric as its manifest records it."""

    name: str = Field(description="Metric name, e.g. env_runners/episode_return_mean.")
    value: FiniteFloat = Field(description="Metric value (always finite).")


class CheckpointRecord(StatusModel):
    """A checkpoint that is (or was) live on the target, and where it came from."""

    checkpoint_uri: str = Field(description="The checkpoint's URI, as the target's config names it.")
    metric: Metric | None = Field(None, description="Its manifest's metric; absent when unreadable.")
    experiment: str | None = Field(None, description="Experiment that produced it.")
    trial_id: str | None = Field(None, description="Trial that produced it.")
    since: Timestamp | None = Field(None, description="When the operator first saw it live.")


class TargetRef(StatusModel):
    """The target a status describes: a RayService (KubeRay) or a bare Ray cluster's dashboard."""

    kind: Literal["rayservice", "dashboard"] = Field(description="rayservice or dashboard.")
    namespace: str | None = Field(None, description="Namespace of the RayService.")
    ray_service: str | None = Field(None, description="Name of the RayService.")
    dashboard_url: str | None = Field(None, description="Ray dashboard URL (bare Ray).")
    application: str = Field(description="Serve application.")
    deployment: str = Field(description="Serve deployment whose user_config.checkpoint_uri changes.")
    endpoint_url: str | None = Field(None, description="Serve endpoint whose /metadata is probed.")

    def key(self) -> tuple[str, ...]:
        """What identifies the deployment this target changes (the endpoint URL does not count)."""
        if self.kind == "rayservice":
            where = (self.namespace or "default", self.ray_service or "")
        else:
            where = ("", (self.dashboard_url or "").rstrip("/").lower())
        return (self.kind, *where, self.application, self.deployment)

    def describe(self) -> str:
        where = (
            f"RayService {self.namespace}/{self.ray_service}"
            if self.kind == "rayservice"
            else f"dashboard {self.dashboard_url}"
        )
        return f"{where} app {self.application}/{self.deployment}"


class PointerRecord(StatusModel):
    """The last pointer version read and what became of it."""

    uri: str = Field(description="The pointer's URI (spec.pointer when it was read).")
    etag: str = Field("", description="Version token of the pointer object (ETag or mtime/size/inode).")
    checkpoint_uri: str | None = Field(None, description="The checkpoint this version names.")
    outcome: PointerOutcome | None = Field(None, description="Pending, Refused, Accepted or AlreadyLive.")
    refused: Message | None = Field(None, description="Why it was refused.")
    refused_reason: str | None = Field(None, description="The refusal's reason code.")
    refusals: int = Field(0, ge=0, description="How many times in a row the same candidate was refused.")
    recheck_at_epoch: FiniteFloat | None = Field(
        None, description="A refused checkpoint is checked again after this time (seconds since epoch)."
    )
    read_at: Timestamp | None = Field(None, description="When this version was read.")


class Failure(StatusModel):
    """Why a rollout failed."""

    reason: str = Field(description="Timeout, SwapFailed, ApplicationFailed, Aborted, ...")
    message: Message = Field(description="What happened.")


class StageRecord(StatusModel):
    """One stage of a rollout and its evidence."""

    name: StageName = Field(description="Apply, Verify or Rollback (more stages come with canaries).")
    started_at: Timestamp = Field(description="When the stage started.")
    finished_at: Timestamp | None = Field(None, description="When it ended.")
    outcome: str | None = Field(None, description="How it ended (Applied, Verified, Failed, ...).")
    detail: Message | None = Field(None, description="Evidence: what the target reported.")


class RolloutRecord(StatusModel):
    """The rollout in flight: everything needed to finish it (verify or roll back) after a restart,
    even when the spec has since become invalid or names another target."""

    checkpoint_uri: str = Field(description="The candidate being rolled out.")
    metric: Metric | None = Field(None, description="The candidate's manifest metric.")
    experiment: str | None = Field(None, description="Experiment that produced the candidate.")
    trial_id: str | None = Field(None, description="Trial that produced the candidate.")
    started_at: Timestamp = Field(description="When the candidate passed its checks.")
    started_at_epoch: FiniteFloat = Field(
        description="When the current stage started (epoch seconds); the verify timeout counts from here."
    )
    stage: StageName = Field(StageName.APPLY, description="The stage in progress.")
    stages: list[StageRecord] = Field(default_factory=list, description="Stages so far, with evidence.")
    previous: CheckpointRecord | None = Field(
        None, description="What the target really served when the candidate was applied (the rollback)."
    )
    target: TargetRef | None = Field(None, description="The target the candidate was applied to.")
    timeout_seconds: FiniteFloat | None = Field(None, description="rolloutTimeoutSeconds at the start.")
    waiting_for: Message | None = Field(None, description="What verification is waiting for.")
    failure: Failure | None = Field(None, description="Why the rollout is being rolled back.")

    @model_validator(mode="before")
    @classmethod
    def _legacy_stage(cls, data: Any) -> Any:
        """Statuses written before typed state used ``stage: verifying | rollback``."""
        if isinstance(data, dict) and data.get("stage") in ("verifying", "rollback"):
            data = {**data, "stage": "Verify" if data["stage"] == "verifying" else "Rollback"}
        return data


class DeployedRecord(StatusModel):
    """What the target's config names right now, as last read."""

    checkpoint_uri: str | None = Field(None, description="Absent when the target names no checkpoint.")
    since: Timestamp | None = Field(None, description="When this value was first read.")


class LastError(StatusModel):
    """A transient problem (storage, target), reported once and retried with backoff."""

    source: str = Field(description="storage or target.")
    reason: str = Field(description="StorageUnreachable, HTTP500, RayServiceMissing, ...")
    message: Message = Field(description="The first message of this problem.")
    at: Timestamp = Field(description="When it started.")
    count: int = Field(1, ge=1, description="Consecutive failures.")
    retry_at_epoch: FiniteFloat | None = Field(None, description="No retry before this time (backoff).")


class Hold(StatusModel):
    """Why polling is held: no new promotions; a rollout in flight still finishes."""

    kind: HoldKind = Field(description="Paused, InvalidSpec or Conflict.")
    reason: str = Field(description="Reason code.")
    message: Message = Field(description="What to do about it.")
    since: Timestamp = Field(description="When the hold started.")
    resume_phase: Phase | None = Field(None, description="The phase to return to when it ends.")


class Condition(StatusModel):
    """A Kubernetes-style condition."""

    type: str = Field(description="Ready, Progressing, Refused, Healthy or Conflict.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", description="A CamelCase reason code.")
    message: Message = Field("", description="Human-readable detail.")
    last_transition_time: Timestamp | None = Field(None, description="When status last changed.")


class HistoryEntry(StatusModel):
    """One decision in the bounded history."""

    at: Timestamp = Field(description="When it was decided.")
    decision: str = Field(description="Applied, Promoted, Refused, RolledBack, Failed, ...")
    reason: str = Field("", description="Its reason code.")
    message: Annotated[str, _clip(HISTORY_MESSAGE_LIMIT)] = Field("", description="Its message (clipped).")
    checkpoint_uri: str | None = Field(None, description="The checkpoint it concerns.")


class RolloutStatus(StatusModel):
    """A PolicyRollout's ``.status``: the engine's whole state (a restarted operator resumes from it)."""

    phase: Phase = Field(
        Phase.IDLE, description="Idle, Promoting, Verifying, Live, RolledBack, Failed or Paused."
    )
    message: Message | None = Field(None, description="The last decision, in words.")
    observed_generation: int | None = Field(
        None, description="metadata.generation of the spec last acted on."
    )
    target: TargetRef | None = Field(None, description="The target live/previous/deployed describe.")
    live: CheckpointRecord | None = Field(None, description="The checkpoint verified live on the target.")
    previous: CheckpointRecord | None = Field(None, description="The one live before it.")
    deployed: DeployedRecord | None = Field(None, description="What the target's config names, as last read.")
    rollout: RolloutRecord | None = Field(None, description="The rollout in flight, if any.")
    pointer: PointerRecord | None = Field(None, description="The last pointer version read.")
    hold: Hold | None = Field(None, description="Why polling is held (paused, invalid spec, conflict).")
    last_error: LastError | None = Field(None, description="A transient error, cleared when it goes away.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Progressing, Refused, Healthy, Conflict."
    )
    history: list[HistoryEntry] = Field(
        default_factory=list, max_length=HISTORY_LIMIT, description="The last decisions, oldest first."
    )
    challenger: CheckpointRecord | None = Field(
        None, description="The candidate of the progressive rollout (status.progressive), with its metric."
    )
    reported: list[Annotated[str, Field(description="One problem, as reported.")]] = Field(
        default_factory=list,
        max_length=10,
        description="Problems with manual controls already reported as an Event (each is reported once).",
    )
    progressive: Annotated[dict[str, Any], AfterValidator(_finite_tree)] | None = Field(
        None,
        description=(
            "The progressive rollout (spec.strategy.type Progressive): stage, step, weight, per-stage "
            "evidence, the off-policy estimate, the abort reason, overrides and the decision-log cursor "
            "(rlops_operator.progressive.ProgressiveState, docs/progressive.md)."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """Statuses written before typed state kept ``pausedFrom`` instead of ``hold``."""
        if isinstance(data, dict) and "pausedFrom" in data:
            data = dict(data)
            paused_from = data.pop("pausedFrom")
            if data.get("phase") == "Paused" and "hold" not in data:
                data["hold"] = {
                    "kind": "Paused",
                    "reason": "Paused",
                    "message": "rollout paused by spec.paused",
                    "since": "1970-01-01T00:00:00Z",
                    "resumePhase": paused_from,
                }
        if isinstance(data, dict) and isinstance(data.get("history"), list):
            data = {**data, "history": data["history"][-HISTORY_LIMIT:]}
        return data

    @classmethod
    def parse(cls, data: RolloutStatus | dict[str, Any] | None) -> RolloutStatus:
        """A copy of ``data`` as a model (a dict is read as the stored camelCase JSON)."""
        if isinstance(data, RolloutStatus):
            return data.model_copy(deep=True)
        return cls.model_validate(dict(data or {}))

    def to_json(self) -> dict[str, Any]:
        """The camelCase JSON the CRD stores (no nulls, every float finite)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def condition(self, ctype: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == ctype), None)


STATUS_KEYS = tuple(f.alias or name for name, f in RolloutStatus.model_fields.items())


def checkpoint_record(
    checkpoint_uri: str,
    metric: tuple[str, float] | Metric | None = None,
    *,
    experiment: str | None = None,
    trial_id: str | None = None,
    since: str | None = None,
) -> CheckpointRecord:
    """The one builder of a live/previous record; a non-finite metric is dropped (unknown), never stored."""
    if isinstance(metric, tuple):
        name, value = metric
        metric = Metric(name=str(name), value=value) if _is_finite(value) else None
    return CheckpointRecord(
        checkpoint_uri=checkpoint_uri,
        metric=metric,
        experiment=experiment or None,
        trial_id=trial_id or None,
        since=since,
    )


def _is_finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
