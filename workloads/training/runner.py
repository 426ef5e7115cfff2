"""Run one Tune experiment of PPO trials from TrainSettings, resuming it when storage already holds it."""

from __future__ import annotations

import logging
import os
from typing import Any

from rlops_core import storage
from workloads.training import finalize, reporting, tune_setup
from workloads.training.settings import SEARCHABLE, SettingsError, TrainSettings, check_before_ray
from workloads.training.tune_storage import tune_storage

log = logging.getLogger("rlops.train")
CURVES_NAME = "training_curves.png"


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


def run_training(settings: TrainSettings) -> finalize.TrainOutcome:
    """Train, then commit the best checkpoint (manifest, run pointer, gated channel pointer)."""
    check_before_ray(settings)
    connect(settings.verbose)
    from workloads.envs import register_with_ray

    register_with_ray()
    check_cluster_resources(settings)
    # Tune's own tables and banners off: ConciseProgress prints one line per iteration instead.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Snapshot the experiment state (which trial has which checkpoint) at least every 2 s instead of
    # Tune's 10 s minimum, so a killed driver resumes trials from their latest checkpoints.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    tstore = tune_storage(settings.storage)
    tuner, resumed = _tuner(settings, tstore, [reporting.ConciseProgress(settings.stop.iters)])
    print(
        f"{'resuming' if resumed else 'starting'} experiment {settings.name} in {settings.experiment_uri}",
        flush=True,
    )
    if resumed:
        print("  (settings stored with the experiment apply; finished trials are kept)", flush=True)
    result_grid = tuner.fit()

    searched = [SEARCHABLE[k] for k in settings.search_space]
    rows = reporting.trial_rows(result_grid, searched)
    reporting.print_table(rows, title=f"experiment {settings.name}: trials by return")
    for result in result_grid:
        if result.error:
            log.warning("trial %s failed: %s", result.path, str(result.error).splitlines()[0])

    best = finalize.pick_best(result_grid, tstore.uri_of)
    outcome = finalize.commit(settings, best)
    outcome.trials = [row.__dict__ for row in rows]
    outcome.curves_uri = _write_curves(result_grid, settings)
    return outcome


def _write_curves(result_grid: Any, settings: TrainSettings) -> str | None:
    """Write the training-curves PNG beside the results; a plotting failure is logged, not fatal."""
    try:
        png = reporting.curves_png(result_grid)
        if png is None:
            return None
        uri = storage.join_uri(settings.experiment_uri, CURVES_NAME)
        storage.write_bytes(uri, png)
        return uri
    except Exception as exc:
        log.warning("could not write the training curves: %s", exc)
        return None
