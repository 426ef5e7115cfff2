"""The 5x5 maze of the reference book: a seeker walks from (0, 0) to the goal at (4, 4).

Actions: 0 down, 1 left, 2 up, 3 right (moves off the grid leave the seeker in place). The
observation is ``Discrete(25)``: ``5 * row + col``. Reward 1 on reaching the goal (which ends the
episode), 0 elsewhere; ``max_steps`` (default 100) truncates a wandering episode.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

SIZE = 5
MOVES = {0: (1, 0), 1: (0, -1), 2: (-1, 0), 3: (0, 1)}


class MazeEnv(gym.Env):
    """Gymnasium env for the book's maze; config key: ``max_steps``."""

    metadata: dict[str, Any] = {"render_modes": ["ansi"]}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        unknown = sorted(set(config) - {"max_steps"})
        if unknown:
            raise ValueError(f"unknown maze env_config keys: {unknown}")
        self.max_steps = int(config.get("max_steps", 100))
        if self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.goal = (SIZE - 1, SIZE - 1)
        self.observation_space = gym.spaces.Discrete(SIZE * SIZE)
        self.action_space = gym.spaces.Discrete(4)
        self.seeker = (0, 0)
        self.steps = 0

    def _obs(self) -> int:
        return SIZE * self.seeker[0] + self.seeker[1]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.seeker = (0, 0)
        self.steps = 0
        return self._obs(), {}

    def step(self, action: int):
        if int(action) not in MOVES:
            raise ValueError(f"maze action must be 0..3, got {action!r}")
        d_row, d_col = MOVES[int(action)]
        row = min(max(self.seeker[0] + d_row, 0), SIZE - 1)
        col = min(max(self.seeker[1] + d_col, 0), SIZE - 1)
        self.seeker = (row, col)
        self.steps += 1
        terminated = self.seeker == self.goal
        truncated = not terminated and self.steps >= self.max_steps
        return self._obs(), 1.0 if terminated else 0.0, terminated, truncated, {}

    def render(self) -> str:
        rows = []
        for r in range(SIZE):
            rows.append(
                "".join(
                    "S" if (r, c) == self.seeker else "G" if (r, c) == self.goal else "." for c in range(SIZE)
                )
            )
        return "\n".join(rows)
