"""The training job (RayJob entrypoint): ``python -m workloads.train_job --env corridor --storage DIR ...``.

A Ray Tune experiment of RLlib PPO trials; at the end the best checkpoint gets a manifest and the run
pointer, and with ``--promote`` the channel pointer when it beats what the channel serves now.
Exit codes: 0 done, 1 training or storage failed, 2 bad configuration (nothing started).
See docs/training.md.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Annotated, Any

import typer

from workloads.training.finalize import TrainingFailed, TrainOutcome
from workloads.training.settings import (
    SettingsError,
    TrainSettings,
    build_settings,
    check_before_ray,
    list_presets,
)

__all__ = [
    "CliArgs",
    "TrainOutcome",
    "TrainSettings",
    "app",
    "main",
    "parse_args",
    "run_training",
    "settings_from_args",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_CONFIG = 0, 1, 2
PROG = "python -m workloads.train_job"


def run_training(settings: TrainSettings) -> TrainOutcome:
    """Run the experiment described by ``settings`` and commit its best checkpoint."""
    from workloads.training.runner import run_training as _run

    return _run(settings)


@dataclass
class CliArgs:
    """The flags as given (None or False: not given, so the preset or config file decides)."""

    config: str | None = None
    preset: str | None = None
    env: str | None = None
    storage: str | None = None
    name: str | None = None
    num_samples: int | None = None
    lr: str | None = None
    stop_iters: int | None = None
    stop_timesteps: int | None = None
    stop_return: float | None = None
    num_env_runners: int | None = None
    num_learners: int | None = None
    num_gpus_per_learner: float | None = None
    num_to_keep: int | None = None
    max_concurrent_trials: int | None = None
    scheduler: str | None = None
    seed: int | None = None
    promote: bool = False
    channel: str | None = None
    force: bool = False
    autoscaler: bool = False
    verbose: bool = False
    outcome_json: str | None = None


class Scheduler(StrEnum):
    """``--scheduler`` values (``scheduler.type``)."""

    none = "none"
    asha = "asha"


def _lr_list(text: str) -> list[float]:
    """``0.01`` or ``0.01,0.001`` as floats; SettingsError (exit 2) for anything else."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SettingsError(f"--lr takes a number or a comma list of numbers, got {text!r}") from None
    if not values:
        raise SettingsError("--lr is empty: give a number or a comma list of numbers")
    return values


app = typer.Typer(
    add_completion=False, help=__doc__, context_settings={"help_option_names": ["-h", "--help"]}
)


@app.command()
def train(
    config: Annotated[
        str | None, typer.Option(help="YAML settings file (may say `extends: <preset>`)")
    ] = None,
    preset: Annotated[str | None, typer.Option(help=f"shipped preset: {', '.join(list_presets())}")] = None,
    env: Annotated[str | None, typer.Option(help="environment: corridor, cartpole, basketball, maze")] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="storage root: a folder, file:// or s3://bucket/prefix (default ./results)"),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="experiment name; the same name again resumes it (default <env>-ppo)")
    ] = None,
    num_samples: Annotated[int | None, typer.Option(help="trials to sample from the search space")] = None,
    lr: Annotated[str | None, typer.Option(help="learning rate, or a comma list to grid-search")] = None,
    stop_iters: Annotated[
        int | None, typer.Option(help="stop a trial after this many training iterations")
    ] = None,
    stop_timesteps: Annotated[
        int | None, typer.Option(help="stop a trial after this many sampled env steps")
    ] = None,
    stop_return: Annotated[
        float | None, typer.Option(help="stop a trial when its mean episode return reaches this")
    ] = None,
    num_env_runners: Annotated[
        int | None, typer.Option(help="remote env runners per trial (0 = sample in the trial)")
    ] = None,
    num_learners: Annotated[
        int | None, typer.Option(help="remote learners per trial (0 = learn in the trial)")
    ] = None,
    num_gpus_per_learner: Annotated[
        float | None, typer.Option(help="GPUs per learner (an autoscaler adds GPU nodes)")
    ] = None,
    num_to_keep: Annotated[
        int | None, typer.Option(help="checkpoints kept per trial, best by return")
    ] = None,
    max_concurrent_trials: Annotated[int | None, typer.Option(help="limit trials running at once")] = None,
    scheduler: Annotated[
        Scheduler | None, typer.Option(help="trial scheduler (asha stops weak trials early)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed for every trial")] = None,
    promote: Annotated[
        bool, typer.Option("--promote", help="also move the channel pointer if better")
    ] = False,
    channel: Annotated[str | None, typer.Option(help="channel to promote to (default: the env name)")] = None,
    force: Annotated[bool, typer.Option("--force", help="promote even if not better")] = False,
    autoscaler: Annotated[
        bool, typer.Option("--autoscaler", help="allow trials bigger than the cluster is now")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="show Ray worker logs")] = False,
    outcome_json: Annotated[
        str | None, typer.Option(help="also write the outcome as JSON to this local file")
    ] = None,
) -> int:
    """Train PPO with Ray Tune, then commit the best checkpoint (manifest, pointers). See docs/training.md."""
    given = locals()
    args = CliArgs(**{f.name: _plain(given[f.name]) for f in fields(CliArgs) if given[f.name] is not None})
    return run_cli(args)


def _plain(value: Any) -> Any:
    """A parsed flag value as the settings take it (enum members become their strings)."""
    return value.value if isinstance(value, StrEnum) else value


def parse_args(argv: list[str]) -> CliArgs:
    """The flags of ``argv`` without running anything (click's UsageError when they do not parse)."""
    command = typer.main.get_command(app)
    with command.make_context(PROG, list(argv)) as ctx:
        return CliArgs(**{k: _plain(v) for k, v in ctx.params.items() if v is not None})


def settings_from_args(args: CliArgs) -> TrainSettings:
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
        value = getattr(args, attr)
        if value is not None and value is not False:  # a flag not given leaves the preset's value
            overrides[key] = value
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
        lrs = _lr_list(args.lr)
        if len(lrs) == 1:
            overrides["ppo"] = {"lr": lrs[0]}
            overrides["search_space"] = {}
        else:
            overrides["search_space"] = {"lr": {"grid_search": lrs}}
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


def run_cli(args: CliArgs) -> int:
    """Validate, train and report; returns the exit code (0 done, 1 failed, 2 bad configuration)."""
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


def main(argv: list[str] | None = None) -> int:
    """The CLI; returns the exit code. Flags that do not parse: one line on stderr, exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = typer.main.get_command(app)
    try:
        code = command.main(
            args=list(sys.argv[1:] if argv is None else argv), prog_name=PROG, standalone_mode=False
        )
    except typer.Abort:
        print("error: aborted", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except typer.TyperException as exc:  # a flag that does not parse (click's UsageError and kin)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"error: {message} (see --help)", file=sys.stderr, flush=True)
        return EXIT_BAD_CONFIG
    return code if isinstance(code, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
