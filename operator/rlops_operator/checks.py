"""Read the pointer cheaply and decide whether the checkpoint it names may go live.

Two kinds of "no": a :class:`Refusal` is final for that pointer version (bad pointer, bad checkpoint,
a gate says no), while a :class:`TransientError` (storage unreachable, access denied, a read past its
deadline) is retried on the next poll. Storage errors say which they are (``StorageError.transient``).
"""

from __future__ import annotations

import math
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


def _storage_trouble(exc: storage.StorageError, what: str) -> TransientError:
    """A transient storage failure, named for what went wrong: AccessDenied, StorageTimeout or
    StorageUnreachable."""
    if isinstance(exc, storage.AccessDenied):
        return TransientError("AccessDenied", f"access denied while reading {what}: {exc}")
    if isinstance(exc, storage.StorageTimeout):
        return TransientError("StorageTimeout", f"cannot read {what} in time: {exc}")
    return TransientError("StorageUnreachable", f"cannot read {what}: {exc}")


def read_pointer(pointer_uri: str, etag: str | None) -> PointerRead:
    """One cheap conditional read; ``checkpoint_uri`` is None when the pointer has not changed since ``etag``.

    ``etag`` is a version token (see :func:`rlops_core.storage.read_if_changed`): it changes whenever
    the pointer is written again, even with the same content, on S3 as on local storage. The pointer is
    read only up to ``MAX_POINTER_BYTES`` and within ``storage.READ_DEADLINE_S`` seconds.
    """
    try:
        data, new_etag = storage.read_if_changed(pointer_uri, etag, max_bytes=checkpoints.MAX_POINTER_BYTES)
    except storage.ObjectNotFound as exc:
        raise Refusal("PointerMissing", f"no pointer at {pointer_uri}") from exc
    except storage.LimitExceeded as exc:
        raise Refusal(
            "PointerTooLarge",
            f"pointer {pointer_uri} is over {checkpoints.MAX_POINTER_BYTES} bytes: it must hold one URI line "
            f"({exc})",
            etag=exc.etag or None,
        ) from exc
    except storage.StorageError as exc:
        if not exc.transient:
            raise Refusal("PointerInvalid", f"pointer {pointer_uri}: {exc}") from exc
        raise _storage_trouble(exc, f"pointer {pointer_uri}") from exc
    if data is None:
        return PointerRead(None, new_etag)
    try:
        uri = checkpoints.parse_pointer(data)
    except checkpoints.CheckpointError as exc:
        raise Refusal("PointerInvalid", f"pointer {pointer_uri}: {exc}", etag=new_etag) from exc
    return PointerRead(storage.parse_uri(uri).uri, new_etag)


def check_candidate(
    spec: RolloutSpec,
    checkpoint_uri: str,
    live_metric: tuple[str, float] | None = None,
    *,
    live_uri: str | None = None,
) -> Candidate:
    """Prefix, manifest (complete, sizes, small files' sha256) and metric gates; Refusal if any fails.

    Pass ``live_uri`` (the checkpoint live now) so that requireImprovement with a live checkpoint whose
    metric is unknown is refused ("LiveMetricUnknown") instead of passing. A TransientError means the
    checkpoint could not be read (AccessDenied, StorageTimeout, StorageUnreachable); try again later.
    """
    try:
        inside = storage.is_within(checkpoint_uri, spec.prefixes)
    except storage.StorageURIError as exc:
        raise Refusal("CheckpointInvalid", f"not a checkpoint URI: {exc}", checkpoint_uri) from exc
    if not inside:
        raise Refusal(
            "OutsideAllowedPrefixes",
            f"{checkpoint_uri} is outside the allowed prefixes {spec.prefixes} (symlinks resolved)",
            checkpoint_uri,
        )
    try:
        manifest = checkpoints.verify_checkpoint(checkpoint_uri, max_hash_bytes=spec.max_hash_bytes)
    except checkpoints.CheckpointError as exc:
        raise Refusal("CheckpointInvalid", str(exc), checkpoint_uri) from exc
    except storage.StorageError as exc:
        if not exc.transient:
            raise Refusal("CheckpointInvalid", f"{checkpoint_uri}: {exc}", checkpoint_uri) from exc
        raise _storage_trouble(exc, f"checkpoint {checkpoint_uri}") from exc
    value = manifest.metric_value
    if not math.isfinite(value):  # the manifest parser refuses these already; never let one through
        raise Refusal(
            "MetricInvalid", f"{checkpoint_uri} records a non-finite metric {value!r}", checkpoint_uri
        )
    if spec.min_metric is not None:
        if not math.isfinite(spec.min_metric):
            raise Refusal(
                "SpecInvalid", f"minMetric {spec.min_metric!r} is not a finite number", checkpoint_uri
            )
        if value < spec.min_metric:
            raise Refusal(
                "BelowMinMetric",
                f"{manifest.metric_name}={value:g} is below minMetric {spec.min_metric:g}",
                checkpoint_uri,
            )
    if spec.require_improvement:
        _check_improvement(manifest, checkpoint_uri, live_metric, live_uri)
    return Candidate(checkpoint_uri, manifest)


def _check_improvement(
    manifest: checkpoints.Manifest,
    checkpoint_uri: str,
    live_metric: tuple[str, float] | None,
    live_uri: str | None,
) -> None:
    if live_metric is None:
        if live_uri and not storage.same_uri(live_uri, checkpoint_uri):
            raise Refusal(
                "LiveMetricUnknown",
                f"requireImprovement cannot be evaluated: the metric of the live checkpoint {live_uri} is "
                "unknown (its manifest is missing or unreadable); fix it, or turn requireImprovement off",
                checkpoint_uri,
            )
        return  # nothing live yet: the first checkpoint has nothing to beat
    live_name, live_value = live_metric
    if not math.isfinite(live_value):
        raise Refusal(
            "LiveMetricUnknown",
            f"requireImprovement cannot be evaluated: the live metric is {live_value!r}",
            checkpoint_uri,
        )
    if live_name and live_name != manifest.metric_name:
        raise Refusal(
            "MetricMismatch",
            f"cannot compare {manifest.metric_name} with the live checkpoint's {live_name}",
            checkpoint_uri,
        )
    if manifest.metric_value <= live_value:
        raise Refusal(
            "NoImprovement",
            f"{manifest.metric_name}={manifest.metric_value:g} does not beat the live {live_value:g}",
            checkpoint_uri,
        )


def live_metric_of(checkpoint_uri: str | None) -> tuple[str, float] | None:
    """The metric recorded in a (live) checkpoint's manifest, or None when it cannot be read."""
    if not checkpoint_uri:
        return None
    try:
        manifest = checkpoints.read_manifest(checkpoint_uri)
    except (checkpoints.CheckpointError, storage.StorageError):
        return None
    return manifest.metric_name, manifest.metric_value
