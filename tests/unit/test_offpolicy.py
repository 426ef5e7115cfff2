"""rlops_core.offpolicy: hand-computed cases, a bandit and a small MDP with known true values, diagnostics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlops_core import offpolicy
from rlops_core.offpolicy import LoggedEpisode, LoggedStep, OffPolicyError, ReturnStats, TrustRules


def ep(*steps: tuple[float, ...], eid: str = "") -> LoggedEpisode:
    """Steps as (behaviour prob, target prob, reward[, q_hat, v_hat])."""
    out = []
    for s in steps:
        b, p, r, *qv = s
        out.append(LoggedStep(b, p, r, *(qv or (None, None))))
    return LoggedEpisode(tuple(out), eid)


# Two episodes worked by hand (docs/progressive.md repeats them):
#   A: (b=.5, p=1, r=1), (b=.5, p=.5, r=1)  -> cumulative weights 2, 2
#   B: (b=.5, p=.25, r=2)                   -> weight .5 (padded as .5 with reward 0 at t=1)
HAND = [ep((0.5, 1.0, 1.0, 1.0, 1.5), (0.5, 0.5, 1.0, 1.0, 0.5)), ep((0.5, 0.25, 2.0, 2.0, 1.0))]


def test_hand_computed_pdis_and_pdwis() -> None:
    assert offpolicy.pdis(HAND) == pytest.approx((2 * 1 + 2 * 1 + 0.5 * 2) / 2)  # 2.5
    # t=0: (2*1 + .5*2) / 2.5 = 1.2 ; t=1: (2*1 + .5*0) / 2.5 = 0.8
    assert offpolicy.pdwis(HAND) == pytest.approx(2.0)
    assert offpolicy.pdis(HAND, gamma=0.5) == pytest.approx((2 + 0.5 * 2 + 1) / 2)
    assert offpolicy.pdwis(HAND, gamma=0.5) == pytest.approx(1.2 + 0.5 * 0.8)


def test_hand_computed_doubly_robust() -> None:
    # A: t0 2*(1-1) + 1*1.5 = 1.5 ; t1 2*(1-1) + 2*.5 = 1 -> 2.5.  B: .5*(2-2) + 1*1 = 1.  Mean 1.75
    assert offpolicy.doubly_robust(HAND, weighted=False) == pytest.approx(1.75)
    # weighted: t0 0 + (1.5+1)/2 = 1.25 ; t1 0 + (2*.5 + .5*0)/2.5 = .4
    assert offpolicy.doubly_robust(HAND, weighted=True) == pytest.approx(1.65)
    # with q = v = 0 plain DR is exactly PDIS
    zero = [
        LoggedEpisode(tuple(LoggedStep(s.behavior_prob, s.target_prob, s.reward, 0.0, 0.0) for s in e.steps))
        for e in HAND
    ]
    assert offpolicy.doubly_robust(zero, weighted=False) == pytest.approx(offpolicy.pdis(HAND))


def test_clipping_and_diagnostics_by_hand() -> None:
    d = offpolicy.weight_diagnostics(HAND)
    assert d.ess == pytest.approx(2.5**2 / (4 + 0.25))
    assert d.max_weight == 2.0 and d.max_weight_share == pytest.approx(0.8)
    assert d.mean_weight == pytest.approx(1.25) and d.clipped_share == 0.0
    # clip at 1.5: A's weights become 1.5, 1.5 -> PDIS (3 + 1) / 2
    assert offpolicy.pdis(HAND, clip=1.5) == pytest.approx(2.0)
    assert offpolicy.weight_diagnostics(HAND, clip=1.5).clipped_share == 0.5


def test_dr_needs_values_and_bad_data_is_refused() -> None:
    plain = [ep((0.5, 0.5, 1.0))]
    with pytest.raises(OffPolicyError, match="no value estimate"):
        offpolicy.doubly_robust(plain)
    with pytest.raises(OffPolicyError, match=r"behaviour probability 0\.0 is not in"):
        offpolicy.pdwis([ep((0.0, 0.5, 1.0))])
    with pytest.raises(OffPolicyError, match="target probability"):
        offpolicy.pdwis([ep((0.5, 1.5, 1.0))])
    with pytest.raises(OffPolicyError, match="not finite"):
        offpolicy.pdwis([ep((0.5, 0.5, math.nan))])
    with pytest.raises(OffPolicyError, match="no episodes"):
        offpolicy.pdwis([])
    with pytest.raises(OffPolicyError, match="gamma"):
        offpolicy.pdwis(plain, gamma=0.0)
    with pytest.raises(OffPolicyError, match="normal interval"):
        offpolicy.evaluate(plain * 5, "PDWIS", interval="normal")
    with pytest.raises(OffPolicyError, match="unknown method"):
        offpolicy.evaluate(plain * 5, "XYZ")  # type: ignore[arg-type]


def test_same_policy_means_weights_one_and_zero_difference() -> None:
    rng = np.random.default_rng(3)
    eps = [ep(*[(0.4, 0.4, float(rng.normal())) for _ in range(3)]) for _ in range(150)]
    est = offpolicy.evaluate(eps, "PDWIS", bootstrap_samples=300)
    assert est.value == pytest.approx(est.baseline)
    assert est.difference_interval.low == pytest.approx(0.0, abs=1e-12)
    assert est.difference_interval.high == pytest.approx(0.0, abs=1e-12)
    assert est.diagnostics.ess == pytest.approx(150) and est.trustworthy, est.reasons


def test_bootstrap_is_seeded_and_normal_interval_agrees_for_pdis() -> None:
    eps, _ = bandit_episodes(np.random.default_rng(1), 400)
    a = offpolicy.evaluate(eps, "PDIS", seed=7, bootstrap_samples=1000)
    b = offpolicy.evaluate(eps, "PDIS", seed=7, bootstrap_samples=1000)
    assert a.interval == b.interval
    c = offpolicy.evaluate(eps, "PDIS", interval="normal")
    assert c.interval.method == "normal" and a.interval.method == "bootstrap"
    width = c.interval.high - c.interval.low
    assert abs(a.interval.low - c.interval.low) < 0.15 * width
    assert abs(a.interval.high - c.interval.high) < 0.15 * width


# ------------------------------------------------------------------------------------ known true values
BANDIT_BEHAVIOUR = np.array([0.5, 0.3, 0.2])
BANDIT_TARGET = np.array([0.2, 0.3, 0.5])
BANDIT_MEANS = np.array([0.2, 0.5, 0.8])  # Bernoulli rewards
BANDIT_TRUE = float(BANDIT_TARGET @ BANDIT_MEANS)  # 0.59
BANDIT_BEHAVIOUR_TRUE = float(BANDIT_BEHAVIOUR @ BANDIT_MEANS)  # 0.41


def bandit_episodes(rng: np.random.Generator, n: int) -> tuple[list[LoggedEpisode], float]:
    out = []
    for i in range(n):
        a = int(rng.choice(3, p=BANDIT_BEHAVIOUR))
        r = float(rng.random() < BANDIT_MEANS[a])
        step = LoggedStep(
            BANDIT_BEHAVIOUR[a], BANDIT_TARGET[a], r, state=0, action=a, target_probs=tuple(BANDIT_TARGET)
        )
        out.append(LoggedEpisode((step,), f"e{i}"))
    return out, BANDIT_TRUE


# A two-step MDP. s0 -a0 (r=1)-> s1 ; s0 -a1 (r=0)-> s2. s1: a0 r=2, a1 r=0. s2: a0 r=0, a1 r=3. Done.
# Rewards carry N(0, 0.5) noise.
MDP_BEHAVIOUR = {0: (0.5, 0.5), 1: (0.7, 0.3), 2: (0.7, 0.3)}
MDP_TARGET = {0: (0.8, 0.2), 1: (0.9, 0.1), 2: (0.2, 0.8)}
MDP_REWARD = {(0, 0): 1.0, (0, 1): 0.0, (1, 0): 2.0, (1, 1): 0.0, (2, 0): 0.0, (2, 1): 3.0}
MDP_TRUE = 0.8 * (1 + 0.9 * 2) + 0.2 * (0 + 0.8 * 3)  # 2.72


def mdp_episodes(rng: np.random.Generator, n: int) -> tuple[list[LoggedEpisode], float]:
    out = []
    for i in range(n):
        s, steps = 0, []
        for _ in range(2):
            a = int(rng.choice(2, p=MDP_BEHAVIOUR[s]))
            r = MDP_REWARD[(s, a)] + float(rng.normal(0, 0.5))
            steps.append(
                LoggedStep(
                    MDP_BEHAVIOUR[s][a], MDP_TARGET[s][a], r, state=s, action=a, target_probs=MDP_TARGET[s]
                )
            )
            s = (1 if a == 0 else 2) if s == 0 else None  # type: ignore[assignment]
        out.append(LoggedEpisode(tuple(steps), f"e{i}"))
    return out, MDP_TRUE


@pytest.mark.parametrize("make", [bandit_episodes, mdp_episodes], ids=["bandit", "mdp"])
@pytest.mark.parametrize("method", ["PDIS", "PDWIS", "WDR"])
def test_interval_covers_the_true_value_in_most_seeded_trials(make, method) -> None:
    trials, covered = 40, 0
    for seed in range(trials):
        eps, truth = make(np.random.default_rng(1000 + seed), 300)
        if method == "WDR":
            eps = offpolicy.fit_tabular_q(eps)
        est = offpolicy.evaluate(eps, method, confidence=0.95, bootstrap_samples=400, seed=seed)
        covered += est.interval.low <= truth <= est.interval.high
        assert abs(est.value - truth) < 1.0  # no estimate is wildly off
    # nominal 95%: expect ~38 of 40; 34 is more than 2.5 standard deviations below
    assert covered >= 34, f"{method} covered the true value in only {covered}/{trials} trials"


def test_fitted_q_recovers_the_mdp_values_and_dr_beats_pdis_on_width() -> None:
    eps, truth = mdp_episodes(np.random.default_rng(5), 2000)
    fitted = offpolicy.fit_tabular_q(eps)
    first = fitted[0].steps[0]
    assert first.v_hat == pytest.approx(truth, abs=0.15)  # V(s0) under the target policy
    wdr = offpolicy.evaluate(fitted, "WDR", bootstrap_samples=400)
    pd = offpolicy.evaluate(fitted, "PDIS", bootstrap_samples=400)
    assert wdr.interval.low <= truth <= wdr.interval.high
    assert (wdr.interval.high - wdr.interval.low) < 0.6 * (pd.interval.high - pd.interval.low)


def test_supplied_true_value_function_makes_dr_nearly_exact() -> None:
    eps, truth = mdp_episodes(np.random.default_rng(9), 300)
    v = {0: truth, 1: 1.8, 2: 2.4}
    q = {
        key: r + (v[1] if key == (0, 0) else v[2] if key == (0, 1) else 0.0) for key, r in MDP_REWARD.items()
    }
    with_values = offpolicy.attach_values(eps, v_fn=lambda s: v[s], q_fn=lambda s, a: q[(s, a)])
    est = offpolicy.evaluate(with_values, "DR", interval="normal")
    assert est.interval.low <= truth <= est.interval.high
    assert est.interval.high - est.interval.low < 0.4  # only the reward noise is left
    state_only = offpolicy.attach_values(eps, v_fn=lambda s: v[s])  # q = v: still a valid control variate
    assert offpolicy.evaluate(state_only, "DR", interval="normal").interval.low <= truth + 0.5


def test_tabular_fit_needs_states_actions_and_probabilities() -> None:
    with pytest.raises(OffPolicyError, match="state, action and target_probs"):
        offpolicy.fit_tabular_q([ep((0.5, 0.5, 1.0))])


def test_tabular_fit_refuses_states_that_never_repeat() -> None:
    # continuous observations: every state is new, so Q would be fitted from the rewards it should predict
    rng = np.random.default_rng(0)
    eps = [
        LoggedEpisode(
            (LoggedStep(0.5, 0.5, 1.0, state=float(rng.random()), action=0, target_probs=(0.5, 0.5)),)
        )
        for _ in range(50)
    ]
    with pytest.raises(OffPolicyError, match="too few visits per \\(state, action\\)"):
        offpolicy.fit_tabular_q(eps)


def test_worse_target_is_recognised_with_paired_difference() -> None:
    # behaviour is the better policy here: the difference interval lies below zero
    rng = np.random.default_rng(11)
    eps = []
    for i in range(600):
        a = int(rng.choice(3, p=BANDIT_TARGET))  # behaviour: favours the good arm
        r = float(rng.random() < BANDIT_MEANS[a])
        eps.append(LoggedEpisode((LoggedStep(BANDIT_TARGET[a], BANDIT_BEHAVIOUR[a], r),), f"e{i}"))
    est = offpolicy.evaluate(eps, "PDWIS", bootstrap_samples=1000)
    assert est.difference == pytest.approx(est.value - est.baseline)
    assert est.difference_interval.high < 0
    assert est.value == pytest.approx(BANDIT_BEHAVIOUR_TRUE, abs=0.08)


# ---------------------------------------------------------------------------------------- diagnostics
def test_ess_equal_weights_is_n_and_one_giant_weight_is_about_one() -> None:
    equal = [ep((0.5, 0.5, 1.0)) for _ in range(50)]
    assert offpolicy.weight_diagnostics(equal).ess == pytest.approx(50)
    giant = [ep((0.5, 0.005, 1.0)) for _ in range(49)] + [ep((0.001, 1.0, 1.0))]
    d = offpolicy.weight_diagnostics(giant)
    assert d.ess < 1.01 and d.max_weight == pytest.approx(1000) and d.max_weight_share > 0.99


def test_exploding_weights_are_flagged_not_trusted() -> None:
    rng = np.random.default_rng(2)
    # the target mostly takes an action the behaviour policy almost never takes: weights explode
    eps = []
    for i in range(300):
        a = int(rng.random() < 0.01)
        b, p = (0.99, 0.05) if a == 0 else (0.01, 0.95)
        eps.append(ep(*[(b, p, 1.0)] * 3, eid=f"e{i}"))
    est = offpolicy.evaluate(eps, "PDWIS", bootstrap_samples=200)
    assert not est.trustworthy
    text = " ".join(est.reasons)
    assert "exploding weights" in text and "effective sample size too small" in text
    rules = TrustRules(max_clipped_share=0.005)
    clipped = offpolicy.evaluate(eps, "PDWIS", bootstrap_samples=200, clip=100.0, rules=rules)
    assert clipped.diagnostics.clipped_share == pytest.approx(3 / 300)  # the three rare episodes
    assert not clipped.trustworthy and any("too many clipped weights: 1%" in r for r in clipped.reasons)


def test_too_few_episodes_is_not_trusted_and_rules_are_configurable() -> None:
    eps = [ep((0.5, 0.5, 1.0)) for _ in range(20)]
    est = offpolicy.evaluate(eps, "PDWIS", bootstrap_samples=200)
    assert not est.trustworthy and est.reasons == (
        "too few episodes: 20 < 100",
        "effective sample size too small: 20.0 < 30",
    )
    ok = offpolicy.evaluate(
        eps, "PDWIS", bootstrap_samples=200, rules=TrustRules(min_episodes=10, min_ess=10)
    )
    assert ok.trustworthy
    d = ok.to_dict()
    assert d["episodes"] == 20 and d["ess"] == 20 and d["trustworthy"] is True and d["method"] == "PDWIS"


# ------------------------------------------------------------------------------------ online statistics
def test_return_stats_match_numpy_and_merge() -> None:
    xs = np.random.default_rng(4).normal(3, 2, size=101)
    s = ReturnStats()
    for x in xs[:60]:
        s = s.add(float(x))
    t = ReturnStats()
    for x in xs[60:]:
        t = t.add(float(x))
    merged = s.merge(t)
    assert merged.n == 101 and merged.mean == pytest.approx(xs.mean())
    assert merged.variance == pytest.approx(xs.var(ddof=1))
    iv = merged.interval(0.95)
    assert iv.low == pytest.approx(xs.mean() - 1.959964 * xs.std(ddof=1) / math.sqrt(101), rel=1e-5)


def test_difference_interval() -> None:
    a = ReturnStats(100, 1.0, 99 * 4.0)  # variance 4
    b = ReturnStats(100, 0.0, 99 * 4.0)
    iv = offpolicy.difference_interval(a, b, 0.95)
    half = 1.959964 * math.sqrt(4 / 100 + 4 / 100)
    assert iv.low == pytest.approx(1 - half, rel=1e-5) and iv.high == pytest.approx(1 + half, rel=1e-5)
    with pytest.raises(OffPolicyError, match="at least 2"):
        offpolicy.difference_interval(ReturnStats(1, 0, 0), b, 0.95)


# --------------------------------------------------------------------------- docs/progressive.md's example
def test_worked_example_in_the_docs() -> None:
    """The numbers docs/progressive.md quotes: 600 shadow episodes of the bandit, seed 1."""
    target = np.array([0.1, 0.2, 0.7])
    rng = np.random.default_rng(1)
    eps = []
    for i in range(600):
        a = int(rng.choice(3, p=BANDIT_BEHAVIOUR))
        r = float(rng.random() < BANDIT_MEANS[a])
        eps.append(LoggedEpisode((LoggedStep(BANDIT_BEHAVIOUR[a], target[a], r),), f"e{i}"))
    d = offpolicy.evaluate(eps, "PDWIS", bootstrap_samples=2000, seed=0).to_dict()
    assert d["estimate"] == pytest.approx(0.645, abs=5e-4) and d["championMean"] == pytest.approx(0.395)
    assert d["interval"] == pytest.approx([0.584, 0.702], abs=5e-4)
    assert d["differenceInterval"] == pytest.approx([0.204, 0.293], abs=5e-4)
    assert d["ess"] == pytest.approx(230.3, abs=0.05) and d["maxWeight"] == 3.5 and d["trustworthy"]
