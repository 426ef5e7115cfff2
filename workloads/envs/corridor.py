"""The mysterious corridor: seven cells, two pairs of which look alike, so only a stochastic policy wins.

Cells (positions 0..6) are shown to the agent as the states ``[1, 2, 3, 4, 3, 5, 6]``: positions 2 and
4 both look like state 3. The episode starts at either end with equal chance; action 0 moves left,
1 moves right (clamped at the ends). Reaching the middle cell (position 3, state 4) ends the episode
with ``reward`` (default 10.0); every other step costs 0.1. A step cap truncates looping episodes.

Decision on the observation at reset: the reference tutorial's ``reset()`` returns the raw position
(0 or 6) while ``step()`` returns shown states. Here ``reset()`` returns the shown state too (1 or 6),
so one observation always means one thing and the served policy sees what it saw in training.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

SHOWN_STATES = (1, 2, 3, 4, 3, 5, 6)
GOAL_POSITION = 3
LEFT, RIGHT = 0, 1


class CorridorEnv(gym.Env):
    """Gymnasium env for the aliased corridor; config keys: ``reward``, ``step_cost``, ``max_steps``."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        unknown = sorted(set(config) - {"reward", "step_cost", "max_steps"})
        if unknown:
            raise ValueError(f"unknown corridor env_config keys: {unknown}")
        self.reward = float(config.get("reward", 10.0))
        self.step_cost = float(config.get("step_cost", 0.1))
        self.max_steps = int(config.get("max_steps", 20))
        if self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.observation_space = gym.spaces.Box(0.0, 6.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.position = 0
        self.steps = 0

    def _obs(self) -> np.ndarray:
        return np.array([SHOWN_STATES[self.position]], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.position = 0 if self.np_random.random() < 0.5 else len(SHOWN_STATES) - 1
        self.steps = 0
        return self._obs(), {"position": self.position}

    def step(self, action: int):
        if not self.action_space.contains(int(action)):
            raise ValueError(f"corridor action must be 0 (left) or 1 (right), got {action!r}")
        delta = -1 if int(action) == LEFT else 1
        self.position = min(max(self.position + delta, 0), len(SHOWN_STATES) - 1)
        self.steps += 1
        terminated = self.position == GOAL_POSITION
        reward = self.reward if terminated else -self.step_cost
        truncated = not terminated and self.steps >= self.max_steps
        return self._obs(), reward, terminated, truncated, {"position": self.position}
