"""Play full corridor episodes through the HTTP endpoint: sampled actions win, greedy ones cannot."""

from __future__ import annotations

import httpx
import pytest

from workloads.envs.corridor import CorridorEnv

pytestmark = pytest.mark.slow


def play(client: httpx.Client, url: str, episodes: int, *, deterministic: bool, start: int | None = None):
    """Episodes played with actions from the endpoint; returns (returns, reached_goal flags)."""
    env = CorridorEnv()
    returns, reached = [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=i)
        if start is not None:
            env.position = start
            obs = env._obs()
        total, done, terminated = 0.0, False, False
        while not done:
            resp = client.post(url, json={"state": obs.tolist(), "deterministic": deterministic})
            assert resp.status_code == 200, resp.text
            obs, reward, terminated, truncated, _ = env.step(resp.json()["action"])
            total += reward
            done = terminated or truncated
        returns.append(total)
        reached.append(terminated)
    return returns, reached


def test_200_sampled_episodes_reach_the_goal(corridor_url: str) -> None:
    with httpx.Client(timeout=30) as client:
        returns, reached = play(client, f"{corridor_url}/", 200, deterministic=False)
    assert sum(reached) >= 198, f"only {sum(reached)} of 200 episodes reached the goal"
    assert sum(returns) / len(returns) >= 9.3, f"mean return {sum(returns) / len(returns):.3f}"


def test_greedy_policy_fails_from_one_start(corridor_url: str) -> None:
    """The two look-alike cells (state 3) get the same greedy action, so one side loops until truncation."""
    with httpx.Client(timeout=30) as client:
        _, from_left = play(client, f"{corridor_url}/", 3, deterministic=True, start=0)
        _, from_right = play(client, f"{corridor_url}/", 3, deterministic=True, start=6)
    assert (all(from_left) and not any(from_right)) or (all(from_right) and not any(from_left))
