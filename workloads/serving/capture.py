"""Opt-in data capture: a sampled share of request/response records written as JSONL, off the request path.

Records go to ``<root>/capture/<app>/<yyyy>/<mm>/<dd>/<hh>/<time>-<replica>-<seq>.jsonl`` (UTC hour of the
record). The request path only samples and enqueues; a background thread serialises and writes batches.
A full queue drops records and a failed write drops its batch: both are counted, neither fails a request.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rlops_core import storage

log = logging.getLogger("ray.serve")


class CaptureSettings(BaseModel):
    """``user_config.capture``. Credentials never go here: they come from the standard AWS sources."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    root: str = Field("", description="Storage root (s3://bucket/prefix or a local path).")
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    flush_records: int = Field(200, ge=1, le=100_000)
    flush_seconds: float = Field(5.0, gt=0.0, le=3600.0)
    max_queue: int = Field(10_000, ge=1)
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint, if not the standard AWS one.")


class CaptureWriter:
    """Samples records into a bounded queue; a daemon thread writes them in batches."""

    def __init__(
        self,
        settings: CaptureSettings,
        app: str,
        replica: str,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int, str], None] | None = None,
    ) -> None:
        if settings.enabled:
            storage.parse_uri(settings.root)  # a malformed root fails reconfigure, not a later write
        self.settings = settings
        self.app = app
        self.replica = replica.replace("/", "_").replace("#", "_")
        self._queue: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue(maxsize=settings.max_queue)
        self._on_written = on_written or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n, why: None)
        self._stop = threading.Event()
        self._seq = 0
        self._client: Any = None
        self.written = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="rlops-capture", daemon=True)
        if settings.enabled:
            self._thread.start()

    def offer(self, record: dict[str, Any]) -> None:
        """Maybe enqueue one record (cheap; never raises)."""
        if not self.settings.enabled or random.random() >= self.settings.sample_rate:
            return
        try:
            self._queue.put_nowait((time.time(), record))
        except queue.Full:
            self.dropped += 1
            self._on_dropped(1, "queue_full")

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued and stop the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.settings.enabled,
            "root": self.settings.root,
            "sample_rate": self.settings.sample_rate,
            "written": self.written,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }

    def _run(self) -> None:
        while True:
            batch = self._collect()
            if batch:
                self._write(batch)
            if self._stop.is_set() and self._queue.empty():
                return

    def _collect(self) -> list[tuple[float, dict[str, Any]]]:
        batch: list[tuple[float, dict[str, Any]]] = []
        deadline = time.monotonic() + self.settings.flush_seconds
        while len(batch) < self.settings.flush_records:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._stop.is_set() and self._queue.empty()):
                break
            try:
                batch.append(self._queue.get(timeout=min(remaining, 0.2)))
            except queue.Empty:
                continue
        return batch

    def _write(self, batch: list[tuple[float, dict[str, Any]]]) -> None:
        by_hour: dict[str, list[str]] = defaultdict(list)
        for ts, record in batch:
            when = datetime.fromtimestamp(ts, UTC)
            line = {
                "event_id": str(uuid.uuid4()),
                "time": when.isoformat(timespec="milliseconds"),
                "app": self.app,
                "replica": self.replica,
                **record,
            }
            by_hour[when.strftime("%Y/%m/%d/%H")].append(json.dumps(line, separators=(",", ":")))
        for hour, lines in by_hour.items():
            self._seq += 1
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            name = f"{stamp}-{self.replica}-{self._seq:06d}.jsonl"
            uri = storage.join_uri(self.settings.root, "capture", self.app, hour, name)
            try:
                self._put(uri, ("\n".join(lines) + "\n").encode())
            except Exception as exc:  # a capture failure must never reach a request
                self.dropped += len(lines)
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("capture: dropped %d records, write to %s failed: %s", len(lines), uri, exc)
                self._on_dropped(len(lines), "write_failed")
            else:
                self.written += len(lines)
                self._on_written(len(lines))

    def _put(self, uri: str, data: bytes) -> None:
        loc = storage.parse_uri(uri)
        if loc.scheme != "s3" or not self.settings.endpoint_url:
            storage.write_bytes(uri, data)
            return
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.settings.endpoint_url)
        self._client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
