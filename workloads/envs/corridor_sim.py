"""A corridor *simulator* with a deliberate modelling error: it tells the two look-alike cells apart.

Production is the real aliased corridor (``workloads.envs.corridor``): positions 2 and 4 both show
state 3, so no deterministic policy reaches the goal from both ends. This simulator copies the
dynamics, rewards, starts and step cap exactly, but its sensor model is too good: position 4 shows
``3.5`` instead of 3. In the simulator the corridor is fully observable, a deterministic policy
("right up to state 3, left from 3.5 on") reaches the goal in three steps from either end (return
9.8), and PPO learns it, so the training metric beats any policy trained on the real corridor (at
most 9.58). Served in production, that policy sees state 3 on both sides of the goal and goes right
on both: from the right end it walks 6 → 5 → 4 → 5 → 4 … until the step cap (return -2.0), so its
production return is about 3.9, far below the stochastic champion's ~9.4.

The observation and action spaces are the production corridor's (``Box(0, 6, (1,))``,
``Discrete(2)``), so the Serve app serves its checkpoints with the same ``{"state": [x]}`` requests.
Registered as ``corridor-sim`` (docs/environments.md, "corridor-sim").
"""

from __future__ import annotations

import numpy as np

from workloads.envs.corridor import CorridorEnv

# The production table is (1, 2, 3, 4, 3, 5, 6); the simulator's error is the 3.5 at position 4.
SIM_SHOWN_STATES = (1.0, 2.0, 3.0, 4.0, 3.5, 5.0, 6.0)


class MisspecifiedCorridorEnv(CorridorEnv):
    """The corridor as the (wrong) simulator models it: same dynamics, no aliasing at position 4."""

    def _obs(self) -> np.ndarray:
        return np.array([SIM_SHOWN_STATES[self.position]], dtype=np.float32)
