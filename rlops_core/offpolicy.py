"""Off-policy evaluation over logged episodes: what would the challenger's mean episode return be?

The champion (the *behaviour* policy) chose and sampled every logged action; the challenger (the *target*
policy) scored the same observations in shadow mode, so each step carries both probabilities of the action
that was taken. From those, the estimators below re-weight the logged rewards:

- :func:`pdis`: per-decision importance sampling (unbiased; high variance).
- :func:`pdwis`: per-decision *weighted* importance sampling (self-normalised per step: slightly biased,
  consistent, much lower variance; the default gate).
- :func:`doubly_robust`: doubly robust with a value estimate as control variate (Jiang & Li 2016), plain or
  weighted (Thomas & Brunskill 2016). The value estimate is supplied per step (``q_hat``, ``v_hat``) by
  :func:`attach_values` (a supplied value function) or :func:`fit_tabular_q` (fitted Q evaluation over a
  small discrete state space).

Confidence intervals are percentile bootstrap intervals over *episodes* (a seeded numpy Generator, so the same
data gives the same interval) or, for the estimators that are means of independent per-episode terms (PDIS,
plain DR, the on-policy mean), a normal approximation. :func:`evaluate` bundles an estimate, its interval,
the on-policy baseline of the same episodes, the interval of the difference (paired bootstrap) and weight
diagnostics with a plain verdict: trustworthy or not, and why.

Pure Python + numpy; nothing of the project, no Ray, no torch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

Method = Literal["PDIS", "PDWIS", "DR", "WDR"]
IntervalMethod = Literal["bootstrap", "normal"]


class OffPolicyError(ValueError):
    """The logged data cannot support an estimate (no episodes, a zero behaviour probability, ...)."""


@dataclass(frozen=True)
class LoggedStep:
    """One logged decision and the reward credited to it.

    ``behavior_prob``: probability the champion gave the action it took (must be > 0: the action was sampled).
    ``target_prob``: probability the challenger gives that same action. ``state``/``action``/``target_probs``
    (the challenger's full distribution over discrete actions) are optional, for :func:`fit_tabular_q`.
    """

    behavior_prob: float
    target_prob: float
    reward: float = 0.0
    q_hat: float | None = None
    v_hat: float | None = None
    state: Hashable | None = None
    action: Hashable | None = None
    target_probs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class LoggedEpisode:
    """One finished episode under the behaviour policy."""

    steps: tuple[LoggedStep, ...]
    episode_id: str = ""

    def ret(self, gamma: float = 1.0) -> float:
        """The (discounted) return that was actually observed."""
        return float(sum(gamma**t * s.reward for t, s in enumerate(self.steps)))


# --------------------------------------------------------------------------------------------- arrays
@dataclass(frozen=True)
class _Arrays:
    """Episodes as padded (n, T) arrays; an episode that ended keeps its last weight and earns 0 after."""

    weights: np.ndarray  # cumulative importance weight rho_{i,t}, possibly clipped
    rewards: np.ndarray  # discounted: gamma^t r_{i,t}
    q: np.ndarray  # discounted gamma^t q_hat (0 where absent or padded)
    v: np.ndarray  # discounted gamma^t v_hat
    prev_weights: np.ndarray  # rho_{i,t-1}, with rho_{i,-1} = 1
    returns: np.ndarray  # per-episode observed discounted return (the on-policy baseline)
    clipped: np.ndarray  # per-episode: some weight was clipped
    raw_final: np.ndarray  # per-episode unclipped final weight


def _arrays(
    episodes: Sequence[LoggedEpisode], gamma: float, clip: float | None, need_values: bool = False
) -> _Arrays:
    if not episodes:
        raise OffPolicyError("no episodes to estimate from")
    if not 0.0 < gamma <= 1.0:
        raise OffPolicyError(f"gamma must be in (0, 1], got {gamma}")
    if clip is not None and clip <= 0:
        raise OffPolicyError(f"the weight clip must be positive, got {clip}")
    n = len(episodes)
    horizon = max(len(e.steps) for e in episodes)
    if horizon == 0:
        raise OffPolicyError("every episode is empty (no logged decisions)")
    w = np.ones((n, horizon))
    r = np.zeros((n, horizon))
    q = np.zeros((n, horizon))
    v = np.zeros((n, horizon))
    clipped = np.zeros(n, dtype=bool)
    raw_final = np.ones(n)
    disc = gamma ** np.arange(horizon)
    for i, ep in enumerate(episodes):
        if not ep.steps:
            raise OffPolicyError(f"episode {ep.episode_id or i} has no logged decisions")
        rho = 1.0
        raw = 1.0
        for t, s in enumerate(ep.steps):
            b, p = float(s.behavior_prob), float(s.target_prob)
            if not (math.isfinite(b) and 0.0 < b <= 1.0):
                raise OffPolicyError(
                    f"episode {ep.episode_id or i} step {t}: behaviour probability {b} is not in (0, 1]; "
                    "importance sampling needs the champion to sample its actions (not greedy)"
                )
            if not (math.isfinite(p) and 0.0 <= p <= 1.0):
                raise OffPolicyError(
                    f"episode {ep.episode_id or i} step {t}: target probability {p} not in [0, 1]"
                )
            if not math.isfinite(s.reward):
                raise OffPolicyError(
                    f"episode {ep.episode_id or i} step {t}: reward {s.reward} is not finite"
                )
            rho *= p / b
            raw *= p / b
            if clip is not None and rho > clip:
                rho = clip
                clipped[i] = True
            w[i, t] = rho
            r[i, t] = s.reward
            if need_values:
                if s.q_hat is None or s.v_hat is None:
                    raise OffPolicyError(
                        f"episode {ep.episode_id or i} step {t} has no value estimate; "
                        "use attach_values() or fit_tabular_q() before a doubly robust estimate"
                    )
                q[i, t], v[i, t] = s.q_hat, s.v_hat
        last = len(ep.steps)
        w[i, last:] = rho
        raw_final[i] = raw
    prev = np.concatenate([np.ones((n, 1)), w[:, :-1]], axis=1)
    returns = (r * disc).sum(axis=1)
    return _Arrays(w, r * disc, q * disc, v * disc, prev, returns, clipped, raw_final)


# ------------------------------------------------------------------------- estimators on resample counts
# Each takes ``counts`` of shape (B, n): how often each episode appears in each (re)sample. The plain
# estimate is counts = ones((1, n)); a bootstrap draws multinomial counts. All sums are then matrix products.
def _pdis(a: _Arrays, counts: np.ndarray) -> np.ndarray:
    per_episode = (a.weights * a.rewards).sum(axis=1)
    return counts @ per_episode / counts.sum(axis=1)


def _pdwis(a: _Arrays, counts: np.ndarray) -> np.ndarray:
    num = counts @ (a.weights * a.rewards)  # (B, T)
    den = counts @ a.weights
    with np.errstate(invalid="ignore", divide="ignore"):
        per_step = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return per_step.sum(axis=1)


def _dr(a: _Arrays, counts: np.ndarray) -> np.ndarray:
    per_episode = (a.weights * (a.rewards - a.q) + a.prev_weights * a.v).sum(axis=1)
    return counts @ per_episode / counts.sum(axis=1)


def _wdr(a: _Arrays, counts: np.ndarray) -> np.ndarray:
    def normalised(mat: np.ndarray, weights: np.ndarray) -> np.ndarray:
        num = counts @ (weights * mat)
        den = counts @ weights
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)

    return (normalised(a.rewards - a.q, a.weights) + normalised(a.v, a.prev_weights)).sum(axis=1)


def _on_policy(a: _Arrays, counts: np.ndarray) -> np.ndarray:
    return counts @ a.returns / counts.sum(axis=1)


_ESTIMATORS: dict[str, Callable[[_Arrays, np.ndarray], np.ndarray]] = {
    "PDIS": _pdis,
    "PDWIS": _pdwis,
    "DR": _dr,
    "WDR": _wdr,
}


def _estimate(method: str, episodes: Sequence[LoggedEpisode], gamma: float, clip: float | None) -> float:
    a = _arrays(episodes, gamma, clip, need_values=method in ("DR", "WDR"))
    return float(_ESTIMATORS[method](a, np.ones((1, len(episodes))))[0])


def pdis(episodes: Sequence[LoggedEpisode], gamma: float = 1.0, clip: float | None = None) -> float:
    """Per-decision IS: mean over episodes of sum_t gamma^t rho_t r_t, rho_t = prod_{k<=t} pi_e/pi_b."""
    return _estimate("PDIS", episodes, gamma, clip)


def pdwis(episodes: Sequence[LoggedEpisode], gamma: float = 1.0, clip: float | None = None) -> float:
    """Per-decision weighted IS: sum_t gamma^t sum_i (rho_{i,t} / sum_j rho_{j,t}) r_{i,t}."""
    return _estimate("PDWIS", episodes, gamma, clip)


def doubly_robust(
    episodes: Sequence[LoggedEpisode], gamma: float = 1.0, weighted: bool = True, clip: float | None = None
) -> float:
    """Doubly robust: sum_t gamma^t [w_t (r_t - q_t) + w_{t-1} v_t]; ``weighted`` normalises w per step."""
    return _estimate("WDR" if weighted else "DR", episodes, gamma, clip)


# ------------------------------------------------------------------------------------------ value estimates
def attach_values(
    episodes: Sequence[LoggedEpisode],
    v_fn: Callable[[Any], float],
    q_fn: Callable[[Any, Any], float] | None = None,
) -> list[LoggedEpisode]:
    """Fill ``q_hat``/``v_hat`` from a supplied value function of the logged ``state`` (and ``action``).

    Without ``q_fn`` the action value is taken to be the state value (a state-only baseline): still a valid
    control variate, so DR stays unbiased, it just removes less variance. Never use a value built from the
    realised reward of the same step (``r + gamma V(s')``): that cancels the reward out of the estimate.
    """
    out = []
    for ep in episodes:
        steps = []
        for s in ep.steps:
            v = float(v_fn(s.state))
            q = float(q_fn(s.state, s.action)) if q_fn is not None else v
            steps.append(_replace(s, q_hat=q, v_hat=v))
        out.append(LoggedEpisode(tuple(steps), ep.episode_id))
    return out


def fit_tabular_q(
    episodes: Sequence[LoggedEpisode],
    gamma: float = 1.0,
    iterations: int = 200,
    tol: float = 1e-9,
    min_visits: float = 5.0,
) -> list[LoggedEpisode]:
    """Fitted Q evaluation of the target policy on a small discrete state space; returns episodes with values.

    Needs per step a hashable ``state``, the ``action`` (an index into ``target_probs``) and the challenger's
    full distribution ``target_probs``. Q(s, a) is the mean over logged visits of r + gamma V(s'), with
    V(s) = sum_a pi_e(a|s) Q(s, a) (actions never logged in s count 0) and V = 0 after the last step,
    iterated to a fixed point. The fit uses the same episodes as the estimate (no sample splitting): fine as a
    control variate for the sample sizes a gate sees, and documented as such.

    States must repeat: with fewer than ``min_visits`` logged visits per (state, action) on average
    (continuous observations), Q would be fitted from the very rewards it is meant to predict, so this
    refuses; supply a value function with :func:`attach_values` instead.
    """
    visits: dict[tuple[Hashable, Hashable], list[tuple[float, Hashable | None]]] = defaultdict(list)
    policy: dict[Hashable, tuple[float, ...]] = {}
    for ep in episodes:
        for t, s in enumerate(ep.steps):
            if s.state is None or s.action is None or s.target_probs is None:
                raise OffPolicyError(
                    "fit_tabular_q needs state, action and target_probs on every step "
                    "(log the observation and the challenger's probabilities)"
                )
            nxt = ep.steps[t + 1].state if t + 1 < len(ep.steps) else None
            visits[(s.state, s.action)].append((float(s.reward), nxt))
            policy[s.state] = tuple(float(p) for p in s.target_probs)
    if not visits:
        raise OffPolicyError("no episodes to fit a value estimate on")
    mean_visits = sum(len(v) for v in visits.values()) / len(visits)
    if mean_visits < min_visits:
        raise OffPolicyError(
            f"too few visits per (state, action) for a tabular fit: {mean_visits:.1f} on average, "
            f"need {min_visits:g} (continuous observations?); supply a value function with attach_values()"
        )
    q: dict[tuple[Hashable, Hashable], float] = dict.fromkeys(visits, 0.0)

    def value(state: Hashable | None) -> float:
        if state is None:
            return 0.0
        probs = policy.get(state, ())
        return sum(p * q.get((state, a), 0.0) for a, p in enumerate(probs))

    for _ in range(iterations):
        delta = 0.0
        new = {}
        for key, outcomes in visits.items():
            new[key] = sum(r + gamma * value(nxt) for r, nxt in outcomes) / len(outcomes)
            delta = max(delta, abs(new[key] - q[key]))
        q = new
        if delta < tol:
            break
    out = []
    for ep in episodes:
        steps = tuple(_replace(s, q_hat=q[(s.state, s.action)], v_hat=value(s.state)) for s in ep.steps)
        out.append(LoggedEpisode(steps, ep.episode_id))
    return out


def _replace(step: LoggedStep, **changes: Any) -> LoggedStep:
    from dataclasses import replace

    return replace(step, **changes)


# ----------------------------------------------------------------------------------------- diagnostics
@dataclass(frozen=True)
class WeightDiagnostics:
    """How concentrated the importance weights are (on the final, whole-episode weights)."""

    episodes: int
    ess: float  # Kish effective sample size (sum w)^2 / sum w^2
    ess_fraction: float  # ess / episodes
    max_weight: float  # largest final weight (unclipped)
    max_weight_share: float  # the largest final weight's share of the sum (1/n when all equal)
    mean_weight: float  # ~1 when the target is supported by the behaviour policy; far from 1 signals trouble
    clipped_share: float  # share of episodes whose weight hit the clip


def weight_diagnostics(
    episodes: Sequence[LoggedEpisode], gamma: float = 1.0, clip: float | None = None
) -> WeightDiagnostics:
    """Effective sample size and weight concentration of the episodes' cumulative importance weights."""
    a = _arrays(episodes, gamma, clip)
    return _diagnostics(a)


def _diagnostics(a: _Arrays) -> WeightDiagnostics:
    raw = a.raw_final
    total = float(raw.sum())
    n = len(raw)
    ess = total**2 / float((raw**2).sum()) if total > 0 else 0.0
    return WeightDiagnostics(
        episodes=n,
        ess=ess,
        ess_fraction=ess / n,
        max_weight=float(raw.max()),
        max_weight_share=float(raw.max()) / total if total > 0 else 1.0,
        mean_weight=total / n,
        clipped_share=float(a.clipped.mean()),
    )


# ------------------------------------------------------------------------------------------- intervals
@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    confidence: float
    method: IntervalMethod


def _bootstrap(
    fn: Callable[[np.ndarray], np.ndarray], n: int, confidence: float, samples: int, seed: int
) -> Interval:
    rng = np.random.default_rng(seed)
    values = []
    chunk = max(1, min(500, 2_000_000 // n))  # bounds the (chunk, n) count matrix to about 16 MB
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)
        values.append(fn(counts))
    dist = np.concatenate(values)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(dist, [alpha, 1.0 - alpha])
    return Interval(float(low), float(high), confidence, "bootstrap")


def _normal(per_episode: np.ndarray, confidence: float) -> Interval:
    n = len(per_episode)
    mean = float(per_episode.mean())
    half = 0.0
    if n > 1:
        half = NormalDist().inv_cdf(0.5 + confidence / 2.0) * float(per_episode.std(ddof=1)) / math.sqrt(n)
    return Interval(mean - half, mean + half, confidence, "normal")


# -------------------------------------------------------------------------------------------- verdict
@dataclass(frozen=True)
class TrustRules:
    """When an estimate is not trustworthy. Defaults are conservative for a deploy gate."""

    min_episodes: int = 100
    min_ess: float = 30.0
    max_weight_share: float = 0.2  # one episode carrying more than this share of all weight: exploding
    max_weight: float | None = None  # any final weight above this: exploding
    max_clipped_share: float = 0.05


@dataclass(frozen=True)
class Estimate:
    """An off-policy estimate of the target's mean episode return, beside the behaviour policy's own."""

    method: str
    value: float
    interval: Interval
    baseline: float  # on-policy mean return of the same episodes (the champion's)
    baseline_interval: Interval
    difference: float  # value - baseline
    difference_interval: Interval  # paired over the same resampled episodes
    diagnostics: WeightDiagnostics
    trustworthy: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (for a status field or a report)."""
        d = self.diagnostics
        return {
            "method": self.method,
            "estimate": _round(self.value),
            "interval": [_round(self.interval.low), _round(self.interval.high)],
            "confidence": self.interval.confidence,
            "intervalMethod": self.interval.method,
            "championMean": _round(self.baseline),
            "difference": _round(self.difference),
            "differenceInterval": [
                _round(self.difference_interval.low),
                _round(self.difference_interval.high),
            ],
            "episodes": d.episodes,
            "ess": _round(d.ess),
            "maxWeight": _round(d.max_weight),
            "maxWeightShare": _round(d.max_weight_share),
            "clippedShare": _round(d.clipped_share),
            "trustworthy": self.trustworthy,
            "reasons": list(self.reasons),
        }


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def verdict(diag: WeightDiagnostics, rules: TrustRules) -> tuple[bool, tuple[str, ...]]:
    """Whether an estimate over weights like these can be trusted, and every reason it cannot."""
    reasons = []
    if diag.episodes < rules.min_episodes:
        reasons.append(f"too few episodes: {diag.episodes} < {rules.min_episodes}")
    if diag.ess < rules.min_ess:
        reasons.append(f"effective sample size too small: {diag.ess:.1f} < {rules.min_ess:g}")
    if diag.max_weight_share > rules.max_weight_share:
        reasons.append(
            f"exploding weights: one episode carries {diag.max_weight_share:.0%} of the total weight "
            f"(limit {rules.max_weight_share:.0%})"
        )
    if rules.max_weight is not None and diag.max_weight > rules.max_weight:
        reasons.append(f"exploding weights: max weight {diag.max_weight:.3g} > {rules.max_weight:g}")
    if diag.clipped_share > rules.max_clipped_share:
        reasons.append(
            f"too many clipped weights: {diag.clipped_share:.0%} of episodes "
            f"(limit {rules.max_clipped_share:.0%})"
        )
    return not reasons, tuple(reasons)


def evaluate(
    episodes: Sequence[LoggedEpisode],
    method: Method = "PDWIS",
    *,
    gamma: float = 1.0,
    confidence: float = 0.95,
    interval: IntervalMethod = "bootstrap",
    bootstrap_samples: int = 2000,
    seed: int = 0,
    clip: float | None = None,
    rules: TrustRules | None = None,
) -> Estimate:
    """The target's estimated mean return with an interval, the baseline, their paired difference, a verdict.

    ``interval="normal"`` is only offered for estimators that are means of independent per-episode terms
    (PDIS and plain DR); PDWIS and WDR are ratios and always use the bootstrap.
    """
    if method not in _ESTIMATORS:
        raise OffPolicyError(f"unknown method {method!r}: use one of {', '.join(_ESTIMATORS)}")
    if not 0.0 < confidence < 1.0:
        raise OffPolicyError(f"confidence must be in (0, 1), got {confidence}")
    if bootstrap_samples < 100:
        raise OffPolicyError(f"bootstrap_samples must be at least 100, got {bootstrap_samples}")
    a = _arrays(episodes, gamma, clip, need_values=method in ("DR", "WDR"))
    n = len(episodes)
    est = _ESTIMATORS[method]
    ones = np.ones((1, n))
    value = float(est(a, ones)[0])
    baseline = float(_on_policy(a, ones)[0])
    if interval == "normal":
        if method not in ("PDIS", "DR"):
            raise OffPolicyError(
                f"a normal interval needs a per-episode mean estimator (PDIS or DR), not {method}"
            )
        per_ep = (
            (a.weights * a.rewards).sum(axis=1)
            if method == "PDIS"
            else (a.weights * (a.rewards - a.q) + a.prev_weights * a.v).sum(axis=1)
        )
        value_iv = _normal(per_ep, confidence)
        base_iv = _normal(a.returns, confidence)
        diff_iv = _normal(per_ep - a.returns, confidence)
    elif interval == "bootstrap":
        value_iv = _bootstrap(lambda c: est(a, c), n, confidence, bootstrap_samples, seed)
        base_iv = _bootstrap(lambda c: _on_policy(a, c), n, confidence, bootstrap_samples, seed)
        diff_iv = _bootstrap(lambda c: est(a, c) - _on_policy(a, c), n, confidence, bootstrap_samples, seed)
    else:
        raise OffPolicyError(f"unknown interval method {interval!r}: use bootstrap or normal")
    diag = _diagnostics(a)
    ok, reasons = verdict(diag, rules or TrustRules())
    return Estimate(method, value, value_iv, baseline, base_iv, value - baseline, diff_iv, diag, ok, reasons)


# ------------------------------------------------------------------------------------ online comparison
@dataclass(frozen=True)
class ReturnStats:
    """Mergeable running statistics of episode returns (Welford): count, mean, sum of squared deviations."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> ReturnStats:
        n = self.n + 1
        delta = x - self.mean
        mean = self.mean + delta / n
        return ReturnStats(n, mean, self.m2 + delta * (x - mean))

    def merge(self, other: ReturnStats) -> ReturnStats:
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        return ReturnStats(n, mean, self.m2 + other.m2 + delta**2 * self.n * other.n / n)

    @property
    def variance(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    def interval(self, confidence: float) -> Interval:
        """Normal-approximation interval of the mean (a point when n < 2)."""
        half = 0.0
        if self.n > 1:
            half = NormalDist().inv_cdf(0.5 + confidence / 2.0) * math.sqrt(self.variance / self.n)
        return Interval(self.mean - half, self.mean + half, confidence, "normal")


def difference_interval(challenger: ReturnStats, champion: ReturnStats, confidence: float) -> Interval:
    """Welch normal-approximation interval of mean(challenger) - mean(champion) (independent samples)."""
    if challenger.n < 2 or champion.n < 2:
        raise OffPolicyError("each slot needs at least 2 finished episodes for a difference interval")
    se = math.sqrt(challenger.variance / challenger.n + champion.variance / champion.n)
    diff = challenger.mean - champion.mean
    half = NormalDist().inv_cdf(0.5 + confidence / 2.0) * se
    return Interval(diff - half, diff + half, confidence, "normal")
