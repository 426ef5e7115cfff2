"""Exact dynamics of the four registered environments: corridor, maze, basketball newsvendor, cartpole."""

from __future__ import annotations

import itertools
import re
import warnings
from functools import cache

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from workloads.envs import ENV_CREATORS, UnknownEnvError, make_env
from workloads.envs.basketball import BasketballEnv
from workloads.envs.corridor import CorridorEnv
from workloads.envs.maze import MazeEnv

# Written out here rather than imported, so a change to the env's table fails these tests.
SHOWN = [1, 2, 3, 4, 3, 5, 6]
GOAL = 3


# --------------------------------------------------------------------------------------------- registry


def test_registry_names_and_unknown_env():
    assert set(ENV_CREATORS) == {"corridor", "corridor-sim", "cartpole", "basketball", "maze"}
    assert isinstance(make_env("corridor"), CorridorEnv)
    assert isinstance(make_env("maze"), MazeEnv)
    assert isinstance(make_env("basketball"), BasketballEnv)
    cartpole = make_env("cartpole")
    assert cartpole.spec is not None and cartpole.spec.id == "CartPole-v1"
    assert cartpole.action_space == gym.spaces.Discrete(2)
    with pytest.raises(UnknownEnvError, match=r"unknown env 'nope'.*corridor"):
        make_env("nope")


def test_registry_passes_config_through():
    assert make_env("corridor", {"reward": 3.0}).reward == 3.0
    assert make_env("maze", {"max_steps": 7}).max_steps == 7
    assert make_env("basketball", {"lead_time": 2}).params.lead_time == 2
    assert make_env("cartpole", {"max_episode_steps": 50}).spec.max_episode_steps == 50


@pytest.mark.parametrize("name", ["corridor", "maze", "basketball", "cartpole"])
def test_gymnasium_env_checker_passes(name):
    env = make_env(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Rendering is not part of the contract (CartPole's needs pygame, which is not installed).
        check_env(env.unwrapped, skip_render_check=True)
    ours = [str(w.message) for w in caught if name != "cartpole"]
    assert ours == [], ours  # our own envs pass without a single warning


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        ("corridor", {"rewrd": 1.0}, "unknown corridor env_config keys"),
        ("corridor", {"max_steps": 0}, "max_steps must be at least 1"),
        ("maze", {"size": 6}, "unknown maze env_config keys"),
        ("maze", {"max_steps": 0}, "max_steps must be at least 1"),
    ],
)
def test_bad_config_is_rejected(name, config, message):
    with pytest.raises(ValueError, match=message):
        make_env(name, config)


# --------------------------------------------------------------------------------------------- corridor


def _corridor_at(position: int, **config) -> CorridorEnv:
    env = CorridorEnv(config or None)
    env.reset(seed=0)
    env.position = position
    return env


@cache
def _seed_for_start(start: int) -> int:
    for seed in range(100):
        _, info = CorridorEnv().reset(seed=seed)
        if info["position"] == start:
            return seed
    raise AssertionError(f"no seed in 0..99 starts at {start}")


def test_corridor_spaces():
    env = CorridorEnv()
    assert env.observation_space == gym.spaces.Box(0.0, 6.0, (1,), np.float32)
    assert env.action_space == gym.spaces.Discrete(2)
    assert (env.reward, env.step_cost, env.max_steps) == (10.0, 0.1, 20)


# Position 3 is the goal: an episode ends on entering it, so no step starts there.
@pytest.mark.parametrize("position", [0, 1, 2, 4, 5, 6])
@pytest.mark.parametrize("action", [0, 1])
def test_corridor_every_transition(position, action):
    env = _corridor_at(position)
    expected = min(max(position + (1 if action == 1 else -1), 0), 6)
    obs, reward, terminated, truncated, info = env.step(action)
    assert info["position"] == expected
    assert obs.dtype == np.float32 and obs.shape == (1,)
    assert obs[0] == SHOWN[expected]
    assert env.observation_space.contains(obs)
    assert terminated is (expected == GOAL)
    assert truncated is False
    assert reward == (10.0 if expected == GOAL else -0.1)


def test_corridor_clamps_at_both_ends():
    env = _corridor_at(0)
    for _ in range(3):
        obs, *_rest, info = env.step(0)
        assert info["position"] == 0 and obs[0] == 1.0
    env = _corridor_at(6)
    for _ in range(3):
        obs, *_rest, info = env.step(1)
        assert info["position"] == 6 and obs[0] == 6.0


def test_corridor_aliasing_positions_2_and_4_show_3():
    left = _corridor_at(1).step(1)
    right = _corridor_at(5).step(0)
    assert left[4]["position"] == 2 and right[4]["position"] == 4
    assert left[0][0] == right[0][0] == 3.0
    shown = [_corridor_at(p - 1 if p > 0 else 0).step(1 if p > 0 else 0)[0][0] for p in range(7)]
    assert shown == SHOWN


def test_corridor_reset_returns_shown_state_and_both_starts_occur():
    env = CorridorEnv()
    starts = {}
    for seed in range(40):
        obs, info = env.reset(seed=seed)
        assert info["position"] in (0, 6)
        assert obs[0] == SHOWN[info["position"]]  # shown state 1 or 6, never the raw position
        assert env.observation_space.contains(obs)
        starts[info["position"]] = starts.get(info["position"], 0) + 1
    assert set(starts) == {0, 6}
    assert 8 <= starts[0] <= 32  # a fair coin over 40 seeds
    first = [CorridorEnv().reset(seed=s)[1]["position"] for s in range(10)]
    again = [CorridorEnv().reset(seed=s)[1]["position"] for s in range(10)]
    assert first == again


def test_corridor_reward_and_step_cost_come_from_config():
    env = _corridor_at(2, reward=5.0, step_cost=0.5)
    assert env.step(1)[1:3] == (5.0, True)
    env = _corridor_at(1, reward=5.0, step_cost=0.5)
    assert env.step(0)[1:3] == (-0.5, False)


def test_corridor_truncates_at_max_steps():
    env = CorridorEnv({"max_steps": 4})
    env.reset(seed=_seed_for_start(0))
    for step in range(1, 5):
        _, reward, terminated, truncated, _ = env.step(0)
        assert reward == -0.1 and terminated is False
        assert truncated is (step == 4)


def test_corridor_goal_on_the_last_allowed_step_terminates_not_truncates():
    env = CorridorEnv({"max_steps": 3})
    env.reset(seed=_seed_for_start(0))
    results = [env.step(1) for _ in range(3)]
    assert [r[2] for r in results] == [False, False, True]
    assert [r[3] for r in results] == [False, False, False]
    assert sum(r[1] for r in results) == pytest.approx(10.0 - 0.2)


@pytest.mark.parametrize("action", [2, -1, 7])
def test_corridor_invalid_action(action):
    env = CorridorEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=re.escape("corridor action must be 0 (left) or 1 (right)")):
        env.step(action)


def _run_corridor(policy, start: int, rng: np.random.Generator | None = None) -> tuple[bool, float]:
    """Play one episode from ``start``; returns (reached the goal, return)."""
    env = CorridorEnv()
    obs, info = env.reset(seed=_seed_for_start(start))
    assert info["position"] == start
    total = 0.0
    while True:
        obs, reward, terminated, truncated, _ = env.step(policy(int(obs[0]), rng))
        total += reward
        if terminated or truncated:
            return terminated, total


def test_every_deterministic_policy_fails_from_one_start():
    states = [1, 2, 3, 5, 6]  # every state a step can start from (4 is the goal)
    reach_counts = {0: 0, 1: 0, 2: 0}
    for actions in itertools.product([0, 1], repeat=len(states)):
        table = dict(zip(states, actions, strict=True))
        reached = [_run_corridor(lambda s, _rng, t=table: t[s], start)[0] for start in (0, 6)]
        reach_counts[sum(reached)] += 1
        assert not all(reached), f"deterministic policy {table} reached the goal from both starts"
    assert sum(reach_counts.values()) == 32
    assert reach_counts[1] > 0  # the test is not vacuous: some policies do win from one side


def _coin_policy(state: int, rng: np.random.Generator) -> int:
    if state == 3:
        return int(rng.integers(2))
    return 1 if state in (1, 2) else 0


@cache
def _coin_value(position: int, steps_left: int) -> float:
    """Exact expected return of the coin policy, by recursion over (position, steps left)."""
    state = SHOWN[position]
    moves = [0, 1] if state == 3 else [1 if state in (1, 2) else 0]
    value = 0.0
    for action in moves:
        nxt = min(max(position + (1 if action else -1), 0), 6)
        if nxt == GOAL:
            value += 10.0
        elif steps_left == 1:
            value += -0.1
        else:
            value += -0.1 + _coin_value(nxt, steps_left - 1)
    return value / len(moves)


def test_coin_flip_policy_reaches_goal_from_both_starts():
    exact = 0.5 * (_coin_value(0, 20) + _coin_value(6, 20))
    assert exact == pytest.approx(9.6, abs=0.03)  # 9.6 without the cap; the cap costs about 0.02
    rng = np.random.default_rng(7)
    returns, reached = [], {0: 0, 6: 0}
    for episode in range(2000):
        start = 0 if episode % 2 == 0 else 6
        ok, total = _run_corridor(_coin_policy, start, rng)
        reached[start] += ok
        returns.append(total)
    assert reached[0] > 0.99 * 1000 and reached[6] > 0.99 * 1000
    assert np.mean(returns) == pytest.approx(exact, abs=0.06)
    assert np.mean(returns) == pytest.approx(9.5, abs=0.15)  # the design's "about 9.5"


# --------------------------------------------------------------------------------------------- maze


def _maze_at(row: int, col: int, **config) -> MazeEnv:
    env = MazeEnv(config or None)
    env.reset(seed=0)
    env.seeker = (row, col)
    return env


def test_maze_spaces_and_reset():
    env = MazeEnv()
    assert env.observation_space == gym.spaces.Discrete(25)
    assert env.action_space == gym.spaces.Discrete(4)
    assert env.max_steps == 100
    assert env.reset(seed=3) == (0, {})


@pytest.mark.parametrize(("action", "cell"), [(0, (3, 2)), (1, (2, 1)), (2, (1, 2)), (3, (2, 3))])
def test_maze_moves_from_the_centre(action, cell):
    obs, reward, terminated, truncated, _ = _maze_at(2, 2).step(action)
    assert obs == 5 * cell[0] + cell[1]
    assert (reward, terminated, truncated) == (0.0, False, False)


@pytest.mark.parametrize(
    ("start", "action"),
    [((0, 0), 1), ((0, 0), 2), ((0, 3), 2), ((2, 0), 1), ((4, 2), 0), ((1, 4), 3), ((4, 0), 0)],
)
def test_maze_borders_keep_the_seeker_in_place(start, action):
    env = _maze_at(*start)
    obs, reward, *_ = env.step(action)
    assert obs == 5 * start[0] + start[1] and env.seeker == start and reward == 0.0


def test_maze_observation_encoding_covers_every_cell():
    env = MazeEnv()
    env.reset(seed=0)
    seen = {0: (0, 0)}
    for row in range(5):
        for _ in range(4):
            obs, *_ = env.step(3 if row % 2 == 0 else 1)
            seen[int(obs)] = env.seeker
        if row < 4:
            obs, *_ = env.step(0)
            seen[int(obs)] = env.seeker
    assert seen == {5 * r + c: (r, c) for r in range(5) for c in range(5)}


@pytest.mark.parametrize(("start", "action"), [((4, 3), 3), ((3, 4), 0)])
def test_maze_goal_ends_the_episode_with_reward_1(start, action):
    obs, reward, terminated, truncated, _ = _maze_at(*start).step(action)
    assert (obs, reward, terminated, truncated) == (24, 1.0, True, False)


def test_maze_shortest_path_returns_1():
    env = MazeEnv()
    env.reset(seed=0)
    rewards = [env.step(a)[1] for a in [3, 3, 3, 3, 0, 0, 0]]
    assert rewards == [0.0] * 7
    assert env.step(0)[1:4] == (1.0, True, False)


def test_maze_truncates_at_max_steps_and_rejects_bad_actions():
    env = MazeEnv({"max_steps": 5})
    env.reset(seed=0)
    flags = [env.step(1)[3] for _ in range(5)]
    assert flags == [False, False, False, False, True]
    with pytest.raises(ValueError, match=re.escape("maze action must be 0..3")):
        env.step(4)


def test_maze_render_marks_seeker_and_goal():
    env = _maze_at(1, 2)
    assert env.render().splitlines() == [".....", "..S..", ".....", ".....", "....G"]


# --------------------------------------------------------------------------------------------- newsvendor

ACCOUNTING_CONFIG = {
    "price": 10.0,
    "cost": 4.0,
    "holding_cost": 0.5,
    "stockout_penalty": 2.0,
    "demand_mean": 4.0,
    "lead_time": 2,
    "max_order": 10,
    "initial_inventory": 3,
    "episode_days": 6,
}
# day: (order, demand, arrived, sales, lost, on_hand after, pipeline after, reward), worked out by hand:
# reward = 10 * sales - 4 * order - 0.5 * on_hand_after - 2 * lost
ACCOUNTING_DAYS = [
    (5, 2, 0, 2, 0, 1, [0, 5], -0.5),  # 20 - 20 - 0.5
    (0, 4, 0, 1, 3, 0, [5, 0], 4.0),  # 10 - 0 - 0 - 6
    (7, 3, 5, 3, 0, 2, [0, 7], 1.0),  # the day-0 order of 5 arrives on day 2; 30 - 28 - 1
    (2, 6, 0, 2, 4, 0, [7, 2], 4.0),  # 20 - 8 - 0 - 8
    (0, 1, 7, 1, 0, 6, [2, 0], 7.0),  # the day-2 order of 7 arrives on day 4; 10 - 0 - 3
    (1, 5, 2, 5, 0, 3, [0, 1], 44.5),  # 50 - 4 - 1.5
]


def test_newsvendor_spaces_and_reset_observation():
    env = BasketballEnv(ACCOUNTING_CONFIG)
    assert env.action_space == gym.spaces.Discrete(11)
    assert env.observation_space.shape == (7 + 2,)
    obs, info = env.reset(seed=0)
    assert info == {}
    assert obs.dtype == np.float32
    assert obs.tolist() == [10.0, 4.0, 0.5, 2.0, 4.0, 3.0, 0.0, 0.0, 6.0]
    assert BasketballEnv().observation_space.shape == (12,)  # default lead time 5


def test_newsvendor_accounting_day_by_day():
    env = BasketballEnv(ACCOUNTING_CONFIG)
    env.reset(seed=0)
    for day, (order, demand, arrived, sales, lost, on_hand, pipeline, reward) in enumerate(ACCOUNTING_DAYS):
        obs, got_reward, terminated, truncated, info = env.step(order, demand=demand)
        assert info == {"arrived": arrived, "demand": demand, "sales": sales, "lost": lost, "order": order}
        assert got_reward == pytest.approx(reward), f"day {day}"
        assert obs[:5].tolist() == [10.0, 4.0, 0.5, 2.0, 4.0]
        assert obs[5] == on_hand, f"day {day}"
        assert obs[6:8].tolist() == pipeline, f"day {day}"
        assert obs[8] == 6 - (day + 1)  # days_left
        assert env.observation_space.contains(obs)
        assert terminated is False
        assert truncated is (day == 5)


def test_newsvendor_order_arrives_exactly_lead_time_days_later():
    env = BasketballEnv()  # default lead time 5
    env.reset(seed=0)
    arrivals, on_hand, first_slot = [], [], []
    for day in range(8):
        obs, reward, *_, info = env.step(9 if day == 0 else 0, demand=0)
        arrivals.append(info["arrived"])
        on_hand.append(float(obs[5]))
        first_slot.append(float(obs[6]))
        if day == 0:
            assert obs[6:11].tolist() == [0, 0, 0, 0, 9]  # the newest order sits in the last slot
            assert reward == pytest.approx(-4.0 * 9)
    assert arrivals == [0, 0, 0, 0, 0, 9, 0, 0]
    assert on_hand == [0, 0, 0, 0, 0, 9, 9, 9]
    assert first_slot == [0, 0, 0, 0, 9, 0, 0, 0]  # pipeline_1 is what arrives on the next day


def test_newsvendor_truncates_at_episode_days_and_days_left_counts_down():
    env = BasketballEnv({"episode_days": 4})
    obs, _ = env.reset(seed=1)
    days_left = [float(obs[-1])]
    truncations = []
    for _ in range(4):
        obs, _, terminated, truncated, _ = env.step(3)
        assert terminated is False
        days_left.append(float(obs[-1]))
        truncations.append(truncated)
    assert days_left == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert truncations == [False, False, False, True]


def test_newsvendor_random_demand_is_poisson_with_the_configured_mean():
    env = BasketballEnv({"demand_mean": 6.0, "episode_days": 2000})
    env.reset(seed=5)
    demands = [env.step(0)[4]["demand"] for _ in range(2000)]
    assert np.mean(demands) == pytest.approx(6.0, abs=0.25)
    assert np.var(demands) == pytest.approx(6.0, rel=0.15)  # Poisson: variance equals mean


def test_newsvendor_demand_mean_range_is_drawn_per_episode_and_shown():
    env = BasketballEnv({"demand_mean_range": [5, 15]})
    means = [float(env.reset(seed=s)[0][4]) for s in range(20)]
    assert all(5.0 <= m <= 15.0 for m in means)
    assert len(set(means)) == 20


def test_newsvendor_observation_stays_in_space_when_stock_piles_up():
    env = BasketballEnv({"demand_mean": 0.0, "episode_days": 100})
    env.reset(seed=0)
    for _ in range(100):
        obs, *_ = env.step(30)
        assert env.observation_space.contains(obs)
    assert obs[5] == 30 * 95


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"prize": 10.0}, r"unknown basketball env_config keys: \['prize'\]"),
        ({"lead_time": 0}, "at least 1"),
        ({"max_order": 0}, "at least 1"),
        ({"episode_days": 0}, "at least 1"),
        ({"price": -1.0}, "must not be negative"),
        ({"holding_cost": -0.1}, "must not be negative"),
        ({"demand_mean_range": [8, 3]}, "demand_mean_range"),
    ],
)
def test_newsvendor_config_validation(config, message):
    with pytest.raises(ValueError, match=message):
        BasketballEnv(config)


@pytest.mark.parametrize("order", [-1, 31])
def test_newsvendor_rejects_orders_outside_the_action_space(order):
    env = BasketballEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=re.escape("order must be 0..30")):
        env.step(order)
