"""The environments, registered under short names so configs and RayJob arguments say ``env: corridor``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

from workloads.envs.basketball import BasketballEnv
from workloads.envs.corridor import CorridorEnv
from workloads.envs.corridor_sim import MisspecifiedCorridorEnv
from workloads.envs.maze import MazeEnv


def _cartpole(config: dict[str, Any] | None = None) -> gym.Env:
    return gym.make("CartPole-v1", **dict(config or {}))


ENV_CREATORS: dict[str, Callable[[dict[str, Any] | None], gym.Env]] = {
    "corridor": CorridorEnv,
    "corridor-sim": MisspecifiedCorridorEnv,  # a simulator with a deliberate modelling error
    "cartpole": _cartpole,
    "basketball": BasketballEnv,
    "maze": MazeEnv,
}


class UnknownEnvError(ValueError):
    """The env name is not one of ours."""


def make_env(name: str, config: dict[str, Any] | None = None) -> gym.Env:
    """Build one of the registered environments by short name."""
    if name not in ENV_CREATORS:
        raise UnknownEnvError(f"unknown env {name!r}; choose one of {sorted(ENV_CREATORS)}")
    return ENV_CREATORS[name](config)


def register_with_ray() -> None:
    """Register every env with Ray Tune under its short name (idempotent)."""
    from ray.tune.registry import register_env

    for name, creator in ENV_CREATORS.items():
        register_env(name, creator)
