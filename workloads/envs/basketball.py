"""A multi-period newsvendor: a shop orders basketballs every day; orders arrive after a lead time.

Each day (one step):
1. the order placed ``lead_time`` days ago arrives and joins the on-hand stock;
2. the agent orders ``action`` balls (0 .. ``max_order``), paying ``cost`` each now;
3. demand ~ Poisson(``demand_mean``) arrives; sales = min(stock, demand); unmet demand is lost;
4. leftover stock pays ``holding_cost`` each.

reward = ``price`` * sales - ``cost`` * order - ``holding_cost`` * leftover - ``stockout_penalty`` * lost.

Parameters (``env_config`` keys) and defaults:

| key | default | meaning |
|---|---|---|
| price | 10.0 | sale price per ball |
| cost | 4.0 | purchase cost per ball, paid when ordered |
| holding_cost | 0.5 | cost per ball left at the end of a day |
| stockout_penalty | 2.0 | goodwill cost per unit of unmet demand |
| demand_mean | 10.0 | Poisson mean of daily demand |
| demand_mean_range | None | ``[lo, hi]``: draw the mean per episode uniformly (the observation shows it) |
| lead_time | 5 | days between ordering and arrival |
| max_order | 30 | largest daily order (the action space is ``Discrete(max_order + 1)``) |
| initial_inventory | 0 | stock on hand at reset |
| episode_days | 40 | days per episode (then truncation) |

Observation (float32): ``[price, cost, holding_cost, stockout_penalty, demand_mean, on_hand,
pipeline_1 .. pipeline_L, days_left]`` where ``pipeline_i`` arrives in ``i`` days. ``days_left``
makes the finite horizon visible: an order placed with ``lead_time`` or fewer days left never arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np
from scipy.stats import poisson


@dataclass(frozen=True)
class NewsvendorParams:
    """Every parameter of the basketball newsvendor (see the module docstring)."""

    price: float = 10.0
    cost: float = 4.0
    holding_cost: float = 0.5
    stockout_penalty: float = 2.0
    demand_mean: float = 10.0
    demand_mean_range: tuple[float, float] | None = None
    lead_time: int = 5
    max_order: int = 30
    initial_inventory: int = 0
    episode_days: int = 40

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> NewsvendorParams:
        config = dict(config or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown basketball env_config keys: {unknown}")
        if config.get("demand_mean_range") is not None:
            lo, hi = config["demand_mean_range"]
            config["demand_mean_range"] = (float(lo), float(hi))
        params = cls(**config)
        if params.lead_time < 1 or params.max_order < 1 or params.episode_days < 1:
            raise ValueError("lead_time, max_order and episode_days must be at least 1")
        money = ("price", "cost", "holding_cost", "stockout_penalty", "demand_mean", "initial_inventory")
        negative = [name for name in money if getattr(params, name) < 0]
        if negative:
            raise ValueError(f"basketball env_config values must not be negative: {negative}")
        rng = params.demand_mean_range
        if rng is not None and not 0 <= rng[0] <= rng[1]:
            raise ValueError(f"demand_mean_range must be [lo, hi] with 0 <= lo <= hi, got {list(rng)}")
        return params


class BasketballEnv(gym.Env):
    """Gymnasium env for the multi-period newsvendor with Poisson demand and a lead time."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.params = NewsvendorParams.from_config(config)
        p = self.params
        # Everything ever ordered could pile up if nobody buys: the largest possible on-hand stock.
        high_stock = float(p.initial_inventory + p.max_order * p.episode_days)
        low = np.zeros(7 + p.lead_time, dtype=np.float32)
        high = np.array(
            [np.finfo(np.float32).max] * 5
            + [high_stock]
            + [float(p.max_order)] * p.lead_time
            + [float(p.episode_days)],
            dtype=np.float32,
        )
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(p.max_order + 1)
        self.demand_mean = p.demand_mean
        self.on_hand = 0
        self.pipeline = [0] * p.lead_time
        self.day = 0

    def _obs(self) -> np.ndarray:
        p = self.params
        head = [p.price, p.cost, p.holding_cost, p.stockout_penalty, self.demand_mean, float(self.on_hand)]
        tail = [float(x) for x in self.pipeline] + [float(p.episode_days - self.day)]
        return np.array(head + tail, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        p = self.params
        if p.demand_mean_range is not None:
            self.demand_mean = float(self.np_random.uniform(*p.demand_mean_range))
        else:
            self.demand_mean = p.demand_mean
        self.on_hand = p.initial_inventory
        self.pipeline = [0] * p.lead_time
        self.day = 0
        return self._obs(), {}

    def step(self, action: int, demand: int | None = None):
        """Advance one day; ``demand`` may be given to replay a fixed demand path (tests, baselines)."""
        p = self.params
        order = int(action)
        if not 0 <= order <= p.max_order:
            raise ValueError(f"order must be 0..{p.max_order}, got {action!r}")
        arrived = self.pipeline[0]
        self.on_hand += arrived
        self.pipeline = [*self.pipeline[1:], order]
        if demand is None:
            demand = int(self.np_random.poisson(self.demand_mean))
        sales = min(self.on_hand, demand)
        lost = demand - sales
        self.on_hand -= sales
        reward = p.price * sales - p.cost * order - p.holding_cost * self.on_hand - p.stockout_penalty * lost
        self.day += 1
        truncated = self.day >= p.episode_days
        info = {"arrived": arrived, "demand": demand, "sales": sales, "lost": lost, "order": order}
        return self._obs(), float(reward), False, truncated, info


def base_stock_level(params: NewsvendorParams, demand_mean: float | None = None) -> int:
    """The order-up-to level S of the classic base-stock policy.

    With lead time L and daily review, an order covers L + 1 days of Poisson demand. S is the
    critical-ratio quantile of that demand, ratio = underage / (underage + overage) with underage
    ``price - cost + stockout_penalty`` and overage ``holding_cost`` (the lost-sales approximation).
    """
    mean = params.demand_mean if demand_mean is None else demand_mean
    underage = params.price - params.cost + params.stockout_penalty
    if underage <= 0:
        return 0  # a sale is worth no more than the ball costs: stocking up never pays
    ratio = underage / (underage + params.holding_cost)
    if ratio >= 1.0:
        # No overage cost: the quantile is unbounded, so order as much as the policy ever can.
        return params.max_order * (params.lead_time + 1)
    return int(poisson.ppf(ratio, mean * (params.lead_time + 1)))


class BaseStockPolicy:
    """Order up to S: order ``S - (on_hand + pipeline)``, clipped to ``0..max_order``.

    Orders that could not arrive before the episode ends (``days_left <= lead_time``) are skipped.
    """

    def __init__(self, params: NewsvendorParams, level: int | None = None) -> None:
        self.params = params
        self.level = level

    def __call__(self, obs: np.ndarray) -> int:
        demand_mean = float(obs[4])
        level = self.level if self.level is not None else base_stock_level(self.params, demand_mean)
        lead = self.params.lead_time
        if float(obs[6 + lead]) <= lead:
            return 0
        position = float(obs[5]) + float(np.sum(obs[6 : 6 + lead]))
        return int(np.clip(round(level - position), 0, self.params.max_order))


def evaluate_policy(env: BasketballEnv, policy: Any, episodes: int = 20, seed: int = 0) -> float:
    """Mean episode return of ``policy(obs) -> action`` on ``env``."""
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))
