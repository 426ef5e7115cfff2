"""Object storage behind one small interface: local folders (the embedded default) and S3.

A storage URI is ``s3://bucket/prefix``, a ``file://`` URI or a plain local path. S3-compatible
endpoints come from the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables, which
boto3 reads itself; credentials come only from the standard AWS sources.

This module imports nothing heavier than boto3 (lazily), so the operator can use it without Ray.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse


class StorageError(Exception):
    """Storage could not be reached, or an object is missing or unreadable."""


class StorageURIError(StorageError, ValueError):
    """A storage URI is malformed."""


class ObjectNotFound(StorageError):
    """The named object does not exist."""


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
        """The location of ``parts`` below this one."""
        clean = [p.strip("/") for p in parts if p.strip("/")]
        if self.scheme == "s3":
            key = "/".join([self.key.rstrip("/"), *clean]) if self.key else "/".join(clean)
            return Location("s3", self.bucket, key)
        return Location("file", "", str(Path(self.key, *clean)))


_BUCKET_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-")


def parse_uri(uri: str) -> Location:
    """Parse ``s3://bucket/prefix``, ``file:///path`` or a local path; raise StorageURIError if malformed."""
    if not isinstance(uri, str) or not uri.strip():
        raise StorageURIError("storage URI is empty")
    uri = uri.strip()
    if "://" not in uri:
        return Location("file", "", _local_path(uri))
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageURIError(f"file URI must not name a host: {uri!r}")
        if not unquote(parsed.path).strip():
            raise StorageURIError(f"file URI names no path: {uri!r}")
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
        if "//" in key or any(part in (".", "..") for part in key.split("/")):
            raise StorageURIError(f"malformed S3 key in {uri!r}")
        return Location("s3", bucket, key)
    raise StorageURIError(
        f"unsupported storage scheme {parsed.scheme!r} in {uri!r} (use s3://, file:// or a path)"
    )


def _local_path(path: str) -> str:
    """An absolute local path with ``.`` and ``..`` folded away, so prefix checks cannot be escaped."""
    return os.path.normpath(Path(path).expanduser().absolute())


def join_uri(uri: str, *parts: str) -> str:
    """Join path parts below a storage URI and return the new URI."""
    return parse_uri(uri).join(*parts).uri


def is_within(uri: str, prefixes: list[str]) -> bool:
    """Whether ``uri`` lies at or below one of ``prefixes`` (compared as parsed locations)."""
    loc = parse_uri(uri)
    for prefix in prefixes:
        base = parse_uri(prefix)
        if base.scheme != loc.scheme or base.bucket != loc.bucket:
            continue
        if not base.key or loc.key == base.key.rstrip("/") or loc.key.startswith(base.key.rstrip("/") + "/"):
            return True
    return False


@dataclass(frozen=True)
class ObjectInfo:
    """What a cheap HEAD / stat tells about one object."""

    size: int
    etag: str


def _s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30),
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


def _s3_call(fn: Any, loc: Location, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            raise ObjectNotFound(f"no object at {loc.uri}") from exc
        if code == "NoSuchBucket":
            raise StorageError(f"bucket {loc.bucket!r} does not exist ({loc.uri})") from exc
        raise StorageError(f"S3 error {code or exc} for {loc.uri}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 unreachable for {loc.uri}: {exc}") from exc


def read_bytes(uri: str) -> bytes:
    """Read one object whole."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        client = s3_client()
        body = _s3_call(client.get_object, loc, Bucket=loc.bucket, Key=loc.key)["Body"]
        return body.read()
    try:
        return loc.path.read_bytes()
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"no file at {loc.uri}") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {loc.uri}: {exc}") from exc


def read_text(uri: str) -> str:
    """Read one object as UTF-8 text."""
    data = read_bytes(uri)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StorageError(f"{uri} is not UTF-8 text") from exc


def write_bytes(uri: str, data: bytes) -> None:
    """Write one object atomically (a local file is written beside and renamed into place)."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        client = s3_client()
        _s3_call(client.put_object, loc, Bucket=loc.bucket, Key=loc.key, Body=data)
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
    """Size and a change tag (S3 ETag, or mtime+size locally) without reading the object."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        head = _s3_call(s3_client().head_object, loc, Bucket=loc.bucket, Key=loc.key)
        return ObjectInfo(size=int(head["ContentLength"]), etag=str(head.get("ETag", "")))
    try:
        st = loc.path.stat()
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"no file at {loc.uri}") from exc
    return ObjectInfo(size=st.st_size, etag=f"{st.st_mtime_ns}-{st.st_size}-{st.st_ino}")


def read_if_changed(uri: str, etag: str | None) -> tuple[bytes | None, str]:
    """A conditional read: ``(None, etag)`` when the object still has ``etag``, else its bytes and new tag.

    On S3 this is one conditional GET (``If-None-Match``), so an idle poll costs one request.
    """
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key}
        if etag:
            kwargs["IfNoneMatch"] = etag
        try:
            resp = _s3_call(s3_client().get_object, loc, **kwargs)
        except StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and str(cause.response.get("Error", {}).get("Code")) in (
                "304",
                "NotModified",
            ):
                return None, etag or ""
            raise
        return resp["Body"].read(), str(resp.get("ETag", ""))
    info = stat(uri)
    if etag and info.etag == etag:
        return None, etag
    return read_bytes(uri), info.etag


def list_files(uri: str) -> dict[str, int]:
    """Every object below a directory URI, as relative path → size."""
    loc = parse_uri(uri)
    out: dict[str, int] = {}
    if loc.scheme == "s3":
        prefix = loc.key.rstrip("/") + "/" if loc.key else ""
        paginator = s3_client().get_paginator("list_objects_v2")
        pages = _s3_call(lambda **kw: list(paginator.paginate(**kw)), loc, Bucket=loc.bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue  # a directory marker (pyarrow and consoles write them), not a file
                out[obj["Key"][len(prefix) :]] = int(obj["Size"])
        return out
    root = loc.path
    if not root.is_dir():
        return out
    for path in root.rglob("*"):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = path.stat().st_size
    return out


def iter_chunks(uri: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Stream one object in chunks (for hashing large files without holding them)."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        body = _s3_call(s3_client().get_object, loc, Bucket=loc.bucket, Key=loc.key)["Body"]
        yield from iter(lambda: body.read(chunk_size), b"")
        return
    try:
        with loc.path.open("rb") as fh:
            yield from iter(lambda: fh.read(chunk_size), b"")
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"no file at {loc.uri}") from exc


def download_dir(uri: str, dest: Path) -> Path:
    """Copy a directory from storage to a local folder (a local source is copied too) and return it."""
    loc = parse_uri(uri)
    dest.mkdir(parents=True, exist_ok=True)
    if loc.scheme == "file":
        if not loc.path.is_dir():
            raise ObjectNotFound(f"no directory at {loc.uri}")
        shutil.copytree(loc.path, dest, dirs_exist_ok=True)
        return dest
    files = list_files(uri)
    if not files:
        raise ObjectNotFound(f"no objects below {loc.uri}")
    client = s3_client()
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        _s3_call(client.download_file, loc, Bucket=loc.bucket, Key=loc.join(rel).key, Filename=str(target))
    return dest


def upload_dir(src: Path, uri: str) -> None:
    """Copy a local folder into storage below ``uri``."""
    if not src.is_dir():
        raise StorageError(f"cannot upload {src}: not a directory")
    for path in sorted(src.rglob("*")):
        if path.is_file():
            rel = path.relative_to(src).as_posix()
            target = parse_uri(uri).join(rel)
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
