"""Read the pointer cheaply and decide whether the checkpoint it names may go live.

Two kinds of "no": a :class:`Refusal` is final for that pointer version (bad pointer, bad checkpoint,
a gate says no), while a :class:`TransientError` (storage unreachable) is retried on the next poll.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlops_core import checkpoints, storage

from .spec import RolloutSpec


class Refusal(Exception):
    """The pointer or the checkpoint it names must not be promoted; ``reason`` is a short code."""

    def __init__(
        self, reason: str, message: str, checkpoint_uri: str | None = None, etag: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.checkpoint_uri = checkpoint_uri
        self.etag = etag


class TransientError(Exception):
    """Something that may work on the next poll (storage or an API unreachable)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class PointerRead:
    """A pointer version: the checkpoint URI it names (None if unchanged) and its ETag."""

    checkpoint_uri: str | None
    etag: str


@dataclass(frozen=True)
class Candidate:
    """A checkpoint that passed every check."""

    checkpoint_uri: str
    manifest: checkpoints.Manifest


def read_pointer(pointer_uri: str, etag: str | None) -> PointerRead:
    """One conditional GET; ``checkpoint_uri`` is None when the pointer has not changed since ``etag``."""
    try:
        data, new_etag = storage.read_if_changed(pointer_uri, etag)
    except storage.ObjectNotFound as exc:
        raise Refusal("PointerMissing", f"no pointer at {pointer_uri}") from exc
    except storage.StorageError as exc:
        raise TransientError("StorageUnreachable", f"cannot read pointer {pointer_uri}: {exc}") from exc
    if data is None:
        return PointerRead(None, new_etag)
    try:
        uri = checkpoints.parse_pointer(data)
    except checkpoints.CheckpointError as exc:
        raise Refusal("PointerInvalid", f"pointer {pointer_uri}: {exc}", etag=new_etag) from exc
    return PointerRead(storage.parse_uri(uri).uri, new_etag)


def check_candidate(
    spec: RolloutSpec, checkpoint_uri: str, live_metric: tuple[str, float] | None = None
) -> Candidate:
    """Prefix, manifest (complete, sizes, small files' sha256) and metric gates; Refusal if any fails."""
    if not storage.is_within(checkpoint_uri, spec.prefixes):
        raise Refusal(
            "OutsideAllowedPrefixes",
            f"{checkpoint_uri} is outside the allowed prefixes {spec.prefixes}",
            checkpoint_uri,
        )
    try:
        manifest = checkpoints.verify_checkpoint(checkpoint_uri, max_hash_bytes=spec.max_hash_bytes)
    except checkpoints.CheckpointError as exc:
        raise Refusal("CheckpointInvalid", str(exc), checkpoint_uri) from exc
    except storage.StorageError as exc:
        raise TransientError("StorageUnreachable", f"cannot check {checkpoint_uri}: {exc}") from exc
    value = manifest.metric_value
    if value != value:  # NaN
        raise Refusal("MetricInvalid", f"{checkpoint_uri} records a NaN metric", checkpoint_uri)
    if spec.min_metric is not None and value < spec.min_metric:
        raise Refusal(
            "BelowMinMetric",
            f"{manifest.metric_name}={value:g} is below minMetric {spec.min_metric:g}",
            checkpoint_uri,
        )
    if spec.require_improvement and live_metric is not None:
        live_name, live_value = live_metric
        if live_name and live_name != manifest.metric_name:
            raise Refusal(
                "MetricMismatch",
                f"cannot compare {manifest.metric_name} with the live checkpoint's {live_name}",
                checkpoint_uri,
            )
        if value <= live_value:
            raise Refusal(
                "NoImprovement",
                f"{manifest.metric_name}={value:g} does not beat the live {live_value:g}",
                checkpoint_uri,
            )
    return Candidate(checkpoint_uri, manifest)


def live_metric_of(checkpoint_uri: str | None) -> tuple[str, float] | None:
    """The metric recorded in a (live) checkpoint's manifest, or None when it cannot be read."""
    if not checkpoint_uri:
        return None
    try:
        manifest = checkpoints.read_manifest(checkpoint_uri)
    except (checkpoints.CheckpointError, storage.StorageError):
        return None
    return manifest.metric_name, manifest.metric_value
