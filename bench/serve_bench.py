"""Serving benchmark: this app against a bare FastAPI process, RLlib's Serve example and the tutorial pattern.

``python -m bench.serve_bench`` (or ``main()``) trains a corridor policy with the tutorial settings, then
measures req/s and p50/p99 latency at 1 and 16 concurrent connections for each server in one run, plus
replica cold start and hot-swap time, and writes ``bench/results/serve.json`` and ``serve.md``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

TUTORIAL = {"lr": 0.01, "fcnet_hiddens": [20, 20], "rollout_fragment_length": 10, "train_batch": 400}


def corridor_config(seed: int = 0) -> Any:
    """PPOConfig for the corridor with the reference tutorial's settings (new API stack, torch)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    return (
        PPOConfig()
        .environment("corridor")
        .framework("torch")
        .env_runners(num_env_runners=1, rollout_fragment_length=TUTORIAL["rollout_fragment_length"])
        .training(lr=TUTORIAL["lr"], train_batch_size_per_learner=TUTORIAL["train_batch"])
        .rl_module(model_config={"fcnet_hiddens": TUTORIAL["fcnet_hiddens"], "vf_share_layers": True})
        .debugging(seed=seed)
    )


def train_corridor_checkpoints(root: Path, *, iterations: int = 10, early_at: int = 2) -> dict[str, str]:
    """Train PPO on the corridor (Ray must be initialised) and save two manifested checkpoints.

    Returns ``{"early": uri, "final": uri}``: the policy after ``early_at`` iterations and after
    ``iterations``, each an ``Algorithm.save_to_path()`` directory with its ``rlops.json``.
    """
    from ray.rllib.algorithms.ppo import PPO

    from workloads.checkpoints import build_manifest, write_manifest
    from workloads.envs import register_with_ray

    register_with_ray()
    algo = PPO(config=corridor_config())
    out: dict[str, str] = {}
    try:
        for i in range(1, iterations + 1):
            result = algo.train()
            if i in (early_at, iterations):
                name = "early" if i == early_at else "final"
                path = root / f"corridor-{name}"
                algo.save_to_path(str(path))
                metric = float(result["env_runners"]["episode_return_mean"])
                manifest = build_manifest(
                    str(path),
                    metric_name="env_runners/episode_return_mean",
                    metric_value=metric,
                    env_id="corridor",
                    trial_id=f"bench-{name}",
                    experiment="serve-fixture",
                    extra={"iterations": i},
                )
                write_manifest(manifest)
                out[name] = str(path)
    finally:
        algo.stop()
    return out
