"""The base-stock (order-up-to) baseline of the basketball newsvendor: its level, its orders, its return."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workloads.envs.basketball import (
    BaseStockPolicy,
    BasketballEnv,
    NewsvendorParams,
    base_stock_level,
    evaluate_policy,
)


def _poisson_quantile(ratio: float, mean: float) -> int:
    """The smallest S with P(Poisson(mean) <= S) >= ratio, summed term by term (independent of scipy)."""
    term = math.exp(-mean)
    cdf, k = term, 0
    while cdf < ratio:
        k += 1
        term *= mean / k
        cdf += term
    return k


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"lead_time": 2, "demand_mean": 4.0},
        {"price": 6.0, "cost": 5.0, "holding_cost": 2.0, "stockout_penalty": 0.0, "demand_mean": 20.0},
        {"lead_time": 1, "demand_mean": 0.5, "holding_cost": 0.01},
    ],
)
def test_base_stock_level_is_the_critical_ratio_quantile_of_lead_time_demand(config):
    params = NewsvendorParams.from_config(config)
    underage = params.price - params.cost + params.stockout_penalty
    ratio = underage / (underage + params.holding_cost)
    expected = _poisson_quantile(ratio, params.demand_mean * (params.lead_time + 1))
    assert base_stock_level(params) == expected


def test_base_stock_level_edge_cases():
    # no holding cost: the quantile is unbounded, so the level is the most the policy can ever hold
    free_storage = NewsvendorParams(holding_cost=0.0, lead_time=2, max_order=7)
    assert base_stock_level(free_storage) == 7 * 3
    assert BaseStockPolicy(free_storage)(_obs(50, [0, 0], 30)) == 0
    assert BaseStockPolicy(free_storage)(_obs(0, [7, 7], 30)) == 7
    # selling at a loss with no stockout penalty: stocking never pays
    at_a_loss = NewsvendorParams(price=3.0, cost=5.0, stockout_penalty=0.0, holding_cost=0.0)
    assert base_stock_level(at_a_loss) == 0
    assert base_stock_level(NewsvendorParams(price=5.0, cost=5.0, stockout_penalty=0.0)) == 0


def test_base_stock_level_for_the_defaults():
    # ratio 8 / 8.5 over Poisson(60), the demand of lead time 5 plus the review day
    assert base_stock_level(NewsvendorParams()) == 72
    assert base_stock_level(NewsvendorParams(), demand_mean=5.0) == _poisson_quantile(8 / 8.5, 30.0)


def _obs(on_hand: float, pipeline: list[float], days_left: float, demand_mean: float = 10.0) -> np.ndarray:
    return np.array([10.0, 4.0, 0.5, 2.0, demand_mean, on_hand, *pipeline, days_left], dtype=np.float32)


def test_base_stock_policy_orders_up_to_the_level():
    params = NewsvendorParams()
    policy = BaseStockPolicy(params)
    assert policy(_obs(40, [5, 5, 5, 5, 5], 30)) == 72 - 65
    assert policy(_obs(0, [0, 0, 0, 0, 0], 30)) == 30  # clipped to max_order
    assert policy(_obs(80, [0, 0, 0, 0, 0], 30)) == 0  # above the level: order nothing
    assert policy(_obs(10, [0, 0, 0, 0, 0], 30, demand_mean=5.0)) == base_stock_level(params, 5.0) - 10
    assert BaseStockPolicy(params, level=20)(_obs(10, [1, 1, 1, 1, 1], 30)) == 5


def test_base_stock_policy_skips_orders_that_cannot_arrive_in_time():
    policy = BaseStockPolicy(NewsvendorParams())
    assert policy(_obs(0, [0, 0, 0, 0, 0], 6)) == 30  # arrives on the last day
    assert policy(_obs(0, [0, 0, 0, 0, 0], 5)) == 0  # would arrive after the episode


def test_baseline_beats_naive_policies():
    env = BasketballEnv()
    episodes = 30
    # evaluate_policy reseeds each episode, so every policy faces the same demand paths.
    baseline = evaluate_policy(env, BaseStockPolicy(env.params), episodes=episodes)
    nothing = evaluate_policy(env, lambda obs: 0, episodes=episodes)
    always_max = evaluate_policy(env, lambda obs: env.params.max_order, episodes=episodes)
    order_the_mean = evaluate_policy(env, lambda obs: 10, episodes=episodes)
    assert baseline > 1500.0
    assert nothing < 0.0 and always_max < 0.0
    assert baseline > order_the_mean + 100.0
    # Misplacing the level well below or above does worse than the formula's level.
    level = base_stock_level(env.params)
    for wrong in (level - 15, level + 10):
        assert evaluate_policy(env, BaseStockPolicy(env.params, level=wrong), episodes=episodes) < baseline


def test_baseline_adapts_to_a_demand_mean_shown_in_the_observation():
    env = BasketballEnv({"demand_mean_range": [5, 15]})
    adaptive = evaluate_policy(env, BaseStockPolicy(env.params), episodes=30)
    fixed_ten = evaluate_policy(env, lambda obs: 10, episodes=30)
    assert adaptive > fixed_ten + 300.0


def test_evaluate_policy_is_reproducible():
    env = BasketballEnv({"episode_days": 10})
    policy = BaseStockPolicy(env.params)
    first = evaluate_policy(env, policy, episodes=5, seed=3)
    assert evaluate_policy(env, policy, episodes=5, seed=3) == first
    assert evaluate_policy(env, policy, episodes=5, seed=4) != first
