"""The serving benchmark's fixture: a corridor PPO policy trained with the reference tutorial's settings.

``train_corridor_checkpoints(root)`` (Ray must be initialised) saves two manifested
``Algorithm.save_to_path()`` checkpoints: an early one (for hot-swap timing) and a final one that has
learned the aliased state. The serving tests (``tests/serve``) use the same fixture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TUTORIAL = {"lr": 0.01, "fcnet_hiddens": [20, 20], "rollout_fragment_length": 10, "train_batch": 400}


def corridor_config(seed: int = 0, num_env_runners: int = 1) -> Any:
    """PPOConfig for the corridor with the reference tutorial's settings (new API stack, torch)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    return (
        PPOConfig()
        .environment("corridor")
        .framework("torch")
        .env_runners(
            num_env_runners=num_env_runners, rollout_fragment_length=TUTORIAL["rollout_fragment_length"]
        )
        .training(lr=TUTORIAL["lr"], train_batch_size_per_learner=TUTORIAL["train_batch"])
        .rl_module(model_config={"fcnet_hiddens": TUTORIAL["fcnet_hiddens"], "vf_share_layers": True})
        .debugging(seed=seed)
    )


def evaluate_corridor(checkpoint: str, episodes: int = 400, seed: int = 0) -> dict[str, float]:
    """Play ``episodes`` corridor episodes with sampled actions from the served policy code (no HTTP)."""
    from workloads.envs.corridor import CorridorEnv
    from workloads.serving.policy import load_policy

    policy = load_policy(checkpoint)
    envs = [CorridorEnv() for _ in range(episodes)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    returns, reached, active = [0.0] * episodes, [False] * episodes, list(range(episodes))
    while active:
        actions = policy.act([obs[i] for i in active], explore=True)
        still = []
        for i, result in zip(active, actions, strict=True):
            obs[i], reward, terminated, truncated, _ = envs[i].step(result.action)
            returns[i] += reward
            reached[i] = reached[i] or terminated
            if not (terminated or truncated):
                still.append(i)
        active = still
    return {"success_rate": sum(reached) / episodes, "mean_return": sum(returns) / episodes}


def _save(algo: Any, path: Path, name: str, iteration: int, metric: float) -> str:
    import shutil

    from rlops_core.checkpoints import build_manifest, write_manifest

    shutil.rmtree(path, ignore_errors=True)
    algo.save_to_path(str(path))
    manifest = build_manifest(
        str(path),
        metric_name="env_runners/episode_return_mean",
        metric_value=metric,
        env_id="corridor",
        trial_id=f"bench-{name}",
        experiment="serve-fixture",
        extra={"iterations": iteration},
    )
    write_manifest(manifest)
    return str(path)


def train_corridor_checkpoints(
    root: Path,
    *,
    iterations: int = 10,
    early_at: int = 2,
    num_env_runners: int = 1,
    max_iterations: int = 30,
    min_success: float = 0.997,
    min_return: float = 9.4,
) -> dict[str, str]:
    """Train PPO on the corridor (Ray must be initialised) and save two manifested checkpoints.

    Returns ``{"early": uri, "final": uri}``: the policy after ``early_at`` iterations and the final one,
    each an ``Algorithm.save_to_path()`` directory with its ``rlops.json``. The final policy is trained
    for ``iterations`` and then, up to ``max_iterations``, until 1000 locally played episodes reach the
    goal at ``min_success`` with mean return ``min_return`` (PPO's outcome varies from run to run; the
    serving tests need a policy that has learned the aliased state).
    """
    from ray.rllib.algorithms.ppo import PPO

    from workloads.envs import register_with_ray

    register_with_ray()
    algo = PPO(config=corridor_config(num_env_runners=num_env_runners))
    out: dict[str, str] = {}
    try:
        for i in range(1, max_iterations + 1):
            result = algo.train()
            metric = float(result["env_runners"]["episode_return_mean"])
            if i == early_at:
                out["early"] = _save(algo, root / "corridor-early", "early", i, metric)
            if i >= iterations:
                out["final"] = _save(algo, root / "corridor-final", "final", i, metric)
                score = evaluate_corridor(out["final"], episodes=1000)
                if score["success_rate"] >= min_success and score["mean_return"] >= min_return:
                    break
    finally:
        algo.stop()
    return out
