"""The checkpoint contract: the ``rlops.json`` manifest and the ``best_checkpoint.txt`` pointer.

Write order is the commit point: checkpoint files, then the manifest, then the pointer. A checkpoint
whose manifest is missing, incomplete or does not match the files is never promoted.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlops_core import keys, storage

MANIFEST_NAME = "rlops.json"
POINTER_NAME = "best_checkpoint.txt"
MANIFEST_SCHEMA = "rlops.io/checkpoint-manifest/v1"

MAX_POINTER_BYTES = 4 * 1024  # a pointer is one URI line
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_FILES = 10_000  # files one checkpoint may list (an RLlib PPO checkpoint holds a few dozen)
POLICY_SEGMENT = "rl_module"  # an RLlib checkpoint keeps its policy weights below .../rl_module/...
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
        return (
            json.dumps({"schema": MANIFEST_SCHEMA, **body}, indent=2, sort_keys=True, allow_nan=False) + "\n"
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse and validate ``rlops.json``; CheckpointError names what is wrong."""
        size = len(text.encode("utf-8") if isinstance(text, str) else text)
        if size > MAX_MANIFEST_BYTES:
            raise CheckpointError(f"manifest is {size} bytes, over the limit of {MAX_MANIFEST_BYTES} bytes")
        try:
            body = json.loads(text, parse_constant=_refuse_constant)
            if not isinstance(body, dict):
                raise CheckpointError(f"a JSON object is expected, not {type(body).__name__}")
            if body.get("schema") != MANIFEST_SCHEMA:
                raise CheckpointError(
                    f"manifest schema is {body.get('schema')!r}, expected {MANIFEST_SCHEMA!r}"
                )
            metric_name, metric_value = _metric(body)
            env = body["env"]
            return cls(
                checkpoint_uri=_checkpoint_uri(body),
                files=_files(body.get("files")),
                metric_name=metric_name,
                metric_value=metric_value,
                env_id=str(env["id"]),
                env_config=dict(env.get("config") or {}),
                trial_id=str(body.get("trial_id", "")),
                experiment=str(body.get("experiment", "")),
                ray_job_id=body.get("ray_job_id"),
                created_at=str(body.get("created_at", "")),
                extra=dict(body.get("extra") or {}),
            )
        except CheckpointError as exc:
            if str(exc).startswith("manifest"):
                raise
            raise CheckpointError(f"manifest is malformed: {exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise CheckpointError(f"manifest is malformed: {exc!r}") from exc

    @property
    def has_policy(self) -> bool:
        """Whether the manifest lists policy weights (files below an ``rl_module`` folder)."""
        return any(POLICY_SEGMENT in f.path.split("/")[:-1] for f in self.files)


def _refuse_constant(name: str) -> float:
    raise CheckpointError(f"it holds {name}, which is not a finite number")


def _finite(value: Any, what: str) -> float:
    """A finite float from a JSON number or numeric string; CheckpointError for inf, NaN, bools, text."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise CheckpointError(f"{what} must be a number, not {keys.shown(repr(value), 80)}")
    try:
        number = float(value)
    except ValueError as exc:
        raise CheckpointError(f"{what} must be a number, not {keys.shown(str(value), 80)}") from exc
    except OverflowError as exc:
        raise CheckpointError(f"{what} is too large to be a number") from exc
    if not math.isfinite(number):
        raise CheckpointError(f"{what} is {value!r}, not a finite number")
    return number


def _metric(body: dict[str, Any]) -> tuple[str, float]:
    metric = body.get("metric")
    if not isinstance(metric, dict):
        raise CheckpointError('it has no metric (expected "metric": {"name": ..., "value": ...})')
    name = metric.get("name")
    if not isinstance(name, str) or not name:
        raise CheckpointError("its metric has no name")
    if "value" not in metric or metric["value"] is None:
        raise CheckpointError(f"its metric {keys.shown(name, 80)} has no value")
    return name, _finite(metric["value"], f"its metric {keys.shown(name, 80)}")


def _checkpoint_uri(body: dict[str, Any]) -> str:
    uri = body["checkpoint_uri"]
    if not isinstance(uri, str):
        raise CheckpointError("checkpoint_uri is not a string")
    try:
        storage.parse_uri(uri)
    except storage.StorageURIError as exc:
        raise CheckpointError(f"checkpoint_uri is not a storage URI: {exc}") from exc
    return uri


def _files(raw: Any) -> list[FileEntry]:
    """The file list: at least one, at most MAX_FILES, each with a safe key, a size and a sha256."""
    if not isinstance(raw, list):
        raise CheckpointError("'files' must be a list")
    if not raw:
        raise CheckpointError("it lists no files, so it does not describe a checkpoint")
    if len(raw) > MAX_FILES:
        raise CheckpointError(f"it lists {len(raw)} files, over the limit of {MAX_FILES}")
    files: list[FileEntry] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise CheckpointError("every file entry must be an object")
        path, size, sha = item.get("path"), item.get("size"), item.get("sha256")
        try:
            keys.check_key(path)
        except storage.UnsafeKeyError as exc:
            raise CheckpointError(f"it lists an unsafe file: {exc}") from exc
        if path == MANIFEST_NAME or path in seen:
            raise CheckpointError(f"it lists {keys.shown(path)} twice, or lists itself")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise CheckpointError(f"size of {keys.shown(path)} is {size!r}")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise CheckpointError(f"sha256 of {keys.shown(path)} is not 64 lowercase hex digits")
        seen.add(path)
        files.append(FileEntry(path, size, sha))
    return files


def sha256_of(uri: str) -> str:
    """The sha256 of one stored object, streamed (never held whole)."""
    return storage.hash_object(uri).sha256


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
    value = _finite(metric_value, f"metric {metric_name!r}")
    try:
        listing = {
            p: s
            for p, s in storage.list_files(checkpoint_uri, max_objects=MAX_FILES + 1).items()
            if p != MANIFEST_NAME
        }
    except (storage.UnsafeKeyError, storage.LimitExceeded) as exc:
        raise CheckpointError(
            f"checkpoint {checkpoint_uri} cannot be described by a manifest: {exc}"
        ) from exc
    if not listing:
        raise CheckpointError(f"checkpoint {checkpoint_uri} has no files")
    files = [
        FileEntry(rel, size, sha256_of(storage.child_uri(checkpoint_uri, rel)))
        for rel, size in sorted(listing.items())
    ]
    return Manifest(
        checkpoint_uri=storage.parse_uri(checkpoint_uri).uri,
        files=files,
        metric_name=metric_name,
        metric_value=value,
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
    """Read a checkpoint's manifest (at most MAX_MANIFEST_BYTES, within the read deadline).

    CheckpointError if it is missing, too large or malformed; StorageError if storage fails.
    """
    uri = storage.join_uri(checkpoint_uri, MANIFEST_NAME)
    try:
        text = storage.read_bytes(uri, max_bytes=MAX_MANIFEST_BYTES, deadline_s=storage.READ_DEADLINE_S)
    except storage.ObjectNotFound as exc:
        raise CheckpointError(f"checkpoint {checkpoint_uri} has no {MANIFEST_NAME}") from exc
    except storage.LimitExceeded as exc:
        raise CheckpointError(
            f"{MANIFEST_NAME} of {checkpoint_uri} is over the limit of {MAX_MANIFEST_BYTES} bytes"
        ) from exc
    except storage.UnsafeKeyError as exc:
        raise CheckpointError(f"{MANIFEST_NAME} of {checkpoint_uri} is unusable: {exc}") from exc
    return Manifest.from_json(text)


# S3 hashes already checked, by (object URI, version token from the listing): a checkpoint that is
# checked again (every poll while a rollout waits) is not downloaded and hashed again unless an object
# changed (S3's ETag is the MD5 of the content, so a same-size rewrite changes it).
_VERIFIED_MAX = 50_000
_verified: OrderedDict[tuple[str, str], str] = OrderedDict()


def _same_version(listed: str, read: str) -> bool:
    """Whether a listing's S3 token and a read's token name one version (listings carry no VersionId).

    Local files are never remembered: an in-place rewrite within one timestamp tick keeps every stat
    field, and reading a local file again costs no request.
    """
    return "|" in listed and listed.split("|")[:2] == read.split("|")[:2]


def _hash_checked(object_uri: str, listed_token: str) -> str:
    """The sha256 of one object, remembered for this version when the read saw the listed version."""
    key = (object_uri, listed_token)
    if key in _verified:
        _verified.move_to_end(key)
        return _verified[key]
    digest = storage.hash_object(object_uri)
    if _same_version(listed_token, digest.etag):
        _verified[key] = digest.sha256
        while len(_verified) > _VERIFIED_MAX:
            _verified.popitem(last=False)
    return digest.sha256


def forget_verified() -> None:
    """Forget every remembered hash (tests; or after a store's version tokens cannot be trusted)."""
    _verified.clear()


def verify_checkpoint(
    checkpoint_uri: str, *, max_hash_bytes: int | None = None, require_policy: bool = True
) -> Manifest:
    """Check a stored checkpoint against its manifest and return the manifest.

    The directory must hold exactly the manifest's files with the recorded sizes, and every file
    (or, with ``max_hash_bytes``, every file up to that size) must have the recorded sha256. With
    ``require_policy`` the manifest must list policy weights (a file below ``rl_module/``). Checking
    stops at the first failure; hashes of unchanged objects are remembered between calls.
    CheckpointError says what is wrong with the checkpoint; StorageError means it could not be read.
    """
    manifest = read_manifest(checkpoint_uri)
    if storage.parse_uri(manifest.checkpoint_uri) != storage.parse_uri(checkpoint_uri):
        raise CheckpointError(
            f"manifest names {manifest.checkpoint_uri}, not {checkpoint_uri}: it was copied from elsewhere"
        )
    if require_policy and not manifest.has_policy:
        raise CheckpointError(
            f"manifest of {checkpoint_uri} lists no policy weights (no file below {POLICY_SEGMENT}/): "
            "it is not an RLlib checkpoint"
        )
    try:
        listing = storage.list_objects(
            checkpoint_uri, max_objects=MAX_FILES + 1, deadline_s=storage.READ_DEADLINE_S
        )
    except (storage.UnsafeKeyError, storage.LimitExceeded) as exc:
        raise CheckpointError(f"checkpoint {checkpoint_uri} is refused: {exc}") from exc
    listing.pop(MANIFEST_NAME, None)
    expected = {f.path: f for f in manifest.files}
    missing = sorted(set(expected) - set(listing))
    unexpected = sorted(set(listing) - set(expected))
    if missing:
        raise CheckpointError(f"checkpoint {checkpoint_uri} is incomplete: missing {missing[:5]}")
    if unexpected:
        raise CheckpointError(f"checkpoint {checkpoint_uri} has files not in its manifest: {unexpected[:5]}")
    for rel, entry in expected.items():
        if listing[rel].size != entry.size:
            raise CheckpointError(
                f"{rel} in {checkpoint_uri} has size {listing[rel].size}, manifest says {entry.size}"
            )
    for rel, entry in expected.items():
        if max_hash_bytes is not None and entry.size > max_hash_bytes:
            continue
        if _hash_checked(storage.child_uri(checkpoint_uri, rel), listing[rel].etag) != entry.sha256:
            raise CheckpointError(f"{rel} in {checkpoint_uri} does not match its sha256 in the manifest")
    return manifest


def download_checkpoint(checkpoint_uri: str, manifest: Manifest, dest: Path) -> Path:
    """Download exactly the manifest's files into the empty folder ``dest``, hashing while streaming.

    Every path is checked to stay inside ``dest`` before anything is written, no file may grow past its
    recorded size, and each must match its sha256. CheckpointError on any mismatch (the caller deletes
    ``dest``); StorageError when storage fails.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        targets = {entry.path: keys.local_target(dest, entry.path) for entry in manifest.files}
    except storage.UnsafeKeyError as exc:
        raise CheckpointError(f"checkpoint {checkpoint_uri} cannot be downloaded safely: {exc}") from exc
    for entry in manifest.files:
        target = targets[entry.path]
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target = keys.local_target(dest, entry.path)  # again, now that its folders exist
        except storage.UnsafeKeyError as exc:
            raise CheckpointError(f"checkpoint {checkpoint_uri} cannot be downloaded safely: {exc}") from exc
        except OSError as exc:
            raise CheckpointError(f"cannot create a folder for {keys.shown(entry.path)}: {exc}") from exc
        try:
            digest = storage.download_file(
                storage.child_uri(checkpoint_uri, entry.path), target, max_bytes=entry.size
            )
        except storage.LimitExceeded as exc:
            raise CheckpointError(f"downloaded {entry.path} is larger than the manifest's size") from exc
        if digest.size != entry.size:
            raise CheckpointError(f"downloaded {entry.path} does not match the manifest's size")
        if digest.sha256 != entry.sha256:
            raise CheckpointError(f"downloaded {entry.path} does not match the manifest's sha256")
    return dest


def parse_pointer(text: str | bytes) -> str:
    """The checkpoint URI a pointer names: one non-empty line; surrounding whitespace and CRLF allowed.

    Refused: over MAX_POINTER_BYTES, not UTF-8, several lines, control or invisible characters
    (shown escaped in the message, e.g. ``\\u200b``), relative paths, malformed URIs.
    """
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > MAX_POINTER_BYTES:
        raise CheckpointError(
            f"pointer is {size} bytes, over the limit of {MAX_POINTER_BYTES}: it must hold one URI line"
        )
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
    if not keys.is_plain(uri):
        raise CheckpointError(f"pointer holds control characters or invisible characters: {keys.shown(uri)}")
    if "://" not in uri and not uri.startswith("/"):
        # A relative path would resolve against each reader's working directory.
        raise CheckpointError(
            f"pointer must hold an absolute URI (s3://, file:// or /path), not {keys.shown(uri, 80)}"
        )
    try:
        storage.parse_uri(uri)
    except storage.StorageURIError as exc:
        raise CheckpointError(f"pointer does not name a checkpoint URI: {exc}") from exc
    return uri


def read_pointer(pointer_uri: str) -> str:
    """Read (at most MAX_POINTER_BYTES, within the read deadline) and parse a ``best_checkpoint.txt``."""
    try:
        data = storage.read_bytes(
            pointer_uri, max_bytes=MAX_POINTER_BYTES, deadline_s=storage.READ_DEADLINE_S
        )
    except storage.ObjectNotFound as exc:
        raise CheckpointError(f"no pointer at {pointer_uri}") from exc
    except storage.LimitExceeded as exc:
        raise CheckpointError(
            f"pointer {pointer_uri} is over the limit of {MAX_POINTER_BYTES} bytes"
        ) from exc
    return parse_pointer(data)


def write_pointer(pointer_uri: str, checkpoint_uri: str) -> None:
    """Write a pointer naming ``checkpoint_uri`` (the commit point of a promotion)."""
    storage.write_text(pointer_uri, storage.parse_uri(checkpoint_uri).uri + "\n")


def pointer_uri(root: str, name: str) -> str:
    """``<root>/<name>/best_checkpoint.txt`` for an experiment or a channel."""
    return storage.join_uri(root, name, POINTER_NAME)
