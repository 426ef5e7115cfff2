"""The checkpoint contract: the ``rlops.json`` manifest and the ``best_checkpoint.txt`` pointer.

Write order is the commit point: checkpoint files, then the manifest, then the pointer. A checkpoint
whose manifest is missing, incomplete or does not match the files is never promoted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from rlops_core import storage

MANIFEST_NAME = "rlops.json"
POINTER_NAME = "best_checkpoint.txt"
MANIFEST_SCHEMA = "rlops.io/checkpoint-manifest/v1"


class CheckpointError(Exception):
    """A pointer or checkpoint is unusable; the message says why."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a checkpoint: path relative to the checkpoint directory, size and sha256."""

    path: str
    size: int
    sha256: str


@dataclass
class Manifest:
    """What ``rlops.json`` records about one checkpoint."""

    checkpoint_uri: str
    files: list[FileEntry]
    metric_name: str
    metric_value: float
    env_id: str
    env_config: dict[str, Any] = field(default_factory=dict)
    trial_id: str = ""
    experiment: str = ""
    ray_job_id: str | None = None
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        body = asdict(self)
        body["files"] = [asdict(f) for f in self.files]
        body["metric"] = {"name": body.pop("metric_name"), "value": body.pop("metric_value")}
        body["env"] = {"id": body.pop("env_id"), "config": body.pop("env_config")}
        return json.dumps({"schema": MANIFEST_SCHEMA, **body}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            body = json.loads(text)
            if body.get("schema") != MANIFEST_SCHEMA:
                raise CheckpointError(
                    f"manifest schema is {body.get('schema')!r}, expected {MANIFEST_SCHEMA!r}"
                )
            files = [FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in body["files"]]
            return cls(
                checkpoint_uri=str(body["checkpoint_uri"]),
                files=files,
                metric_name=str(body["metric"]["name"]),
                metric_value=float(body["metric"]["value"]),
                env_id=str(body["env"]["id"]),
                env_config=dict(body["env"].get("config") or {}),
                trial_id=str(body.get("trial_id", "")),
                experiment=str(body.get("experiment", "")),
                ray_job_id=body.get("ray_job_id"),
                created_at=str(body.get("created_at", "")),
                extra=dict(body.get("extra") or {}),
            )
        except CheckpointError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"manifest is malformed: {exc!r}") from exc


def sha256_of(uri: str) -> str:
    """The sha256 of one stored object, streamed."""
    digest = hashlib.sha256()
    for chunk in storage.iter_chunks(uri):
        digest.update(chunk)
    return digest.hexdigest()


def build_manifest(
    checkpoint_uri: str,
    *,
    metric_name: str,
    metric_value: float,
    env_id: str,
    env_config: dict[str, Any] | None = None,
    trial_id: str = "",
    experiment: str = "",
    ray_job_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Hash every file of a stored checkpoint directory into a manifest (not yet written)."""
    listing = {p: s for p, s in storage.list_files(checkpoint_uri).items() if p != MANIFEST_NAME}
    if not listing:
        raise CheckpointError(f"checkpoint {checkpoint_uri} has no files")
    files = [
        FileEntry(rel, size, sha256_of(storage.join_uri(checkpoint_uri, rel)))
        for rel, size in sorted(listing.items())
    ]
    return Manifest(
        checkpoint_uri=storage.parse_uri(checkpoint_uri).uri,
        files=files,
        metric_name=metric_name,
        metric_value=float(metric_value),
        env_id=env_id,
        env_config=dict(env_config or {}),
        trial_id=trial_id,
        experiment=experiment,
        ray_job_id=ray_job_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        extra=dict(extra or {}),
    )


def write_manifest(manifest: Manifest) -> str:
    """Write ``rlops.json`` into the checkpoint directory; return its URI."""
    uri = storage.join_uri(manifest.checkpoint_uri, MANIFEST_NAME)
    storage.write_text(uri, manifest.to_json())
    return uri


def read_manifest(checkpoint_uri: str) -> Manifest:
    """Read a checkpoint's manifest; CheckpointError if it is missing or malformed."""
    uri = storage.join_uri(checkpoint_uri, MANIFEST_NAME)
    try:
        text = storage.read_bytes(uri)
    except storage.ObjectNotFound as exc:
        raise CheckpointError(f"checkpoint {checkpoint_uri} has no {MANIFEST_NAME}") from exc
    return Manifest.from_json(text)


def verify_checkpoint(checkpoint_uri: str, *, max_hash_bytes: int | None = None) -> Manifest:
    """Check a stored checkpoint against its manifest and return the manifest.

    The directory must hold exactly the manifest's files with the recorded sizes, and every file
    (or, with ``max_hash_bytes``, every file up to that size) must have the recorded sha256.
    """
    manifest = read_manifest(checkpoint_uri)
    if storage.parse_uri(manifest.checkpoint_uri) != storage.parse_uri(checkpoint_uri):
        raise CheckpointError(
            f"manifest names {manifest.checkpoint_uri}, not {checkpoint_uri}: it was copied from elsewhere"
        )
    listing = {p: s for p, s in storage.list_files(checkpoint_uri).items() if p != MANIFEST_NAME}
    expected = {f.path: f for f in manifest.files}
    missing = sorted(set(expected) - set(listing))
    unexpected = sorted(set(listing) - set(expected))
    if missing:
        raise CheckpointError(f"checkpoint {checkpoint_uri} is incomplete: missing {missing[:5]}")
    if unexpected:
        raise CheckpointError(f"checkpoint {checkpoint_uri} has files not in its manifest: {unexpected[:5]}")
    for rel, entry in expected.items():
        if listing[rel] != entry.size:
            raise CheckpointError(
                f"{rel} in {checkpoint_uri} has size {listing[rel]}, manifest says {entry.size}"
            )
    for rel, entry in expected.items():
        if max_hash_bytes is not None and entry.size > max_hash_bytes:
            continue
        actual = sha256_of(storage.join_uri(checkpoint_uri, rel))
        if actual != entry.sha256:
            raise CheckpointError(f"{rel} in {checkpoint_uri} does not match its sha256 in the manifest")
    return manifest


def parse_pointer(text: str | bytes) -> str:
    """The checkpoint URI a pointer names: one non-empty line; surrounding whitespace and CRLF allowed."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError("pointer is not UTF-8 text") from exc
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines:
        raise CheckpointError("pointer is empty")
    if len(lines) > 1:
        raise CheckpointError(f"pointer must name exactly one checkpoint, found {len(lines)} lines")
    uri = lines[0]
    if any(ord(c) < 32 for c in uri):
        raise CheckpointError("pointer holds control characters")
    if "://" not in uri and not uri.startswith("/"):
        # A relative path would resolve against each reader's working directory.
        raise CheckpointError(
            f"pointer must hold an absolute URI (s3://, file:// or /path), not {uri[:80]!r}"
        )
    try:
        storage.parse_uri(uri)
    except storage.StorageURIError as exc:
        raise CheckpointError(f"pointer does not name a checkpoint URI: {exc}") from exc
    return uri


def read_pointer(pointer_uri: str) -> str:
    """Read and parse a ``best_checkpoint.txt``."""
    try:
        return parse_pointer(storage.read_bytes(pointer_uri))
    except storage.ObjectNotFound as exc:
        raise CheckpointError(f"no pointer at {pointer_uri}") from exc


def write_pointer(pointer_uri: str, checkpoint_uri: str) -> None:
    """Write a pointer naming ``checkpoint_uri`` (the commit point of a promotion)."""
    storage.write_text(pointer_uri, storage.parse_uri(checkpoint_uri).uri + "\n")


def pointer_uri(root: str, name: str) -> str:
    """``<root>/<name>/best_checkpoint.txt`` for an experiment or a channel."""
    return storage.join_uri(root, name, POINTER_NAME)
