"""Run one Tune experiment of PPO trials from TrainSettings, resuming it when storage already holds it."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from workloads.training import curves, finalize, reporting, tune_setup
from workloads.training.settings import SEARCHABLE, SettingsError, TrainSettings, check_before_ray
from workloads.training.tune_storage import tune_storage

log = logging.getLogger("rlops.train")
CURVES_NAME = curves.CURVES_NAME


def connect(verbose: bool = False) -> None:
    """Use the existing Ray connection, else ``ray.init(address=$RAY_ADDRESS)`` (a local Ray when unset)."""
    import ray

    # RLlib announces on every build that PPO runs on the new API stack; that is the point here.
    logging.getLogger("ray.rllib.algorithms.algorithm_config").setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    ray.init(
        address=os.environ.get("RAY_ADDRESS") or None, logging_level=logging.WARNING, log_to_driver=verbose
    )


def check_cluster_resources(settings: TrainSettings) -> None:
    """Fail when one trial needs more than the whole cluster has, unless an autoscaler will add nodes."""
    import ray

    need = tune_setup.trial_resources(settings)
    have = ray.cluster_resources()
    short = {k: v for k, v in need.items() if v > have.get(k, 0.0) + 1e-9}
    if short and not settings.autoscaler:
        wanted = ", ".join(f"{k}={v:g}" for k, v in sorted(short.items()))
        owned = ", ".join(f"{k}={have.get(k, 0.0):g}" for k in sorted(short))
        raise SettingsError(
            f"one trial needs {wanted} but the cluster has {owned}; lower the resources or pass "
            "--autoscaler when an autoscaler adds nodes on demand"
        )


def _tuner(settings: TrainSettings, tstore: Any, callbacks: list[Any]) -> tuple[Any, bool]:
    """A new Tuner, or the stored experiment restored (finished trials kept, others resumed)."""
    from ray import tune
    from ray.rllib.algorithms.ppo import PPO

    exp_path = tstore.experiment_path(str(settings.name))
    if tune.Tuner.can_restore(exp_path, storage_filesystem=tstore.filesystem):
        tuner = tune.Tuner.restore(
            exp_path,
            trainable=PPO,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=tstore.filesystem,
        )
        return tuner, True
    tuner = tune.Tuner(
        PPO,
        param_space=tune_setup.build_param_space(settings),
        tune_config=tune_setup.build_tune_config(settings),
        run_config=tune_setup.build_run_config(settings, tstore.storage_path, tstore.filesystem, callbacks),
    )
    return tuner, False


def phase_timings(started: float, marks: dict[str, float], events: dict[str, float]) -> dict[str, float]:
    """Seconds per phase of a run, from ``time.monotonic()`` marks and the progress callback's events.

    ``setup`` is connecting and checking; ``trial_start`` is from ``Tuner.fit()`` to the first trial's
    start (the trial actor's process start, its imports of RLlib and torch, building the algorithm and
    its env runners); ``training`` is from there to the last trial's end (iterations plus checkpoints);
    ``tune_shutdown`` is from the last trial's end until ``fit()`` returns; then ``commit``
    (best checkpoint, manifest, pointers) and ``curves`` (the PNG).
    """
    fit_start, fit_end = marks["fit_start"], marks["fit_end"]
    first = events.get("first_trial_start", fit_start)
    last = events.get("last_trial_end", first)
    out = {
        "setup_s": marks["setup_end"] - started,
        "trial_start_s": first - fit_start,
        "training_s": last - first,
        "tune_shutdown_s": fit_end - last,
        "commit_s": marks["commit_end"] - fit_end,
        "curves_s": marks["curves_end"] - marks["commit_end"],
        "total_s": marks["curves_end"] - started,
    }
    return {k: round(max(v, 0.0), 3) for k, v in out.items()}


def run_training(
    settings: TrainSettings,
    timings: dict[str, float] | None = None,
    callbacks: list[Any] | None = None,
) -> finalize.TrainOutcome:
    """Train, then commit the best checkpoint (manifest, run pointer, gated channel pointer).

    ``timings``, when given, is filled with the seconds per phase (see :func:`phase_timings`) and
    ``per_iter_overhead_s`` (wall time per iteration outside the algorithm's ``train()``: checkpoint
    save, result reporting, Tune). ``callbacks`` are extra Tune callbacks (a new experiment only:
    a restored one keeps the callbacks it was created with).
    """
    started = time.monotonic()
    marks: dict[str, float] = {}
    check_before_ray(settings)
    connect(settings.verbose)
    from workloads.envs import register_with_ray

    register_with_ray()
    check_cluster_resources(settings)
    curves.preload()
    # Tune's own tables and banners off: ConciseProgress prints one line per iteration instead.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Snapshot the experiment state (which trial has which checkpoint) at least every 2 s instead of
    # Tune's 10 s minimum, so a killed driver resumes trials from their latest checkpoints.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    tstore = tune_storage(settings.storage)
    progress = reporting.ConciseProgress(settings.stop.iters)
    tuner, resumed = _tuner(settings, tstore, [progress, *(callbacks or [])])
    drawing = curves.CurvesJob(settings.experiment_uri, progress, resumed=resumed)
    progress.on_all_done = drawing.start_early  # draw while Tune shuts its actors down
    marks["setup_end"] = time.monotonic()
    print(
        f"{'resuming' if resumed else 'starting'} experiment {settings.name} in {settings.experiment_uri}",
        flush=True,
    )
    if resumed:
        print("  (settings stored with the experiment apply; finished trials are kept)", flush=True)
    marks["fit_start"] = time.monotonic()
    result_grid = tuner.fit()
    marks["fit_end"] = time.monotonic()

    searched = [SEARCHABLE[k] for k in settings.search_space]
    rows = reporting.trial_rows(result_grid, searched)
    reporting.print_table(rows, title=f"experiment {settings.name}: trials by return")
    for result in result_grid:
        if result.error:
            log.warning("trial %s failed: %s", result.path, str(result.error).splitlines()[0])

    best = finalize.pick_best(result_grid, tstore.uri_of)
    outcome = finalize.commit(settings, best)
    outcome.trials = [row.__dict__ for row in rows]
    marks["commit_end"] = time.monotonic()
    outcome.curves_uri = drawing.finish(result_grid)
    marks["curves_end"] = time.monotonic()
    phases = phase_timings(started, marks, progress.events)
    overhead = progress.overhead_per_iteration()
    print(
        "time: "
        + ", ".join(f"{k[:-2].replace('_', ' ')} {v:.1f}s" for k, v in phases.items())
        + ("" if overhead is None else f"; per iteration outside train() {overhead:.3f}s"),
        flush=True,
    )
    if overhead is not None:
        phases["per_iter_overhead_s"] = round(overhead, 4)
    if timings is not None:
        timings.update(phases)
    return outcome
