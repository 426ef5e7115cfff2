"""The corridor simulator with a deliberate modelling error (``corridor-sim``) against the real corridor.

What the demo's round 3 relies on: the simulator differs from production in exactly one thing (the
cell right of the goal shows 3.5 instead of 3), so a deterministic policy wins in the simulator and
fails from the right end in production. Expected returns are computed exactly by walking the
deterministic policy, and by simulation for the stochastic champion-like policy.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from workloads.envs import make_env
from workloads.envs.corridor import SHOWN_STATES, CorridorEnv
from workloads.envs.corridor_sim import SIM_SHOWN_STATES, MisspecifiedCorridorEnv

# Written out here, so a change to either table fails these tests.
PRODUCTION = [1, 2, 3, 4, 3, 5, 6]
SIMULATOR = [1, 2, 3, 4, 3.5, 5, 6]


def _at(env_cls: type[CorridorEnv], position: int) -> CorridorEnv:
    env = env_cls()
    env.reset(seed=0)
    env.position = position
    return env


def _sim_policy(obs: float) -> int:
    """The simulator's optimum: right up to state 3, left from 3.5 on (deterministic)."""
    return 1 if obs <= 3.0 else 0


def _coin_policy(obs: float, rng: np.random.Generator) -> int:
    """The production optimum (what a champion trained on the real corridor approximates)."""
    if obs == 3.0:
        return int(rng.random() < 0.5)
    return 1 if obs < 3.0 else 0


def _play(env: CorridorEnv, start: int, choose) -> tuple[float, bool]:
    env.reset(seed=0)
    env.position = start
    obs = float(env._obs()[0])
    total, terminated, truncated = 0.0, False, False
    while not (terminated or truncated):
        o, reward, terminated, truncated, _ = env.step(choose(obs))
        obs = float(o[0])
        total += reward
    return total, terminated


def test_registered_under_its_own_id_and_production_is_unchanged() -> None:
    assert isinstance(make_env("corridor-sim"), MisspecifiedCorridorEnv)
    assert type(make_env("corridor")) is CorridorEnv
    assert list(SHOWN_STATES) == PRODUCTION
    assert list(SIM_SHOWN_STATES) == SIMULATOR


def test_same_spaces_as_production_so_the_serve_app_serves_it() -> None:
    sim, prod = make_env("corridor-sim"), make_env("corridor")
    assert sim.observation_space == prod.observation_space
    assert sim.action_space == prod.action_space
    for position in range(7):
        assert sim.observation_space.contains(_at(MisspecifiedCorridorEnv, position)._obs())


def test_passes_the_gymnasium_env_checker_without_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(MisspecifiedCorridorEnv(), skip_render_check=True)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("position", range(7))
@pytest.mark.parametrize("action", [0, 1])
def test_dynamics_and_rewards_match_production_only_the_reading_differs(position: int, action: int) -> None:
    sim = _at(MisspecifiedCorridorEnv, position).step(action)
    prod = _at(CorridorEnv, position).step(action)
    assert sim[1:] == prod[1:]  # reward, terminated, truncated, info (the true position)
    after = sim[4]["position"]
    assert sim[0][0] == pytest.approx(SIMULATOR[after])
    assert prod[0][0] == pytest.approx(PRODUCTION[after])
    assert (sim[0][0] == prod[0][0]) == (after != 4)  # the only difference: the cell right of the goal


def test_resets_match_production_with_the_same_seed() -> None:
    for seed in range(50):
        sim_obs, sim_info = MisspecifiedCorridorEnv().reset(seed=seed)
        prod_obs, prod_info = CorridorEnv().reset(seed=seed)
        assert sim_info == prod_info and sim_obs[0] == prod_obs[0]


def test_the_modelling_error_a_deterministic_policy_wins_in_the_sim_and_fails_in_production() -> None:
    # Simulator: three steps to the goal from either end.
    sim = [_play(MisspecifiedCorridorEnv(), start, _sim_policy) for start in (0, 6)]
    assert sim == [(pytest.approx(9.8), True), (pytest.approx(9.8), True)]
    # Production: from the right end it reads 3 at position 4, goes right, and loops to the step cap.
    prod = [_play(CorridorEnv(), start, _sim_policy) for start in (0, 6)]
    assert prod[0] == (pytest.approx(9.8), True)
    assert prod[1] == (pytest.approx(-2.0), False)
    sim_value = np.mean([r for r, _ in sim])
    prod_value = np.mean([r for r, _ in prod])
    assert sim_value == pytest.approx(9.8) and prod_value == pytest.approx(3.9)


def test_the_coin_champion_beats_the_sim_policy_in_production_but_not_in_the_sim() -> None:
    rng = np.random.default_rng(7)
    episodes = 2000
    prod = np.mean(
        [_play(CorridorEnv(), (0, 6)[i % 2], lambda o: _coin_policy(o, rng))[0] for i in range(episodes)]
    )
    sim = np.mean(
        [
            _play(MisspecifiedCorridorEnv(), (0, 6)[i % 2], lambda o: _coin_policy(o, rng))[0]
            for i in range(episodes)
        ]
    )
    # Exact production value of the coin policy with the 20-step cap: 9.58 (docs/environments.md).
    assert prod == pytest.approx(9.58, abs=0.1)
    assert prod > 3.9 + 5  # the champion's production return is far above the sim policy's 3.9
    assert sim < 9.8  # ...while in the simulator the deterministic policy scores higher
