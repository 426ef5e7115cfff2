"""Object storage behind one small interface: local folders (the embedded default) and S3.

A storage URI is ``s3://bucket/prefix``, a ``file://`` URI or a plain local path. S3-compatible
endpoints come from the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables, which
boto3 reads itself; credentials come only from the standard AWS sources.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from rlops_core import keys
from rlops_core.errors import (
    AccessDenied,
    LimitExceeded,
    ObjectNotFound,
    StorageError,
    StorageTimeout,
    StorageURIError,
    UnsafeKeyError,
)

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
]

READ_DEADLINE_S = 30.0  # total time for one small read (pointer, manifest), whatever the server does
CONNECT_TIMEOUT_S = 5
SOCKET_READ_TIMEOUT_S = 20  # botocore's read_timeout: per socket read, not per request
CHUNK_BYTES = 1 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class Location:
    """A parsed storage URI: ``scheme`` is ``s3`` or ``file``."""

    scheme: str
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key}".rstrip("/") if self.key else f"s3://{self.bucket}"
        return self.key

    @property
    def path(self) -> Path:
        if self.scheme != "file":
            raise StorageURIError(f"not a local path: {self.uri}")
        return Path(self.key)

    def join(self, *parts: str) -> Location:
        """The location of ``parts`` below this one.

        Leading and trailing slashes of each part and empty parts are ignored; a part with an inner
        empty segment (``a//b``), a ``.`` or ``..`` segment, a backslash or control characters is
        refused (never collapsed), so a join cannot leave this location.
        """
        clean = [p.strip("/") for p in parts if p.strip("/")]
        for part in clean:
            keys.check_key(part)
        if self.scheme == "s3":
            key = "/".join([self.key.rstrip("/"), *clean]) if self.key else "/".join(clean)
            return Location("s3", self.bucket, key)
        return Location("file", "", str(Path(self.key, *clean)))

    def child(self, rel: str) -> Location:
        """The object at relative key ``rel``, used exactly as given (see :func:`keys.check_key`)."""
        keys.check_key(rel)
        if self.scheme == "s3":
            return Location("s3", self.bucket, f"{self.key}/{rel}" if self.key else rel)
        return Location("file", "", str(Path(self.key, *rel.split("/"))))


_BUCKET_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-")


def parse_uri(uri: str) -> Location:
    """Parse ``s3://bucket/prefix``, ``file:///path`` or a local path; raise StorageURIError if malformed."""
    if not isinstance(uri, str) or not uri.strip():
        raise StorageURIError("storage URI is empty")
    uri = uri.strip()
    if "\x00" in uri:
        raise StorageURIError(f"storage URI {keys.shown(uri)} holds a NUL character")
    if "://" not in uri:
        return Location("file", "", _local_path(uri))
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageURIError(f"file URI must not name a host: {uri!r}")
        if not unquote(parsed.path).strip():
            raise StorageURIError(f"file URI names no path: {uri!r}")
        if "\x00" in unquote(parsed.path):
            raise StorageURIError(f"file URI {keys.shown(uri)} holds a NUL character")
        return Location("file", "", _local_path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        bucket = parsed.netloc
        if (
            not (3 <= len(bucket) <= 63)
            or not set(bucket) <= _BUCKET_CHARS
            or bucket[0] in ".-"
            or bucket[-1] in ".-"
            or ".." in bucket
        ):
            raise StorageURIError(f"malformed S3 bucket name in {uri!r}")
        if parsed.query or parsed.fragment:
            raise StorageURIError(f"S3 URI must not carry a query or fragment: {uri!r}")
        key = parsed.path.lstrip("/").rstrip("/")
        if key:
            try:
                keys.check_key(key)
            except UnsafeKeyError as exc:
                raise StorageURIError(f"malformed S3 key in {keys.shown(uri)}: {exc}") from exc
        return Location("s3", bucket, key)
    raise StorageURIError(
        f"unsupported storage scheme {parsed.scheme!r} in {uri!r} (use s3://, file:// or a path)"
    )


def _local_path(path: str) -> str:
    """An absolute local path with ``.`` and ``..`` folded away, so prefix checks cannot be escaped."""
    return os.path.normpath(Path(path).expanduser().absolute())


def join_uri(uri: str, *parts: str) -> str:
    """Join path parts below a storage URI and return the new URI (see :meth:`Location.join`)."""
    return parse_uri(uri).join(*parts).uri


def child_uri(uri: str, rel: str) -> str:
    """The URI of the object at relative key ``rel`` below ``uri``: the one mapping that listing,
    hashing and downloading share (the key is checked, never collapsed)."""
    return parse_uri(uri).child(rel).uri


def same_uri(a: str | None, b: str | None) -> bool:
    """Whether two storage URIs name the same place (``file://`` vs plain paths, trailing slashes).

    Anything empty or malformed is never the same as anything, not even an identical string.
    """
    if not a or not b:
        return False
    try:
        return parse_uri(a) == parse_uri(b)
    except StorageURIError:
        return False


def is_within(uri: str, prefixes: list[str]) -> bool:
    """Whether ``uri`` lies at or below one of ``prefixes``.

    S3 locations are compared as parsed keys. Local paths are compared after resolving symlinks on
    both sides, so a symlink inside a prefix that points outside it is outside.
    """
    loc = parse_uri(uri)
    bases = [parse_uri(prefix) for prefix in prefixes]
    if loc.scheme == "file":
        real = Path(os.path.realpath(loc.key))
        return any(b.scheme == "file" and real.is_relative_to(os.path.realpath(b.key)) for b in bases)
    for base in bases:
        if base.scheme != loc.scheme or base.bucket != loc.bucket:
            continue
        if not base.key or loc.key == base.key.rstrip("/") or loc.key.startswith(base.key.rstrip("/") + "/"):
            return True
    return False


@dataclass(frozen=True)
class ObjectInfo:
    """What a cheap HEAD / stat / listing tells about one object.

    ``etag`` is a version token, not only S3's ETag: it changes whenever the object is written again,
    even with the same content (S3: ETag, LastModified and VersionId; local: mtime, ctime, size, inode).
    """

    size: int
    etag: str


# --------------------------------------------------------------------------------------------- S3 client


def _s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=SOCKET_READ_TIMEOUT_S,
        ),
    )


_client_cache: dict[int, Any] = {}


def s3_client() -> Any:
    """A boto3 S3 client for this process (endpoint and credentials from the standard AWS sources)."""
    key = os.getpid()
    if key not in _client_cache:
        _client_cache[key] = _s3_client()
    return _client_cache[key]


def reset_clients() -> None:
    """Forget cached clients (after the environment's endpoint or credentials changed)."""
    _client_cache.clear()


_NOT_FOUND = ("404", "NoSuchKey", "NotFound")
_DENIED = (
    "403",
    "AccessDenied",
    "Forbidden",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccountProblem",
)


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _s3_call(fn: Callable[..., T], loc: Location, **kwargs: Any) -> T:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as exc:
        code = _error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _NOT_FOUND:
            raise ObjectNotFound(f"no object at {loc.uri}") from exc
        if code == "NoSuchBucket":
            raise StorageError(f"bucket {loc.bucket!r} does not exist ({loc.uri})") from exc
        if code in _DENIED or status == 403:
            raise AccessDenied(
                f"access denied to {loc.uri} (S3 {code or 403}): check the credentials and the bucket "
                "policy of this reader"
            ) from exc
        raise StorageError(f"S3 error {code or exc} for {loc.uri}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 unreachable for {loc.uri}: {exc}") from exc


def _http_date(value: Any) -> str:
    """A LastModified value (datetime or HTTP date header) as ISO text, or '' when absent."""
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return value
    return value.isoformat()


WRITE_ID_KEY = "rlops-write-id"  # user metadata that write_bytes sets: a fresh id per write


def _s3_token(resp: dict[str, Any]) -> str:
    """S3's version token from a HEAD/GET/listing entry: ETag (the content's MD5) and LastModified,
    plus VersionId on a versioned bucket and the write id that :func:`write_bytes` stores, so that
    writing the same bytes again, even within the same second, yields a new token."""
    token = f"{resp.get('ETag') or ''}|{_http_date(resp.get('LastModified'))}"
    version_id = resp.get("VersionId")
    if version_id and version_id != "null":
        token += f"|v={version_id}"
    write_id = (resp.get("Metadata") or {}).get(WRITE_ID_KEY)
    if write_id:
        token += f"|w={write_id}"
    return token


def _read_body(body: Any, limit: int | None, cancelled: threading.Event, what: str) -> bytes:
    """Read a streaming body, one socket read at a time, refusing more than ``limit`` bytes."""
    raw = getattr(body, "_raw_stream", None)
    read = raw.read1 if raw is not None and hasattr(raw, "read1") else body.read
    out = bytearray()
    try:
        while True:
            if cancelled.is_set():
                raise StorageTimeout(f"reading {what} was abandoned at its deadline")
            chunk = read(CHUNK_BYTES if limit is None else min(CHUNK_BYTES, limit + 1 - len(out)))
            if not chunk:
                return bytes(out)
            out += chunk
            if limit is not None and len(out) > limit:
                raise LimitExceeded(f"{what} is larger than {limit} bytes")
    finally:
        body.close()


def _with_deadline(fn: Callable[[threading.Event], T], deadline_s: float | None, what: str) -> T:
    """Run ``fn`` with a total deadline: past it, raise StorageTimeout and tell ``fn`` to give up.

    botocore's timeouts apply to each socket read; a server that trickles a byte at a time never trips
    them. The work runs in a daemon thread, so the caller gets its answer at the deadline whatever the
    server does; the thread ends at its next socket read (within the per-read timeout).
    """
    if deadline_s is None:
        return fn(threading.Event())
    cancelled = threading.Event()
    done = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn(cancelled)
        except BaseException as exc:  # handed to the caller below
            result["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=f"rlops-read {what[:40]}", daemon=True).start()
    if not done.wait(deadline_s):
        cancelled.set()
        raise StorageTimeout(
            f"reading {what} took longer than {deadline_s:g} s (a slow or stalled store); it will be "
            "tried again"
        )
    if "error" in result:
        raise result["error"]
    return result["value"]


def _s3_get_small(loc: Location, *, max_bytes: int | None, cancelled: threading.Event) -> tuple[bytes, str]:
    """One GET (ranged to ``max_bytes + 1`` bytes when bounded): the bytes and their version token."""
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key}
    if max_bytes is not None:
        kwargs["Range"] = f"bytes=0-{max_bytes}"
    try:
        resp = _s3_call(s3_client().get_object, loc, **kwargs)
    except StorageError as exc:
        cause = exc.__cause__
        if not (isinstance(cause, ClientError) and _error_code(cause) == "InvalidRange" and max_bytes):
            raise
        # Only an empty object cannot satisfy bytes=0-N: read it unranged (still bounded below).
        kwargs.pop("Range")
        resp = _s3_call(s3_client().get_object, loc, **kwargs)
    token = _s3_token(resp)
    total = _total_size(resp)
    if max_bytes is not None and total is not None and total > max_bytes:
        resp["Body"].close()
        raise LimitExceeded(f"{loc.uri} is {total} bytes, over the limit of {max_bytes} bytes")
    return _read_body(resp["Body"], max_bytes, cancelled, loc.uri), token


def _total_size(resp: dict[str, Any]) -> int | None:
    """The object's whole size from a (ranged) GET: Content-Range's total, else Content-Length."""
    content_range = str(resp.get("ContentRange") or "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = resp.get("ContentLength")
    return int(length) if length is not None and not content_range else None


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
            return _s3_get_small(loc, max_bytes=max_bytes, cancelled=cancelled)[0]

        return _with_deadline(get, deadline_s, loc.uri)
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
        client = s3_client()
        metadata = {WRITE_ID_KEY: uuid.uuid4().hex}
        _s3_call(client.put_object, loc, Bucket=loc.bucket, Key=loc.key, Body=data, Metadata=metadata)
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
        head = _s3_call(s3_client().head_object, loc, Bucket=loc.bucket, Key=loc.key)
        token = _s3_token(head)
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
        head = _s3_call(s3_client().head_object, loc, Bucket=loc.bucket, Key=loc.key)
        token = _s3_token(head)
        if etag and token == etag:
            return None, etag
        size = int(head.get("ContentLength") or 0)
        if max_bytes is not None and size > max_bytes:
            raise LimitExceeded(f"{loc.uri} is {size} bytes, over the limit of {max_bytes} bytes", token)
        data, token = _s3_get_small(loc, max_bytes=max_bytes, cancelled=cancelled)
        if etag and token == etag:
            return None, etag  # written back between the HEAD and the GET: no new version after all
        return data, token

    return _with_deadline(poll, READ_DEADLINE_S if deadline_s is None else deadline_s, loc.uri)


# --------------------------------------------------------------------------------------------- listing


def list_objects(uri: str, *, max_objects: int | None = None) -> dict[str, ObjectInfo]:
    """Every object below a directory URI, as relative key → size and version token.

    Keys are checked with :func:`rlops_core.keys.check_key` (UnsafeKeyError names the first bad one).
    Locally, symlinks and anything but regular files and folders are refused (UnsafeKeyError). More
    than ``max_objects`` objects raise LimitExceeded.
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
        paginator = s3_client().get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=loc.bucket, Prefix=prefix))
        while (page := _s3_call(lambda: next(pages, None), loc)) is not None:
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                if rel == "" or _is_marker(rel):
                    continue  # a directory marker (pyarrow and consoles write them), not a file
                token = _s3_token(obj)
                add(rel, ObjectInfo(int(obj["Size"]), token))
        return out
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


def list_files(uri: str, *, max_objects: int | None = None) -> dict[str, int]:
    """Every object below a directory URI, as relative key → size (see :func:`list_objects`)."""
    return {rel: info.size for rel, info in list_objects(uri, max_objects=max_objects).items()}


# --------------------------------------------------------------------------------------------- streaming


def iter_chunks(uri: str, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Stream one object in chunks (for hashing large files without holding them)."""
    for chunk, _ in _iter_versioned(uri, chunk_size):
        yield chunk


def _iter_versioned(uri: str, chunk_size: int = CHUNK_BYTES) -> Iterator[tuple[bytes, str]]:
    """Chunks of one object, each with the version token of what is being read."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        resp = _s3_call(s3_client().get_object, loc, Bucket=loc.bucket, Key=loc.key)
        token = _s3_token(resp)
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
                client = s3_client()
                _s3_call(client.upload_file, target, Filename=str(path), Bucket=target.bucket, Key=target.key)


def check_reachable(uri: str) -> None:
    """Fail fast with a clear StorageError when the storage root cannot be used."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        try:
            _s3_call(s3_client().head_bucket, loc, Bucket=loc.bucket)
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
