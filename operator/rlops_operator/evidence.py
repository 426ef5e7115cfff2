"""Evidence for the progressive state machine, read incrementally from the decision log.

An :class:`EvidenceCollector` lives in the operator's memory for one rollout. Each ``collect(state, now)``
reads only the log objects written since the last call, files every finished episode under the stage key of
its *first* decision (so an episode that began before a weight change never counts for the new weight), and
files every decision under its own stage key for request, error and latency counts. It returns the cumulative
:class:`~rlops_operator.progressive.Evidence` of the state's current stage, with an off-policy estimate while
the stage is shadow.

After an operator restart the collector is built again with :meth:`EvidenceCollector.for_state`, which reads
from shortly before the current stage began: open episodes are rebuilt whole and nothing is counted twice.
No kopf, no Ray, no torch.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

from rlops_core import offpolicy
from rlops_core.decision_log import DecisionRecord, Episode, EpisodeStream, LogCursor

from .progressive import (
    Evidence,
    OffPolicyEvidence,
    ProgressiveSpec,
    ProgressiveState,
    SlotEvidence,
    stage_key,
)

LATENCY_SAMPLES = 20_000  # per stage and slot: the most recent latencies kept for the p99
MAX_SHADOW_CELLS = 4_000_000  # per stage: episodes x longest episode kept for the off-policy estimate


@dataclass
class _Slot:
    returns: offpolicy.ReturnStats = field(default_factory=offpolicy.ReturnStats)
    requests: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def evidence(self) -> SlotEvidence:
        p99 = float(np.percentile(np.fromiter(self.latencies, float), 99)) if self.latencies else None
        r = self.returns
        return SlotEvidence(
            episodes=r.n, mean=r.mean, m2=r.m2, requests=self.requests, errors=self.errors, p99_latency_ms=p99
        )


@dataclass
class _Stage:
    slots: dict[str, _Slot] = field(default_factory=lambda: {"champion": _Slot(), "challenger": _Slot()})
    mixed: int = 0
    partial: int = 0  # the first decision read was not step 0: the episode began before the log was read
    shadow: list[offpolicy.LoggedEpisode] = field(default_factory=list)
    shadow_longest: int = 0
    shadow_over_budget: int = 0
    estimate: tuple[int, OffPolicyEvidence | None] | None = None  # cached for a given episode count


def episode_key(ep: Episode) -> str:
    d = ep.decisions[0]
    return stage_key(d.mode, d.weight, d.challenger_uri)


def decision_key(d: DecisionRecord) -> str:
    return stage_key(d.mode, d.weight, d.challenger_uri)


class EvidenceCollector:
    """Reads the decision log incrementally and keeps per-stage evidence in memory."""

    def __init__(
        self,
        root: str,
        app: str,
        spec: ProgressiveSpec,
        cursor: LogCursor | dict | None,
        *,
        lookback_hours: int = 2,
    ) -> None:
        self.spec = spec
        self.stream = EpisodeStream(
            root,
            app,
            cursor,
            settle_seconds=spec.settle_seconds,
            abandon_seconds=max(3600.0, spec.settle_seconds * 10),
            lookback_hours=lookback_hours,
        )
        self._stages: dict[str, _Stage] = defaultdict(_Stage)
        self.errors: list[str] = []
        self.counters: dict[str, int] = {}

    @classmethod
    def for_state(
        cls,
        root: str,
        app: str,
        spec: ProgressiveSpec,
        state: ProgressiveState,
        now: float,
        grace: float = 600.0,
    ) -> EvidenceCollector:
        """A collector for a (resumed) rollout, reading from ``grace`` seconds before its stage began."""
        since = state.stage_started_at - grace
        hours = max(2, math.ceil((now - since) / 3600.0) + 1)
        return cls(root, app, spec, LogCursor.starting_at(since), lookback_hours=hours)

    def collect(self, state: ProgressiveState, now: float) -> Evidence:
        """Read what is new and return the current stage's cumulative evidence."""
        polled = self.stream.poll(now)
        self.errors = polled.errors
        self.counters = polled.counters
        for d in polled.decisions:
            slot = self._stages[decision_key(d)].slots[d.slot]
            slot.requests += 1
            slot.errors += d.error is not None
            if d.latency_ms is not None:
                slot.latencies.append(d.latency_ms)
        for ep in polled.episodes:
            stage = self._stages[episode_key(ep)]
            if ep.decisions[0].step not in (None, 0):
                stage.partial += 1  # only its tail was read (it began before the reader's start): no credit
                continue
            if ep.slot == "mixed":
                stage.mixed += 1
                continue
            slot = stage.slots[ep.slot]
            slot.returns = slot.returns.add(ep.total_return)
            if ep.mode == "shadow":
                self._keep_for_estimate(stage, ep)
        key = state.stage_key
        stage = self._stages[key]
        return Evidence(
            stage_key=key,
            champion=stage.slots["champion"].evidence(),
            challenger=stage.slots["challenger"].evidence(),
            mixed=stage.mixed,
            partial=stage.partial,
            log_counters=polled.counters,
            shadow_episodes=len(stage.shadow),
            off_policy=self._estimate(stage) if state.mode == "shadow" else None,
            read_errors=polled.errors,
            cursor=polled.cursor,
        )

    @staticmethod
    def _keep_for_estimate(stage: _Stage, ep: Episode) -> None:
        logged = ep.off_policy_steps()
        if logged is None:
            return
        longest = max(stage.shadow_longest, len(logged.steps))
        if (len(stage.shadow) + 1) * longest > MAX_SHADOW_CELLS:
            stage.shadow_over_budget += 1  # bounded memory: the estimate uses the episodes kept so far
            return
        stage.shadow.append(logged)
        stage.shadow_longest = longest

    def _estimate(self, stage: _Stage) -> OffPolicyEvidence | None:
        gate = self.spec.off_policy_gate
        n = len(stage.shadow)
        if not gate.enabled or n < gate.min_episodes:
            return None
        if stage.estimate is not None and stage.estimate[0] == n:
            return stage.estimate[1]
        episodes = stage.shadow
        method = "PDWIS"
        if gate.method == "DR":
            try:
                episodes = offpolicy.fit_tabular_q(episodes, gamma=gate.gamma)
                method = "WDR"
            except offpolicy.OffPolicyError:
                method = "PDWIS"  # no states or probabilities logged: fall back, and say so in the method
        rules = offpolicy.TrustRules(
            min_episodes=gate.min_episodes,
            min_ess=gate.min_ess,
            max_weight=gate.max_weight,
            max_weight_share=gate.max_weight_share,
        )
        try:
            est = offpolicy.evaluate(
                episodes,
                method,  # type: ignore[arg-type]
                gamma=gate.gamma,
                confidence=gate.confidence,
                bootstrap_samples=gate.bootstrap_samples,
                seed=gate.seed,
                rules=rules,
            )
        except offpolicy.OffPolicyError as exc:
            self.errors = [*self.errors, f"off-policy estimate: {exc}"]
            stage.estimate = (n, None)
            return None
        result = OffPolicyEvidence.model_validate(est.to_dict())
        stage.estimate = (n, result)
        return result
