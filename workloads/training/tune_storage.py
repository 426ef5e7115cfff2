"""Tell Ray Tune where the storage root is, in the pyarrow terms it uses.

Tune writes through a ``pyarrow.fs.FileSystem``. For S3 we build one whose endpoint comes from the
standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables, so MinIO or a test server work.
The file system carries only the endpoint and region (it is pickled into the experiment's
``tuner.pkl``): credentials stay with the standard AWS sources. Tune copies ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN`` from the driver to its trial actors itself, so
workers started before those variables were set still reach the bucket.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from rlops_core import storage


@dataclass(frozen=True)
class TuneStorage:
    """``storage_path`` and ``storage_filesystem`` for Tune, and how to map its paths back to URIs."""

    root_uri: str
    storage_path: str
    filesystem: Any

    def uri_of(self, fs_path: str) -> str:
        """The storage URI of a path Tune reports (for S3 Tune reports ``bucket/key`` without a scheme)."""
        if storage.parse_uri(self.root_uri).scheme == "s3":
            return "s3://" + fs_path.lstrip("/")
        return storage.parse_uri(fs_path).uri

    def experiment_path(self, name: str) -> str:
        return f"{self.storage_path.rstrip('/')}/{name}"


def s3_endpoint() -> str | None:
    """The S3 endpoint from the standard variables (the service-specific one wins), if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_filesystem() -> Any:
    """A pyarrow S3FileSystem for the configured endpoint, region and path-style addressing."""
    from pyarrow import fs

    kwargs: dict[str, Any] = {}
    endpoint = s3_endpoint()
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return fs.S3FileSystem(**kwargs)


def tune_storage(root_uri: str) -> TuneStorage:
    """Tune's view of a storage root URI (local folder or ``s3://bucket/prefix``)."""
    from pyarrow import fs

    loc = storage.parse_uri(root_uri)
    if loc.scheme == "s3":
        path = f"{loc.bucket}/{loc.key}".rstrip("/")
        return TuneStorage(root_uri=loc.uri, storage_path=path, filesystem=s3_filesystem())
    loc.path.mkdir(parents=True, exist_ok=True)
    return TuneStorage(root_uri=loc.uri, storage_path=str(loc.path), filesystem=fs.LocalFileSystem())
