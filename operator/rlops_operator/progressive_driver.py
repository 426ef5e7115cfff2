"""One poll of a progressive rollout: read new evidence, advance the state machine, say what to serve.

The engine keeps one :class:`ProgressiveDriver` for the operator's lifetime and, for a rollout in progress,
calls :meth:`ProgressiveDriver.step` with the status it stored last time. The driver keeps one evidence
collector per rollout in memory (incremental reading); after an operator restart it builds it again from the
state (reading from shortly before the current stage began), so nothing is lost or counted twice. Applying
``StepOutcome.serving`` to the target and writing ``StepOutcome.status`` back are the engine's job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .evidence import EvidenceCollector
from .progressive import (
    Evidence,
    ProgressiveSpec,
    ProgressiveState,
    Transition,
    advance,
    controls_from,
    serving_config,
    start,
)


@dataclass
class StepOutcome:
    """The new state (and its status dict), the transitions to report, what the target must serve."""

    state: ProgressiveState
    transitions: list[Transition]
    serving: dict[str, Any]
    evidence: Evidence | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def status(self) -> dict[str, Any]:
        return self.state.to_status()

    @property
    def finished(self) -> bool:
        return self.state.terminal


class ProgressiveDriver:
    """Evidence collectors by rollout, and the poll step around the pure state machine."""

    def __init__(self, log_root: Callable[[str], str], app: Callable[[str], str]) -> None:
        """``log_root(name)``, ``app(name)``: the storage root and Serve application of rollout ``name``."""
        self._log_root = log_root
        self._app = app
        self._collectors: dict[str, tuple[tuple[Any, ...], EvidenceCollector]] = {}

    def begin(
        self, name: str, spec: ProgressiveSpec, champion_uri: str, challenger_uri: str, now: float
    ) -> StepOutcome:
        """Start a rollout of a checkpoint that passed the existing checks (manifest, gates)."""
        state, transitions = start(spec, champion_uri, challenger_uri, now)
        self._collector(name, spec, state, now)
        return StepOutcome(state, transitions, serving_config(state))

    def step(
        self,
        name: str,
        spec: ProgressiveSpec,
        status: dict[str, Any],
        now: float,
        annotations: dict[str, str] | None = None,
        paused: bool = False,
    ) -> StepOutcome:
        """Advance a rollout by one poll. A storage problem is reported in ``problems``, never raised."""
        state = ProgressiveState.from_status(status)
        controls, problems = controls_from(spec, annotations, paused)
        evidence: Evidence | None = None
        if not state.terminal:
            collector = self._collector(name, spec, state, now)
            evidence = collector.collect(state, now)
            problems += [f"decision log: {e}" for e in evidence.read_errors]
        new, transitions = advance(spec, state, evidence, now, controls)
        if new.terminal:
            self.forget(name)
        return StepOutcome(new, transitions, serving_config(new), evidence, problems)

    def point_at(self, log_root: Callable[[str], str], app: Callable[[str], str]) -> None:
        """Read the logs from another place from now on (a changed ``spec.logRoot`` or application)."""
        self._log_root, self._app = log_root, app

    def forget(self, name: str) -> None:
        """Drop a rollout's in-memory evidence (it ended, or the resource was deleted)."""
        self._collectors.pop(name, None)

    def _collector(
        self, name: str, spec: ProgressiveSpec, state: ProgressiveState, now: float
    ) -> EvidenceCollector:
        # a new rollout, or a change in how evidence is read, starts a new collector; other spec changes
        # (paused, command, steps, tolerances) only change the judgement
        key = (
            state.started_at,
            state.challenger_uri,
            spec.settle_seconds,
            spec.off_policy_gate,
            self._log_root(name),
            self._app(name),
        )
        held = self._collectors.get(name)
        if held is None or held[0] != key:
            collector = EvidenceCollector.for_state(self._log_root(name), self._app(name), spec, state, now)
            self._collectors[name] = (key, collector)
            return collector
        held[1].spec = spec
        return held[1]
