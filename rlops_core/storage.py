"""Object storage behind one small interface: local folders (the embedded default) and S3.

A storage URI is ``s3://bucket/prefix``, a ``file://`` URI or a plain local path (see
:mod:`rlops_core.uris`); the S3 side is :mod:`rlops_core.s3`.

Everything read from a store is bounded: small objects (pointer, manifest) by size and by a total
deadline, listings by count, keys by :mod:`rlops_core.keys`. Downloads write only below their
destination. This module imports nothing heavier than boto3 (lazily), so the operator can use it
without Ray.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat as stat_mod
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlops_core import keys, s3
from rlops_core.errors import (
    AccessDenied,
    LimitExceeded,
    ObjectNotFound,
    StorageError,
    StorageTimeout,
    StorageURIError,
    UnsafeKeyError,
)
from rlops_core.s3 import CHUNK_BYTES, reset_clients, s3_client
from rlops_core.uris import Location, child_uri, is_within, join_uri, parse_uri, same_uri

__all__ = [
    "AccessDenied",
    "LimitExceeded",
    "Location",
    "ObjectInfo",
    "ObjectNotFound",
    "StorageError",
    "StorageTimeout",
    "StorageURIError",
    "UnsafeKeyError",
    "child_uri",
    "is_within",
    "join_uri",
    "parse_uri",
    "reset_clients",
    "s3_client",
    "same_uri",
]

READ_DEADLINE_S = 30.0  # total time for one small read (pointer, manifest), whatever the server does


@dataclass(frozen=True)
class ObjectInfo:
    """What a cheap HEAD / stat / listing tells about one object.

    ``etag`` is a version token, not only S3's ETag: it changes whenever the object is written again,
    even with the same content (S3: ETag, LastModified and VersionId; local: mtime, ctime, size, inode).
    """

    size: int
    etag: str


# --------------------------------------------------------------------------------------------- local files


def _local_token(st: os.stat_result) -> str:
    """The local version token: a rewrite (even of identical bytes) changes mtime, ctime or inode."""
    return f"{st.st_mtime_ns}-{st.st_ctime_ns}-{st.st_size}-{st.st_ino}"


def _open_local(loc: Location) -> tuple[int, os.stat_result]:
    """Open a local regular file for reading (not a FIFO or device, which could block or never end)."""
    try:
        fd = os.open(loc.path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"no file at {loc.uri}") from exc
    except PermissionError as exc:
        raise AccessDenied(f"access denied to {loc.uri}: {exc.strerror}") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {loc.uri}: {exc}") from exc
    st = os.fstat(fd)
    if not stat_mod.S_ISREG(st.st_mode):
        os.close(fd)
        if stat_mod.S_ISDIR(st.st_mode):
            raise ObjectNotFound(f"no file at {loc.uri} (it is a directory)")
        raise UnsafeKeyError(f"{loc.uri} is not a regular file")
    return fd, st


def _read_fd(fd: int, limit: int | None, what: str) -> bytes:
    with os.fdopen(fd, "rb") as fh:
        data = fh.read() if limit is None else fh.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise LimitExceeded(f"{what} is larger than {limit} bytes")
    return data


# --------------------------------------------------------------------------------------------- read/write


def read_bytes(uri: str, *, max_bytes: int | None = None, deadline_s: float | None = None) -> bytes:
    """Read one object whole; with ``max_bytes`` refuse (LimitExceeded) a larger one without reading it
    all, with ``deadline_s`` give up (StorageTimeout) when the whole read takes longer."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":

        def get(cancelled: threading.Event) -> bytes:
            return s3.get_small(loc, max_bytes=max_bytes, cancelled=cancelled)[0]

        return s3.run_with_deadline(get, deadline_s, loc.uri)
    fd, st = _open_local(loc)
    if max_bytes is not None and st.st_size > max_bytes:
        os.close(fd)
        raise LimitExceeded(f"{loc.uri} is {st.st_size} bytes, over the limit of {max_bytes} bytes")
    return _read_fd(fd, max_bytes, loc.uri)


def read_text(uri: str, *, max_bytes: int | None = None) -> str:
    """Read one object as UTF-8 text."""
    data = read_bytes(uri, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StorageError(f"{uri} is not UTF-8 text") from exc


def write_bytes(uri: str, data: bytes) -> None:
    """Write one object atomically (a local file is written beside and renamed into place)."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        client = s3.s3_client()
        metadata = {s3.WRITE_ID_KEY: uuid.uuid4().hex}
        s3.call(client.put_object, loc, Bucket=loc.bucket, Key=loc.key, Body=data, Metadata=metadata)
        return
    path = loc.path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(uri: str, text: str) -> None:
    """Write one object as UTF-8 text."""
    write_bytes(uri, text.encode("utf-8"))


def stat(uri: str) -> ObjectInfo:
    """Size and version token (see :class:`ObjectInfo`) without reading the object."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        head = s3.call(s3.s3_client().head_object, loc, Bucket=loc.bucket, Key=loc.key)
        token = s3.version_token(head)
        return ObjectInfo(size=int(head["ContentLength"]), etag=token)
    try:
        st = loc.path.stat()
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"no file at {loc.uri}") from exc
    except PermissionError as exc:
        raise AccessDenied(f"access denied to {loc.uri}: {exc.strerror}") from exc
    return ObjectInfo(size=st.st_size, etag=_local_token(st))


def read_if_changed(
    uri: str,
    etag: str | None,
    *,
    max_bytes: int | None = None,
    deadline_s: float | None = None,
) -> tuple[bytes | None, str]:
    """A conditional read: ``(None, token)`` when the object is still version ``etag``, else its bytes
    and new version token.

    The token changes whenever the object is written, even with identical bytes (see
    :class:`ObjectInfo`); S3's ETag alone would not (it is the MD5 of the content). On S3 an idle poll
    is one HEAD; a change costs one more (ranged) GET, whose own response gives the token returned.
    ``max_bytes`` bounds the read (LimitExceeded before any body is read when the size says so),
    ``deadline_s`` (default ``READ_DEADLINE_S``) bounds its total time (StorageTimeout).
    """
    loc = parse_uri(uri)
    if loc.scheme == "file":
        fd, st = _open_local(loc)
        token = _local_token(st)
        if etag and token == etag:
            os.close(fd)
            return None, etag
        if max_bytes is not None and st.st_size > max_bytes:
            os.close(fd)
            raise LimitExceeded(f"{loc.uri} is {st.st_size} bytes, over the limit of {max_bytes}", token)
        return _read_fd(fd, max_bytes, loc.uri), token

    def poll(cancelled: threading.Event) -> tuple[bytes | None, str]:
        head = s3.call(s3.s3_client().head_object, loc, Bucket=loc.bucket, Key=loc.key)
        token = s3.version_token(head)
        if etag and token == etag:
            return None, etag
        size = int(head.get("ContentLength") or 0)
        if max_bytes is not None and size > max_bytes:
            raise LimitExceeded(f"{loc.uri} is {size} bytes, over the limit of {max_bytes} bytes", token)
        data, token = s3.get_small(loc, max_bytes=max_bytes, cancelled=cancelled)
        if etag and token == etag:
            return None, etag  # written back between the HEAD and the GET: no new version after all
        return data, token

    return s3.run_with_deadline(poll, READ_DEADLINE_S if deadline_s is None else deadline_s, loc.uri)


# --------------------------------------------------------------------------------------------- listing


def list_objects(
    uri: str, *, max_objects: int | None = None, deadline_s: float | None = None
) -> dict[str, ObjectInfo]:
    """Every object below a directory URI, as relative key → size and version token.

    Keys are checked with :func:`rlops_core.keys.check_key` (UnsafeKeyError names the first bad one).
    Locally, symlinks and anything but regular files and folders are refused (UnsafeKeyError). More
    than ``max_objects`` objects raise LimitExceeded; an S3 listing that takes longer than
    ``deadline_s`` in all raises StorageTimeout.
    """
    loc = parse_uri(uri)
    out: dict[str, ObjectInfo] = {}

    def add(rel: str, info: ObjectInfo) -> None:
        keys.check_key(rel)
        out[rel] = info
        if max_objects is not None and len(out) > max_objects:
            raise LimitExceeded(f"{loc.uri} holds more than {max_objects} objects")

    if loc.scheme == "s3":
        prefix = loc.key.rstrip("/") + "/" if loc.key else ""

        def page_through(cancelled: threading.Event) -> dict[str, ObjectInfo]:
            paginator = s3.s3_client().get_paginator("list_objects_v2")
            pages = iter(paginator.paginate(Bucket=loc.bucket, Prefix=prefix))
            while (page := s3.call(lambda: next(pages, None), loc)) is not None:
                if cancelled.is_set():
                    raise StorageTimeout(f"listing {loc.uri} was abandoned at its deadline")
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(prefix) :]
                    if rel == "" or _is_marker(rel):
                        continue  # a directory marker (pyarrow and consoles write them), not a file
                    add(rel, ObjectInfo(int(obj["Size"]), s3.version_token(obj)))
            return out

        return s3.run_with_deadline(page_through, deadline_s, f"the listing of {loc.uri}")
    root = loc.path
    if root.is_symlink():
        root = Path(os.path.realpath(root))
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat_mod.S_ISLNK(st.st_mode):
                raise UnsafeKeyError(f"{keys.shown(rel)} in {loc.uri} is a symlink (it may lead out)")
            if stat_mod.S_ISDIR(st.st_mode):
                keys.check_key(rel)
                continue
            if not stat_mod.S_ISREG(st.st_mode):
                raise UnsafeKeyError(f"{keys.shown(rel)} in {loc.uri} is not a regular file")
            add(rel, ObjectInfo(st.st_size, _local_token(st)))
    return out


def _is_marker(rel: str) -> bool:
    """A directory marker: ``sub/`` with otherwise safe segments (``a//`` or ``../`` are not markers)."""
    if not rel.endswith("/") or rel.endswith("//"):
        return False
    try:
        keys.check_key(rel[:-1])
    except UnsafeKeyError:
        return False
    return True


def list_files(
    uri: str, *, max_objects: int | None = None, deadline_s: float | None = None
) -> dict[str, int]:
    """Every object below a directory URI, as relative key → size (see :func:`list_objects`)."""
    listing = list_objects(uri, max_objects=max_objects, deadline_s=deadline_s)
    return {rel: info.size for rel, info in listing.items()}


# --------------------------------------------------------------------------------------------- streaming


def iter_chunks(uri: str, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Stream one object in chunks (for hashing large files without holding them)."""
    for chunk, _ in _iter_versioned(uri, chunk_size):
        yield chunk


def _iter_versioned(uri: str, chunk_size: int = CHUNK_BYTES) -> Iterator[tuple[bytes, str]]:
    """Chunks of one object, each with the version token of what is being read."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        resp = s3.call(s3.s3_client().get_object, loc, Bucket=loc.bucket, Key=loc.key)
        token = s3.version_token(resp)
        body = resp["Body"]
        try:
            yield from ((chunk, token) for chunk in iter(lambda: body.read(chunk_size), b""))
        finally:
            body.close()
        return
    fd, st = _open_local(loc)
    token = _local_token(st)
    with os.fdopen(fd, "rb") as fh:
        yield from ((chunk, token) for chunk in iter(lambda: fh.read(chunk_size), b""))


@dataclass(frozen=True)
class Digest:
    """What streaming one object produced: its size, sha256 and the version token it was read at."""

    size: int
    sha256: str
    etag: str


def hash_object(uri: str, *, max_bytes: int | None = None, sink: Any = None) -> Digest:
    """sha256 of one object, streamed in chunks (never held whole); each chunk also goes to ``sink``.

    More than ``max_bytes`` bytes raise LimitExceeded as soon as they arrive.
    """
    digest = hashlib.sha256()
    size = 0
    token = ""
    for chunk, version in _iter_versioned(uri):
        token = version
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise LimitExceeded(f"{uri} is larger than {max_bytes} bytes")
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
    return Digest(size, digest.hexdigest(), token)


def download_file(uri: str, target: Path, *, max_bytes: int | None = None) -> Digest:
    """Stream one object into ``target`` (a new file; an existing symlink there is refused), hashing it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc}") from exc
    with os.fdopen(fd, "wb") as fh:
        return hash_object(uri, max_bytes=max_bytes, sink=fh)


def download_dir(uri: str, dest: Path) -> Path:
    """Copy a directory from storage to a local folder (a local source is copied too) and return it.

    Every key is checked and mapped to a path inside ``dest`` before the first byte is written; an
    unsafe key (UnsafeKeyError) means nothing is written at all. Symlinks in a local source are refused.
    """
    loc = parse_uri(uri)
    dest.mkdir(parents=True, exist_ok=True)
    if loc.scheme == "file" and not loc.path.is_dir():
        raise ObjectNotFound(f"no directory at {loc.uri}")
    objects = list_objects(uri)
    if not objects and loc.scheme == "s3":
        raise ObjectNotFound(f"no objects below {loc.uri}")
    for rel in objects:
        keys.local_target(dest, rel)  # all keys first: nothing is written for a listing with a bad one
    for rel in sorted(objects):
        target = keys.local_target(dest, rel)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {target.parent}: {exc}") from exc
        download_file(child_uri(uri, rel), keys.local_target(dest, rel))
    return dest


def upload_dir(src: Path, uri: str) -> None:
    """Copy a local folder into storage below ``uri``."""
    if not src.is_dir():
        raise StorageError(f"cannot upload {src}: not a directory")
    for path in sorted(src.rglob("*")):
        if path.is_file():
            rel = path.relative_to(src).as_posix()
            target = parse_uri(uri).child(rel)
            if target.scheme == "file":
                target.path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target.path)
            else:
                client = s3.s3_client()
                s3.call(client.upload_file, target, Filename=str(path), Bucket=target.bucket, Key=target.key)


def check_reachable(uri: str) -> None:
    """Fail fast with a clear StorageError when the storage root cannot be used."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        try:
            s3.call(s3.s3_client().head_bucket, loc, Bucket=loc.bucket)
        except ObjectNotFound as exc:
            raise StorageError(f"bucket {loc.bucket!r} does not exist ({loc.uri})") from exc
        return
    path = loc.path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create storage folder {path}: {exc}") from exc
    if not os.access(path, os.W_OK):
        raise StorageError(f"storage folder {path} is not writable")
