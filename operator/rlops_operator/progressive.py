"""Progressive delivery as a pure state machine: shadow, off-policy gate, canary steps, promotion or abort.

``advance(spec, state, evidence, now, controls)`` returns the next state and the transitions taken. It does
no I/O: the evidence comes from the decision log (:mod:`rlops_operator.evidence`), the clock is an argument,
and applying the result to the serving target is the caller's job (:func:`serving_config` says what the
deployment's ``user_config`` must hold). The state serialises to a JSON-able dict (``state.to_status()``)
that a PolicyRollout's status holds, so an operator that restarts mid-step resumes where it was: the stage,
its start time, the time spent paused and the evidence summary are all in it.

Stages::

    Shadow ──▶ OffPolicyGate ──▶ Canary(0) ──▶ ... ──▶ Canary(k) ──▶ Full ──▶ Promoted
      │              │               │                     │           │
      └──────────────┴───────────────┴──────── Aborted ◀───┴───────────┘        Promoted ──undo──▶ RolledBack

Rules, stated once:
- Shadow: the challenger scores, the champion answers everything. Leaves when enough usable shadow episodes
  are finished; aborts (``ShadowTimeout``) when ``shadow.maxDurationSeconds`` passes first.
- OffPolicyGate: passes when the estimate is trustworthy and the lower bound of (challenger - champion) is at
  least ``-tolerance``; refuses (``OffPolicyRefused``) when the bound is lower. An untrustworthy estimate
  waits for more shadow episodes until ``shadow.maxDurationSeconds``, then aborts (``OffPolicyUntrustworthy``)
  or, with ``abort.onUntrustworthy: continue``, goes on to the canary with a warning.
- Canary(i): the challenger answers ``steps[i].weight`` of the episodes. At any time it aborts on the error
  rate, on p99 latency, or when the upper bound of (challenger - champion) is below ``-tolerance`` (worse
  with confidence). After ``holdSeconds`` and ``minEpisodes`` finished episodes per slot it moves on when
  the lower bound is at least ``-tolerance``; still inconclusive after ``analysis.maxStepSeconds``, it aborts
  (``Inconclusive``) or, with ``abort.onInconclusive: continue``, moves on with a warning.
- Full: a step of weight 1. There is no champion traffic left to compare with, so the challenger is compared
  with the champion's returns measured in the stage before (the last canary step, or shadow).
- Manual controls: ``paused`` freezes the hold clock (abort rules still apply); commands ``abort``,
  ``promote`` with ``skipAnalysis`` (recorded as a manual override) and ``undo`` (during a rollout: abort;
  after promotion: the previous champion comes back). Each command has an id and is applied once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from rlops_core.offpolicy import Interval, OffPolicyError, ReturnStats, difference_interval

Stage = Literal["Shadow", "OffPolicyGate", "Canary", "Full", "Promoted", "Aborted", "RolledBack"]
TERMINAL: tuple[str, ...] = ("Promoted", "Aborted", "RolledBack")
HISTORY_LIMIT = 20
COMMAND_MEMORY = 20


class ProgressiveSpecError(ValueError):
    """The progressive strategy in a PolicyRollout spec is invalid; the message names the field."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=True)


class ShadowSpec(_Spec):
    enabled: bool = True
    min_episodes: int = Field(200, ge=1, description="Finished shadow episodes before the gate is judged.")
    max_duration_seconds: float = Field(1800.0, gt=0, description="Abort when shadow lasts longer than this.")


class OffPolicyGateSpec(_Spec):
    enabled: bool = True
    method: Literal["PDWIS", "DR"] = "PDWIS"
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    tolerance: float = Field(0.0, ge=0, description="Allowed shortfall of the lower bound, in return units.")
    relative_tolerance: float = Field(
        0.0, ge=0, le=1, description="Allowed shortfall as a share of |champion|."
    )
    min_episodes: int = Field(200, ge=10, description="Usable shadow episodes the estimate needs.")
    min_ess: float = Field(50.0, ge=1, description="Effective sample size the estimate needs.")
    max_weight: float | None = Field(None, gt=1, description="Any episode weight above this: untrustworthy.")
    max_weight_share: float = Field(0.2, gt=0, le=1, description="One episode's share of all weight allowed.")
    gamma: float = Field(1.0, gt=0, le=1)
    bootstrap_samples: int = Field(2000, ge=100, le=100_000)
    seed: int = 0


class StepSpec(_Spec):
    weight: float = Field(..., gt=0, le=1, allow_inf_nan=False)
    hold_seconds: float = Field(60.0, ge=0)
    min_episodes: int = Field(50, ge=0, description="Finished episodes per slot in this step.")


class AnalysisSpec(_Spec):
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    tolerance: float = Field(
        0.0, ge=0, description="Allowed return shortfall of the challenger (return units)."
    )
    relative_tolerance: float = Field(0.0, ge=0, le=1)
    min_episodes: int = Field(20, ge=2, description="Episodes per slot before the return comparison counts.")
    max_error_rate: float = Field(0.01, ge=0, le=1)
    min_requests: int = Field(
        50, ge=1, description="Challenger requests before error rate and latency count."
    )
    max_p99_latency_ms: float | None = Field(None, gt=0)
    max_step_seconds: float = Field(1800.0, gt=0, description="An inconclusive step ends here (abort rules).")


class AbortSpec(_Spec):
    on_regression: bool = True
    on_error_rate: bool = True
    on_latency: bool = True
    on_inconclusive: Literal["abort", "continue"] = "abort"
    on_untrustworthy: Literal["abort", "continue"] = "abort"


def _default_steps() -> list[StepSpec]:
    return [StepSpec(weight=0.1), StepSpec(weight=0.5), StepSpec(weight=1.0)]


class Command(_Spec):
    """A one-shot manual command (from the CLI, an annotation or the spec); applied once per ``id``."""

    id: str = Field(..., min_length=1, max_length=128, description="Unique per command: applied once.")
    action: Literal["abort", "promote", "undo"]
    skip_analysis: bool = Field(False, description="promote only: skip the analysis (a recorded override).")
    by: str = Field("", max_length=256)
    reason: str = Field("", max_length=1024)


class ProgressiveSpec(_Spec):
    """``spec.strategy`` of a PolicyRollout (camelCase keys). ``Replace`` is today's all-at-once swap."""

    type: Literal["Replace", "Progressive"] = "Replace"
    shadow: ShadowSpec = Field(default_factory=ShadowSpec)
    off_policy_gate: OffPolicyGateSpec = Field(default_factory=OffPolicyGateSpec)
    steps: list[StepSpec] = Field(default_factory=_default_steps, min_length=1, max_length=20)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    abort: AbortSpec = Field(default_factory=AbortSpec)
    settle_seconds: float = Field(30.0, ge=0, description="Wait after 'done' for other replicas' records.")
    paused: bool = Field(False, description="Hold the current step (abort rules still apply).")
    command: Command | None = Field(None, description="A one-shot command: abort, promote, undo.")

    @model_validator(mode="after")
    def _consistent(self) -> ProgressiveSpec:
        weights = [s.weight for s in self.steps]
        if any(b <= a for a, b in itertools.pairwise(weights)):
            raise ValueError(f"steps: weights must increase strictly, got {weights}")
        if self.off_policy_gate.enabled and not self.shadow.enabled:
            raise ValueError("offPolicyGate needs shadow enabled (the estimate is made from shadow logs)")
        return self

    @property
    def progressive(self) -> bool:
        return self.type == "Progressive"

    @property
    def shadow_episodes_needed(self) -> int:
        gate = self.off_policy_gate.min_episodes if self.off_policy_gate.enabled else 0
        return max(self.shadow.min_episodes, gate)

    @classmethod
    def from_resource(cls, strategy: Any) -> ProgressiveSpec:
        """Validate ``spec.strategy`` (None: Replace); errors name the field and say what is allowed."""
        if strategy is None:
            return cls()
        try:
            return cls.model_validate(strategy)
        except ValidationError as exc:
            problems = "; ".join(
                f"strategy.{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
            )
            raise ProgressiveSpecError(problems) from exc


def crd_schema() -> dict[str, Any]:
    """``spec.strategy``'s structural OpenAPI v3 schema for the PolicyRollout CRD, generated from the models.

    Inlined (no ``$ref``), ``anyOf [X, null]`` as ``nullable``, exclusive bounds in OpenAPI 3.0 form, no
    ``additionalProperties`` (Kubernetes prunes unknown fields instead) and no ``null`` defaults. Print it
    with ``python -m rlops_operator.progressive``.
    """
    raw = ProgressiveSpec.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})

    def conv(node: Any) -> Any:
        if isinstance(node, list):
            return [conv(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            return conv({**target, **{k: v for k, v in node.items() if k != "$ref"}})
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            if len(options) == 1:
                out = conv({**options[0], **{k: v for k, v in node.items() if k != "anyOf"}})
                if len(options) < len(node["anyOf"]):
                    out["nullable"] = True
                return out
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("title", "additionalProperties") or (key == "default" and value is None):
                continue
            if key in ("exclusiveMinimum", "exclusiveMaximum"):
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
            elif key == "const":
                out["enum"] = [value]
            elif key == "properties":
                out[key] = {name: conv(sub) for name, sub in value.items()}
            else:
                out[key] = conv(value)
        return out

    schema = conv(raw)
    schema["description"] = "Progressive delivery (docs/progressive.md). Absent or type Replace: all at once."
    return schema


# ------------------------------------------------------------------------------------------------ evidence
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


class SlotEvidence(_Model):
    """One slot's evidence in the current stage: finished episodes' returns, requests, errors, latency."""

    episodes: int = Field(0, ge=0)
    mean: float = 0.0
    m2: float = Field(0.0, ge=0)
    requests: int = Field(0, ge=0)
    errors: int = Field(0, ge=0)
    p99_latency_ms: float | None = None

    @property
    def stats(self) -> ReturnStats:
        return ReturnStats(self.episodes, self.mean, self.m2)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


class OffPolicyEvidence(_Model):
    """An off-policy estimate as the gate needs it (from ``rlops_core.offpolicy.Estimate.to_dict()``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    method: str
    estimate: float
    interval: list[float]
    champion_mean: float
    difference: float
    difference_interval: list[float]
    episodes: int
    ess: float
    trustworthy: bool
    reasons: list[str] = Field(default_factory=list)


class Evidence(_Model):
    """What the decision log says about the current stage (cumulative since the stage began)."""

    stage_key: str
    champion: SlotEvidence = Field(default_factory=SlotEvidence)
    challenger: SlotEvidence = Field(default_factory=SlotEvidence)
    mixed: int = 0
    partial: int = Field(0, description="Episodes whose beginning was not read (not credited).")
    shadow_episodes: int = Field(0, description="Finished episodes usable for the off-policy estimate.")
    log_counters: dict[str, int] = Field(default_factory=dict, description="Orphan, late, abandoned, bad.")
    off_policy: OffPolicyEvidence | None = None
    read_errors: list[str] = Field(default_factory=list)
    cursor: dict[str, Any] | None = None


# ------------------------------------------------------------------------------------------------- state
class StageSummary(_Model):
    """One stage as the status and the demo summary show it."""

    name: str  # shadow, offPolicyGate, canary, full
    stage: str  # display name: Shadow, OffPolicyGate, Canary(1), Full
    weight: float
    started_at: float
    ended_at: float | None = None
    outcome: str | None = None  # passed, aborted, promoted, overridden, skipped
    episodes: dict[str, int] = Field(default_factory=lambda: {"champion": 0, "challenger": 0})
    mean_return: dict[str, float | None] = Field(
        default_factory=lambda: {"champion": None, "challenger": None}
    )
    return_interval: dict[str, list[float] | None] = Field(default_factory=dict)
    mixed: int = 0
    usable_episodes: int = Field(0, description="Shadow episodes usable for the off-policy estimate.")
    error_rate: dict[str, float | None] = Field(default_factory=dict)
    p99_latency_ms: dict[str, float | None] = Field(default_factory=dict)
    off_policy_estimate: OffPolicyEvidence | None = None


class Override(_Model):
    action: str
    at: float
    stage: str
    by: str = ""
    reason: str = ""


class ProgressiveState(_Model):
    """Everything a progressive rollout needs to resume; ``to_status()`` is the status field's content."""

    stage: Stage
    step: int | None = None
    weight: float = 0.0
    mode: Literal["shadow", "canary"] | None = "shadow"
    champion_uri: str
    challenger_uri: str
    previous_champion_uri: str | None = None
    started_at: float
    stage_started_at: float
    paused: bool = False
    paused_at: float | None = None
    paused_seconds: float = Field(0.0, description="Time paused in the current stage (not counted as hold).")
    shadow_started_at: float | None = None
    champion_stats: list[float] | None = Field(None, description="[n, mean, m2] of the champion, this stage.")
    champion_baseline: list[float] | None = Field(
        None, description="[n, mean, m2] of the last canary champion."
    )
    log_cursor: dict[str, Any] | None = Field(None, description="The decision-log reader's latest cursor.")
    evidence: StageSummary | None = None
    stages: list[StageSummary] = Field(default_factory=list)
    off_policy: OffPolicyEvidence | None = None
    abort_reason: str | None = None
    outcome: Literal["promoted", "aborted", "rolledBack"] | None = None
    overrides: list[Override] = Field(default_factory=list)
    handled_commands: list[str] = Field(default_factory=list)
    transitions: int = 0

    @property
    def stage_name(self) -> str:
        return f"Canary({self.step})" if self.stage == "Canary" else self.stage

    @property
    def stage_key(self) -> str:
        """Which logged decisions belong to this stage: same challenger, same mode, same weight."""
        if self.mode is None:
            return "none"
        return stage_key(self.mode, self.weight, self.challenger_uri)

    @property
    def terminal(self) -> bool:
        return self.stage in TERMINAL

    def to_status(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_status(cls, data: dict[str, Any]) -> ProgressiveState:
        return cls.model_validate(data)


def stage_key(mode: str, weight: float, challenger_uri: str | None) -> str:
    """The key the evidence collector files a decision under (also computed from each logged decision)."""
    return f"{mode}|{0.0 if mode == 'shadow' else round(float(weight), 6):g}|{challenger_uri or ''}"


@dataclass(frozen=True)
class Transition:
    """Something worth an Event, a metric and a history line."""

    kind: str  # Started, Advanced, Promoted, Aborted, RolledBack, Paused, Resumed, Override, CommandRefused
    reason: str
    message: str
    from_stage: str
    to_stage: str
    weight: float
    warning: bool = False


class Controls(_Model):
    paused: bool = False
    commands: list[Command] = Field(default_factory=list)


COMMAND_ANNOTATION = "rlops.io/command"
PAUSED_ANNOTATION = "rlops.io/paused"


def controls_from(
    spec: ProgressiveSpec, annotations: dict[str, str] | None, paused: bool = False
) -> tuple[Controls, list[str]]:
    """Manual controls from the spec (``strategy.paused``, ``strategy.command``) and from annotations.

    ``rlops.io/paused: "true"`` pauses; ``rlops.io/command`` holds a JSON command, e.g.
    ``{"id": "2026-11-22T03:00:00Z", "action": "promote", "skipAnalysis": true, "by": "alice"}``. A bad
    annotation is reported (second value) and ignored, never fatal. ``paused`` adds the rollout's own
    ``spec.paused``.
    """
    import json

    problems: list[str] = []
    notes = annotations or {}
    commands = [spec.command] if spec.command is not None else []
    raw = notes.get(COMMAND_ANNOTATION)
    if raw:
        try:
            commands.append(Command.model_validate(json.loads(raw)))
        except (ValueError, ValidationError) as exc:
            problems.append(
                f"annotation {COMMAND_ANNOTATION} ignored: {exc}; expected JSON like "
                '{"id": "<unique>", "action": "abort|promote|undo", "skipAnalysis": false}'
            )
    flag = str(notes.get(PAUSED_ANNOTATION, "")).strip().lower()
    if flag not in ("", "true", "false"):
        problems.append(f'annotation {PAUSED_ANNOTATION} must be "true" or "false", got {flag!r}')
    return Controls(paused=paused or spec.paused or flag == "true", commands=commands), problems


# -------------------------------------------------------------------------------------------- transitions
def start(
    spec: ProgressiveSpec, champion_uri: str, challenger_uri: str, now: float
) -> tuple[ProgressiveState, list[Transition]]:
    """A new rollout of ``challenger_uri`` against the live ``champion_uri``."""
    if not spec.progressive:
        raise ProgressiveSpecError("strategy.type is Replace: there is no progressive rollout to start")
    st = ProgressiveState(
        stage="Shadow",
        champion_uri=champion_uri,
        challenger_uri=challenger_uri,
        started_at=now,
        stage_started_at=now,
    )
    out: list[Transition] = []
    if spec.shadow.enabled:
        st.shadow_started_at = now
        st.evidence = _summary(st)
        st.stages = [st.evidence]
        _note(st, out, "Started", "ShadowStarted", f"shadow: {challenger_uri} scores next to {champion_uri}")
    else:
        _enter_step(spec, st, 0, now, out, "Started", "CanaryStarted", "shadow disabled: canary starts")
    return st, out


def advance(
    spec: ProgressiveSpec,
    state: ProgressiveState,
    evidence: Evidence | None,
    now: float,
    controls: Controls | None = None,
) -> tuple[ProgressiveState, list[Transition]]:
    """One step of the state machine. Pure: the same inputs give the same outputs."""
    st = state.model_copy(deep=True)
    controls = controls or Controls()
    out: list[Transition] = []
    ev = evidence if evidence is not None and evidence.stage_key == st.stage_key else None
    if evidence is not None and evidence.cursor is not None:
        st.log_cursor = evidence.cursor
    for cmd in controls.commands:
        if cmd.id in st.handled_commands:
            continue
        st.handled_commands = [*st.handled_commands, cmd.id][-COMMAND_MEMORY:]
        _command(st, cmd, now, out)
    if st.terminal:
        return st, out
    _pause(st, controls.paused, now, out)
    if ev is not None:
        st.evidence = _summary(st, ev)
        st.stages = [*st.stages[:-1], st.evidence] if st.stages else [st.evidence]
        if st.stage != "Full":  # shadow and canary champions: the baseline a later Full step compares with
            c = ev.champion
            st.champion_stats = [float(c.episodes), c.mean, c.m2]
    if st.stage in ("Shadow", "OffPolicyGate"):
        _shadow(spec, st, ev, now, out)
    else:
        _canary(spec, st, ev, now, out)
    return st, out


def serving_config(state: ProgressiveState) -> dict[str, Any]:
    """What the deployment's ``user_config`` must hold now: the champion, and the challenger slot or None."""
    if state.stage == "Promoted":
        return {"checkpoint_uri": state.challenger_uri, "challenger": None}
    if state.stage == "RolledBack":
        return {"checkpoint_uri": state.previous_champion_uri or state.champion_uri, "challenger": None}
    if state.stage == "Aborted" or state.mode is None:
        return {"checkpoint_uri": state.champion_uri, "challenger": None}
    return {
        "checkpoint_uri": state.champion_uri,
        "challenger": {"checkpoint_uri": state.challenger_uri, "mode": state.mode, "weight": state.weight},
    }


# ----------------------------------------------------------------------------------------------- internals
def _note(
    st: ProgressiveState,
    out: list[Transition],
    kind: str,
    reason: str,
    message: str,
    *,
    from_stage: str | None = None,
    warning: bool = False,
) -> None:
    st.transitions += 1
    out.append(
        Transition(kind, reason, message, from_stage or st.stage_name, st.stage_name, st.weight, warning)
    )


def _elapsed(st: ProgressiveState, now: float) -> float:
    paused_now = now - st.paused_at if st.paused and st.paused_at is not None else 0.0
    return max(0.0, now - st.stage_started_at - st.paused_seconds - paused_now)


def _close_stage(st: ProgressiveState, now: float, outcome: str) -> None:
    if st.stages and st.stages[-1].ended_at is None:
        last = st.stages[-1].model_copy(update={"ended_at": now, "outcome": outcome})
        st.stages = [*st.stages[:-1], last]
        st.evidence = last


def _open_stage(st: ProgressiveState, now: float) -> None:
    st.stage_started_at = now
    st.paused_seconds = 0.0
    st.paused_at = now if st.paused else None
    st.evidence = _summary(st)
    st.stages = [*st.stages, st.evidence][-HISTORY_LIMIT:]


def _enter_step(
    spec: ProgressiveSpec,
    st: ProgressiveState,
    i: int,
    now: float,
    out: list[Transition],
    kind: str,
    reason: str,
    message: str,
    warning: bool = False,
) -> None:
    if i >= len(spec.steps):
        _promote(st, now, out, "AnalysisPassed", message)
        return
    before = st.stage_name
    if st.stage != "Full" and st.champion_stats and st.champion_stats[0] > 0:
        st.champion_baseline = list(st.champion_stats)  # the champion's returns in the stage now ending
    st.champion_stats = None
    _close_stage(st, now, "passed" if not warning else "skipped")
    weight = spec.steps[i].weight
    st.stage, st.step, st.weight, st.mode = (
        ("Full", i, 1.0, "canary") if weight >= 1.0 else ("Canary", i, weight, "canary")
    )
    _open_stage(st, now)
    _note(
        st,
        out,
        kind,
        reason,
        f"{message}; challenger answers {weight:.0%} of episodes",
        from_stage=before,
        warning=warning,
    )


def _promote(st: ProgressiveState, now: float, out: list[Transition], reason: str, message: str) -> None:
    before = st.stage_name
    _close_stage(st, now, "overridden" if reason == "ManualPromotion" else "passed")
    st.previous_champion_uri = st.champion_uri
    st.stage, st.mode, st.weight, st.outcome, st.paused = "Promoted", None, 1.0, "promoted", False
    _note(
        st, out, "Promoted", reason, f"{st.challenger_uri} is the champion now ({message})", from_stage=before
    )


def _abort(st: ProgressiveState, now: float, out: list[Transition], reason: str, message: str) -> None:
    before = st.stage_name
    _close_stage(st, now, "aborted")
    st.stage, st.mode, st.weight, st.outcome, st.paused = "Aborted", None, 0.0, "aborted", False
    st.abort_reason = f"{reason}: {message}"
    _note(
        st,
        out,
        "Aborted",
        reason,
        f"all traffic back to {st.champion_uri}: {message}",
        from_stage=before,
        warning=True,
    )


def _command(st: ProgressiveState, cmd: Command, now: float, out: list[Transition]) -> None:
    who = f" by {cmd.by}" if cmd.by else ""
    why = f": {cmd.reason}" if cmd.reason else ""
    if cmd.action == "undo" and st.stage == "Promoted":
        st.overrides = [
            *st.overrides,
            Override(action="undo", at=now, stage=st.stage_name, by=cmd.by, reason=cmd.reason),
        ]
        before = st.stage_name
        st.stage, st.outcome = "RolledBack", "rolledBack"
        _note(
            st,
            out,
            "RolledBack",
            "ManualUndo",
            f"{st.previous_champion_uri} is the champion again{who}{why}",
            from_stage=before,
            warning=True,
        )
        return
    if st.terminal:
        _note(
            st,
            out,
            "CommandRefused",
            "RolloutFinished",
            f"{cmd.action} ignored: the rollout already ended ({st.stage_name})",
            warning=True,
        )
        return
    if cmd.action in ("abort", "undo"):
        st.overrides = [
            *st.overrides,
            Override(action=cmd.action, at=now, stage=st.stage_name, by=cmd.by, reason=cmd.reason),
        ]
        _abort(st, now, out, "ManualAbort" if cmd.action == "abort" else "ManualUndo", f"requested{who}{why}")
        return
    if not cmd.skip_analysis:
        _note(
            st,
            out,
            "CommandRefused",
            "AnalysisRunning",
            "promote refused: the analysis is still running; promote with skipAnalysis to override it "
            "(recorded as a manual override)",
            warning=True,
        )
        return
    st.overrides = [
        *st.overrides,
        Override(action="promote --skip-analysis", at=now, stage=st.stage_name, by=cmd.by, reason=cmd.reason),
    ]
    _note(
        st, out, "Override", "ManualPromotion", f"analysis skipped at {st.stage_name}{who}{why}", warning=True
    )
    _promote(st, now, out, "ManualPromotion", f"manual override at {st.stage_name}{who}")


def _pause(st: ProgressiveState, paused: bool, now: float, out: list[Transition]) -> None:
    if paused and not st.paused:
        st.paused, st.paused_at = True, now
        _note(
            st,
            out,
            "Paused",
            "Paused",
            f"{st.stage_name} paused: the hold clock stops, abort rules still apply",
        )
    elif not paused and st.paused:
        st.paused_seconds += max(0.0, now - (st.paused_at if st.paused_at is not None else now))
        st.paused, st.paused_at = False, None
        _note(st, out, "Resumed", "Resumed", f"{st.stage_name} resumed")


def _allowed(tolerance: float, relative: float, champion_mean: float) -> float:
    return max(tolerance, relative * abs(champion_mean))


def _shadow(
    spec: ProgressiveSpec, st: ProgressiveState, ev: Evidence | None, now: float, out: list[Transition]
) -> None:
    gate = spec.off_policy_gate
    timed_out = _elapsed(st, now) >= spec.shadow.max_duration_seconds  # the gate keeps shadow's clock
    have = ev.shadow_episodes if ev is not None else (st.evidence.usable_episodes if st.evidence else 0)
    if st.stage == "Shadow":
        if have < spec.shadow_episodes_needed:
            if timed_out:
                _abort(
                    st,
                    now,
                    out,
                    "ShadowTimeout",
                    f"only {have} of {spec.shadow_episodes_needed} shadow episodes after "
                    f"{spec.shadow.max_duration_seconds:g} s",
                )
            return
        if st.paused:
            return
        if not gate.enabled:
            _enter_step(spec, st, 0, now, out, "Advanced", "ShadowPassed", f"{have} shadow episodes")
            return
        before = st.stage_name
        st.stage = "OffPolicyGate"  # same serving config and stage key: shadow keeps running
        _note(
            st,
            out,
            "Advanced",
            "ShadowComplete",
            f"{have} shadow episodes: judging the off-policy estimate",
            from_stage=before,
        )
    ope = ev.off_policy if ev is not None else None
    if ope is None:
        if timed_out:
            _abort(
                st, now, out, "OffPolicyUntrustworthy", "no off-policy estimate before the shadow deadline"
            )
        return
    st.off_policy = ope
    if not ope.trustworthy:
        if not timed_out:
            return  # more shadow episodes can raise the effective sample size
        why = "; ".join(ope.reasons) or "untrustworthy"
        if spec.abort.on_untrustworthy == "abort":
            _abort(st, now, out, "OffPolicyUntrustworthy", why)
        elif not st.paused:
            _enter_step(
                spec,
                st,
                0,
                now,
                out,
                "Advanced",
                "OffPolicyGateSkipped",
                f"off-policy estimate untrustworthy ({why}); continuing as configured",
                warning=True,
            )
        return
    allowed = _allowed(gate.tolerance, gate.relative_tolerance, ope.champion_mean)
    low = ope.difference_interval[0]
    numbers = (
        f"{ope.method} estimate {ope.estimate:.4g} vs champion {ope.champion_mean:.4g}; "
        f"difference lower bound {low:.4g} ({gate.confidence:.0%}), tolerance {allowed:.4g}, "
        f"ESS {ope.ess:.0f} of {ope.episodes}"
    )
    if low < -allowed:
        _abort(st, now, out, "OffPolicyRefused", numbers)
    elif not st.paused:
        _enter_step(spec, st, 0, now, out, "Advanced", "OffPolicyGatePassed", numbers)


def _canary(
    spec: ProgressiveSpec, st: ProgressiveState, ev: Evidence | None, now: float, out: list[Transition]
) -> None:
    a, rules = spec.analysis, spec.abort
    assert st.step is not None
    step = spec.steps[st.step]
    elapsed = _elapsed(st, now)
    if ev is None:
        if elapsed >= a.max_step_seconds and not st.paused:
            _inconclusive(spec, st, now, out, "no evidence read from the decision log")
        return
    ch = ev.challenger
    if ch.requests >= a.min_requests:
        rate = ch.error_rate or 0.0
        if rules.on_error_rate and rate > a.max_error_rate:
            _abort(
                st,
                now,
                out,
                "ErrorRate",
                f"challenger error rate {rate:.2%} over {ch.requests} requests > {a.max_error_rate:.2%}",
            )
            return
        p99 = ch.p99_latency_ms
        if (
            rules.on_latency
            and a.max_p99_latency_ms is not None
            and p99 is not None
            and p99 > a.max_p99_latency_ms
        ):
            _abort(st, now, out, "Latency", f"challenger p99 {p99:.1f} ms > {a.max_p99_latency_ms:g} ms")
            return
    baseline = ev.champion.stats if st.stage == "Canary" else _baseline(st)
    diff: Interval | None = None
    if baseline is not None and ch.episodes >= a.min_episodes and baseline.n >= a.min_episodes:
        try:
            diff = difference_interval(ch.stats, baseline, a.confidence)
        except OffPolicyError:
            diff = None
    allowed = _allowed(a.tolerance, a.relative_tolerance, baseline.mean if baseline is not None else 0.0)
    if diff is not None and rules.on_regression and diff.high < -allowed:
        _abort(st, now, out, "Regression", _compare(ch.stats, baseline, diff, allowed))  # type: ignore[arg-type]
        return
    if st.paused:
        return
    champion_needed = step.min_episodes if st.stage == "Canary" else 0
    held = elapsed >= step.hold_seconds
    enough = ch.episodes >= step.min_episodes and ev.champion.episodes >= champion_needed
    if not (held and enough):
        if elapsed >= a.max_step_seconds:
            _inconclusive(spec, st, now, out, f"{ch.episodes} challenger episodes after {elapsed:.0f} s")
        return
    if baseline is None:  # a lone 100% step: nothing to compare returns with; errors and latency were fine
        _advance_step(spec, st, now, out, "no champion baseline: judged on errors and latency only")
        return
    if diff is not None and diff.low >= -allowed:
        _advance_step(spec, st, now, out, _compare(ch.stats, baseline, diff, allowed))
    elif elapsed >= a.max_step_seconds:
        _inconclusive(spec, st, now, out, _compare(ch.stats, baseline, diff, allowed) if diff else "too few")


def _advance_step(
    spec: ProgressiveSpec, st: ProgressiveState, now: float, out: list[Transition], why: str
) -> None:
    assert st.step is not None
    _enter_step(
        spec, st, st.step + 1, now, out, "Advanced", "AnalysisPassed", f"{st.stage_name} passed: {why}"
    )


def _inconclusive(
    spec: ProgressiveSpec, st: ProgressiveState, now: float, out: list[Transition], why: str
) -> None:
    limit = spec.analysis.max_step_seconds
    if spec.abort.on_inconclusive == "abort":
        _abort(st, now, out, "Inconclusive", f"{st.stage_name} inconclusive after {limit:g} s: {why}")
    else:
        assert st.step is not None
        _enter_step(
            spec,
            st,
            st.step + 1,
            now,
            out,
            "Advanced",
            "InconclusiveContinue",
            f"{st.stage_name} inconclusive after {limit:g} s ({why}); continuing as configured",
            warning=True,
        )


def _compare(ch: ReturnStats, base: ReturnStats, diff: Interval, allowed: float) -> str:
    return (
        f"challenger mean return {ch.mean:.4g} (n={ch.n}) vs champion {base.mean:.4g} (n={base.n}); "
        f"difference {diff.confidence:.0%} interval [{diff.low:.4g}, {diff.high:.4g}], "
        f"tolerance {allowed:.4g}"
    )


def _baseline(st: ProgressiveState) -> ReturnStats | None:
    if not st.champion_baseline:
        return None
    n, mean, m2 = st.champion_baseline
    return ReturnStats(int(n), mean, m2)


def _summary(st: ProgressiveState, ev: Evidence | None = None) -> StageSummary:
    name = {"Shadow": "shadow", "OffPolicyGate": "shadow", "Canary": "canary", "Full": "full"}.get(
        st.stage, "x"
    )
    base = st.evidence if st.evidence is not None and st.evidence.started_at == st.stage_started_at else None
    summary = StageSummary(
        name=name,
        stage=st.stage_name,
        weight=st.weight,
        started_at=st.stage_started_at,
        off_policy_estimate=st.off_policy if name == "shadow" else None,
    )
    if ev is None:
        return base or summary
    conf = 0.95

    def stats(s: SlotEvidence) -> tuple[float | None, list[float] | None]:
        if not s.episodes:
            return None, None
        iv = s.stats.interval(conf)
        return round(s.mean, 6), [round(iv.low, 6), round(iv.high, 6)]

    cm, ci = stats(ev.champion)
    xm, xi = stats(ev.challenger)
    summary.episodes = {"champion": ev.champion.episodes, "challenger": ev.challenger.episodes}
    summary.mean_return = {"champion": cm, "challenger": xm}
    summary.return_interval = {"champion": ci, "challenger": xi}
    summary.mixed = ev.mixed
    summary.usable_episodes = ev.shadow_episodes
    summary.error_rate = {"champion": ev.champion.error_rate, "challenger": ev.challenger.error_rate}
    summary.p99_latency_ms = {
        "champion": ev.champion.p99_latency_ms,
        "challenger": ev.challenger.p99_latency_ms,
    }
    if name == "shadow" and ev.off_policy is not None:
        summary.off_policy_estimate = ev.off_policy
    return summary


if __name__ == "__main__":
    import json

    print(json.dumps(crd_schema(), indent=2))
