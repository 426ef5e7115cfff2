"""The S3 side of storage: one boto3 client per process, S3 errors mapped to storage errors, version
tokens, and bounded reads (ranged, with a total deadline).

Endpoints come from the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables, which boto3
reads itself; credentials only from the standard AWS sources. boto3 is imported lazily.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from rlops_core.errors import (
    AccessDenied,
    LimitExceeded,
    ObjectNotFound,
    StorageError,
    StorageTimeout,
)
from rlops_core.uris import Location

CONNECT_TIMEOUT_S = 5
SOCKET_READ_TIMEOUT_S = 20  # botocore's read_timeout: per socket read, not per request
CHUNK_BYTES = 1 << 20

T = TypeVar("T")


def _new_client() -> Any:
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
        _client_cache[key] = _new_client()
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


def call(fn: Callable[..., T], loc: Location, **kwargs: Any) -> T:
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


def version_token(resp: dict[str, Any]) -> str:
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


def run_with_deadline(fn: Callable[[threading.Event], T], deadline_s: float | None, what: str) -> T:
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


def get_small(loc: Location, *, max_bytes: int | None, cancelled: threading.Event) -> tuple[bytes, str]:
    """One GET (ranged to ``max_bytes + 1`` bytes when bounded): the bytes and their version token."""
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key}
    if max_bytes is not None:
        kwargs["Range"] = f"bytes=0-{max_bytes}"
    try:
        resp = call(s3_client().get_object, loc, **kwargs)
    except StorageError as exc:
        cause = exc.__cause__
        if not (isinstance(cause, ClientError) and _error_code(cause) == "InvalidRange" and max_bytes):
            raise
        # Only an empty object cannot satisfy bytes=0-N: read it unranged (still bounded below).
        kwargs.pop("Range")
        resp = call(s3_client().get_object, loc, **kwargs)
    token = version_token(resp)
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
