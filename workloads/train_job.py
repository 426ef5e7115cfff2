"""The training job (RayJob entrypoint): ``python -m workloads.train_job --env corridor --storage DIR ...``.

A Ray Tune experiment of RLlib PPO trials; at the end the best checkpoint gets a manifest and the run
pointer, and with ``--promote`` the channel pointer when it beats what the channel serves now.
Exit codes: 0 done, 1 training or storage failed, 2 bad configuration (nothing started).
See docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from typing import Any

from workloads.training.finalize import TrainingFailed, TrainOutcome
from workloads.training.settings import (
    SettingsError,
    TrainSettings,
    build_settings,
    check_before_ray,
    list_presets,
)

__all__ = ["TrainOutcome", "TrainSettings", "build_parser", "main", "run_training", "settings_from_args"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_CONFIG = 0, 1, 2


def run_training(settings: TrainSettings) -> TrainOutcome:
    """Run the experiment described by ``settings`` and commit its best checkpoint."""
    from workloads.training.runner import run_training as _run

    return _run(settings)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(EXIT_BAD_CONFIG, f"error: {message} (see --help)\n")


def _lr_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--lr takes a number or a comma list of numbers, got {text!r}"
        ) from exc
    if not values:
        raise argparse.ArgumentTypeError("--lr is empty")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m workloads.train_job", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML settings file (may say `extends: <preset>`)")
    p.add_argument("--preset", help=f"shipped preset: {', '.join(list_presets())}")
    p.add_argument("--env", help="environment: corridor, cartpole, basketball, maze")
    p.add_argument(
        "--storage", help="storage root: a folder, file:// or s3://bucket/prefix (default ./results)"
    )
    p.add_argument("--name", help="experiment name; the same name again resumes it (default <env>-ppo)")
    p.add_argument("--num-samples", type=int, help="trials to sample from the search space")
    p.add_argument("--lr", type=_lr_list, help="learning rate, or a comma list to grid-search")
    p.add_argument("--stop-iters", type=int, help="stop a trial after this many training iterations")
    p.add_argument("--stop-timesteps", type=int, help="stop a trial after this many sampled env steps")
    p.add_argument("--stop-return", type=float, help="stop a trial when its mean episode return reaches this")
    p.add_argument(
        "--num-env-runners", type=int, help="remote env runners per trial (0 = sample in the trial)"
    )
    p.add_argument("--num-learners", type=int, help="remote learners per trial (0 = learn in the trial)")
    p.add_argument(
        "--num-gpus-per-learner", type=float, help="GPUs per learner (an autoscaler adds GPU nodes)"
    )
    p.add_argument("--num-to-keep", type=int, help="checkpoints kept per trial, best by return")
    p.add_argument("--max-concurrent-trials", type=int, help="limit trials running at once")
    p.add_argument(
        "--scheduler", choices=["none", "asha"], help="trial scheduler (asha stops weak trials early)"
    )
    p.add_argument("--seed", type=int, help="random seed for every trial")
    p.add_argument(
        "--promote", action="store_true", default=None, help="also move the channel pointer if better"
    )
    p.add_argument("--channel", help="channel to promote to (default: the env name)")
    p.add_argument("--force", action="store_true", default=None, help="promote even if not better")
    p.add_argument(
        "--autoscaler", action="store_true", default=None, help="allow trials bigger than the cluster is now"
    )
    p.add_argument("--verbose", action="store_true", default=None, help="show Ray worker logs")
    p.add_argument("--outcome-json", help="also write the outcome as JSON to this local file")
    return p


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """Merge preset, config file and the flags that were given into validated settings."""
    overrides: dict[str, Any] = {}
    plain = {
        "env": "env",
        "storage": "storage",
        "name": "name",
        "num_samples": "num_samples",
        "seed": "seed",
        "max_concurrent_trials": "max_concurrent_trials",
        "promote": "promote",
        "channel": "channel",
        "force": "force",
        "autoscaler": "autoscaler",
        "verbose": "verbose",
    }
    for attr, key in plain.items():
        if getattr(args, attr) is not None:
            overrides[key] = getattr(args, attr)
    nested = {
        "stop_iters": ("stop", "iters"),
        "stop_timesteps": ("stop", "timesteps"),
        "stop_return": ("stop", "return"),
        "num_env_runners": ("resources", "num_env_runners"),
        "num_learners": ("resources", "num_learners"),
        "num_gpus_per_learner": ("resources", "num_gpus_per_learner"),
        "num_to_keep": ("checkpoint", "num_to_keep"),
        "scheduler": ("scheduler", "type"),
    }
    for attr, (section, key) in nested.items():
        if getattr(args, attr) is not None:
            overrides.setdefault(section, {})[key] = getattr(args, attr)
    if args.lr is not None:
        if len(args.lr) == 1:
            overrides["ppo"] = {"lr": args.lr[0]}
            overrides["search_space"] = {}
        else:
            overrides["search_space"] = {"lr": {"grid_search": args.lr}}
    if not args.preset and not args.config and "env" not in overrides:
        raise SettingsError("say what to train: --env, --preset or --config")
    return build_settings(preset=args.preset, config_file=args.config, overrides=overrides)


def _print_outcome(outcome: TrainOutcome) -> None:
    print(f"best checkpoint: {outcome.best_checkpoint_uri}")
    print(f"  {outcome.metric_name} = {outcome.metric_value:.4f} (trial {outcome.trial_id})")
    print(f"manifest: {outcome.manifest_uri}")
    print(f"run pointer: {outcome.run_pointer_uri}")
    if outcome.channel_pointer_uri:
        verdict = "promoted" if outcome.promoted else "NOT promoted"
        print(f"channel pointer: {outcome.channel_pointer_uri} ({verdict}: {outcome.promotion_reason})")
    if outcome.curves_uri:
        print(f"training curves: {outcome.curves_uri}")
    print(f"results: {outcome.results_uri}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """The CLI; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        check_before_ray(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_CONFIG
    try:
        outcome = run_training(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_CONFIG
    except TrainingFailed as exc:
        print(f"error: training failed: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except Exception as exc:
        from rlops_core import checkpoints, storage

        if isinstance(exc, storage.StorageError | checkpoints.CheckpointError):
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        raise
    _print_outcome(outcome)
    if args.outcome_json:
        with open(args.outcome_json, "w") as fh:
            json.dump(asdict(outcome), fh, indent=2, default=str)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
