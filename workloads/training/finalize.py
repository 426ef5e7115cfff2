"""The end of a run: pick the best checkpoint, write its manifest, then the pointers (the commit point).

Order (docs/training.md, "The end of a run, and the promotion gate"): checkpoint files (already
written by Tune), then ``rlops.json``, then the run pointer ``<root>/<name>/best_checkpoint.txt``;
with promotion also the channel pointer ``<root>/<channel>/best_checkpoint.txt``, but only when the
new metric beats the metric in the manifest the channel points at now (or when forced).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

from rlops_core import checkpoints, storage
from workloads.training.settings import METRIC, SEARCHABLE, TrainSettings

log = logging.getLogger("rlops.train")


class TrainingFailed(RuntimeError):
    """The experiment finished without a usable checkpoint."""


@dataclass
class BestCheckpoint:
    """The best checkpoint of the experiment by the metric."""

    uri: str
    metric_value: float
    trial_id: str
    config: dict[str, Any]
    iteration: int | None = None


@dataclass
class Promotion:
    """The promotion gate's decision and why."""

    promote: bool
    reason: str
    current_uri: str | None = None
    current_value: float | None = None


@dataclass
class TrainOutcome:
    """What a finished run produced (see docs/training.md)."""

    best_checkpoint_uri: str
    metric_name: str
    metric_value: float
    run_pointer_uri: str
    channel_pointer_uri: str | None
    promoted: bool
    results_uri: str
    manifest_uri: str = ""
    trial_id: str = ""
    promotion_reason: str = ""
    curves_uri: str | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number


def _metric_of(metrics: dict[str, Any]) -> float | None:
    if METRIC in metrics:
        return _finite(metrics[METRIC])
    node: Any = metrics
    for part in METRIC.split("/"):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return _finite(node)


def pick_best(result_grid: Any, uri_of: Any) -> BestCheckpoint:
    """The kept checkpoint with the highest metric over all trials (``uri_of`` maps Tune paths to URIs)."""
    best: BestCheckpoint | None = None
    for result in result_grid:
        trial_id = str((result.metrics or {}).get("trial_id") or result.path.rstrip("/").rsplit("/", 1)[-1])
        for ckpt, metrics in result.best_checkpoints or []:
            value = _metric_of(metrics)
            if value is None:
                continue
            if best is None or value > best.metric_value:
                best = BestCheckpoint(
                    uri=uri_of(ckpt.path),
                    metric_value=value,
                    trial_id=trial_id,
                    config=dict(result.config or {}),
                    iteration=metrics.get("training_iteration"),
                )
    if best is None:
        errors = [str(r.error).splitlines()[0] for r in result_grid if r.error]
        detail = f" (trial errors: {errors[:3]})" if errors else ""
        raise TrainingFailed(f"no trial left a checkpoint with a finite {METRIC}{detail}")
    return best


def ray_job_submission_id() -> str | None:
    """The Ray job submission id when this driver runs as a submitted job (RayJob), else None."""
    explicit = os.environ.get("RAY_JOB_SUBMISSION_ID")
    if explicit:
        return explicit
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        value = json.loads(raw).get("metadata", {}).get("job_submission_id")
    except (ValueError, AttributeError):
        return None
    return str(value) if value else None


def write_run_manifest(settings: TrainSettings, best: BestCheckpoint) -> checkpoints.Manifest:
    """Hash the best checkpoint into ``rlops.json``, write it, and check it reads back complete."""
    searched = {key: best.config.get(SEARCHABLE[key]) for key in settings.search_space}
    manifest = checkpoints.build_manifest(
        best.uri,
        metric_name=METRIC,
        metric_value=best.metric_value,
        env_id=str(best.config.get("env") or settings.env),
        env_config=dict(best.config.get("env_config") or settings.env_config),
        trial_id=best.trial_id,
        experiment=str(settings.name),
        ray_job_id=ray_job_submission_id(),
        extra={
            "algorithm": "PPO",
            "framework": "torch",
            "training_iteration": best.iteration,
            "searched": searched,
            "storage_root": settings.storage,
        },
    )
    checkpoints.write_manifest(manifest)
    checkpoints.verify_checkpoint(best.uri)
    return manifest


def decide_promotion(channel_pointer: str, new_value: float, *, force: bool) -> Promotion:
    """Whether the channel pointer should move to a checkpoint with metric ``new_value``.

    The current value is the metric in the manifest the channel points at now. No pointer, or a
    pointer/manifest that cannot be read, counts as nothing to beat (the latter is logged).
    """
    try:
        current_uri = checkpoints.read_pointer(channel_pointer)
    except checkpoints.CheckpointError as exc:
        if "no pointer" in str(exc):
            return Promotion(True, "the channel has no pointer yet")
        log.warning(
            "channel pointer %s is unreadable (%s); treating it as nothing to beat", channel_pointer, exc
        )
        return Promotion(True, f"the current channel pointer is unreadable ({exc})")
    except storage.StorageError as exc:
        log.warning(
            "cannot read channel pointer %s (%s); treating it as nothing to beat", channel_pointer, exc
        )
        return Promotion(True, f"the current channel pointer is unreadable ({exc})")
    try:
        current = checkpoints.read_manifest(current_uri)
    except (checkpoints.CheckpointError, storage.StorageError) as exc:
        log.warning(
            "the channel's checkpoint %s has no readable manifest (%s); nothing to beat", current_uri, exc
        )
        return Promotion(
            True, f"the channel's current checkpoint has no readable manifest ({exc})", current_uri
        )
    if force:
        return Promotion(True, "forced", current_uri, current.metric_value)
    if new_value > current.metric_value:
        return Promotion(
            True,
            f"{new_value:.4f} beats the live {current.metric_value:.4f}",
            current_uri,
            current.metric_value,
        )
    return Promotion(
        False,
        f"{new_value:.4f} does not beat the live {current.metric_value:.4f} (use --force to promote anyway)",
        current_uri,
        current.metric_value,
    )


def commit(settings: TrainSettings, best: BestCheckpoint) -> TrainOutcome:
    """Manifest, then run pointer, then (when promoting and the gate allows) the channel pointer."""
    manifest = write_run_manifest(settings, best)
    run_pointer = checkpoints.pointer_uri(settings.storage, str(settings.name))
    checkpoints.write_pointer(run_pointer, best.uri)
    outcome = TrainOutcome(
        best_checkpoint_uri=manifest.checkpoint_uri,
        metric_name=METRIC,
        metric_value=best.metric_value,
        run_pointer_uri=run_pointer,
        channel_pointer_uri=None,
        promoted=False,
        results_uri=settings.experiment_uri,
        manifest_uri=storage.join_uri(best.uri, checkpoints.MANIFEST_NAME),
        trial_id=best.trial_id,
    )
    if settings.promote:
        channel_pointer = checkpoints.pointer_uri(settings.storage, str(settings.channel))
        decision = decide_promotion(channel_pointer, best.metric_value, force=settings.force)
        outcome.channel_pointer_uri = channel_pointer
        outcome.promotion_reason = decision.reason
        if decision.promote:
            checkpoints.write_pointer(channel_pointer, best.uri)
            outcome.promoted = True
    return outcome
