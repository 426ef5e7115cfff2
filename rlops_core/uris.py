"""Storage URIs: ``s3://bucket/prefix``, ``file://`` URIs and plain local paths, parsed and compared.

Joins never collapse or strip what a key says: a part that could leave its base (``..``, ``//``,
backslashes, control characters) is refused (see :mod:`rlops_core.keys`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from rlops_core import keys
from rlops_core.errors import StorageURIError, UnsafeKeyError


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
