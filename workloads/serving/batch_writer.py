"""A background batch writer: the request path enqueues, one daemon thread writes batches.

The pattern capture uses, as a base to share: a bounded queue (a full queue drops the item and counts it,
never blocks), a batch flushed when it reaches ``flush_records`` items or ``flush_seconds`` after its first
item, a failed write dropping its batch (counted, logged, never raised to a request), and ``close()``
flushing what is queued. Subclasses implement :meth:`write_batch`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger("ray.serve")

T = TypeVar("T")


class BackgroundBatchWriter(Generic[T]):
    """Bounded queue + daemon thread + batch flush by size or time. Never blocks or raises on ``offer``."""

    def __init__(
        self,
        *,
        name: str,
        flush_records: int,
        flush_seconds: float,
        max_queue: int,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int, str], None] | None = None,
        start: bool = True,
    ) -> None:
        if flush_records < 1 or flush_seconds <= 0 or max_queue < 1:
            raise ValueError("need flush_records >= 1, flush_seconds > 0 and max_queue >= 1")
        self.flush_records = flush_records
        self.flush_seconds = flush_seconds
        self._queue: queue.Queue[T] = queue.Queue(maxsize=max_queue)
        self._on_written = on_written or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n, why: None)
        self._stop = threading.Event()
        self._closed = False
        self.written = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        if start:
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def offer(self, item: T) -> bool:
        """Enqueue one item; False (and counted) when the queue is full or the writer is closed."""
        if self._closed or not self._thread.is_alive():
            self._drop(1, "closed")
            return False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._drop(1, "queue_full")
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, flush what is queued, stop the thread (waits at most ``timeout`` seconds)."""
        self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "dropped": self.dropped,
            "queued": self._queue.qsize(),
            "last_error": self.last_error,
        }

    def write_batch(self, batch: list[T]) -> int:
        """Write one batch durably; return how many items it wrote. Raise to drop the batch."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ thread
    def _drop(self, n: int, why: str) -> None:
        self.dropped += n
        try:
            self._on_dropped(n, why)
        except Exception:  # a metrics callback must not break the writer
            log.debug("on_dropped callback failed", exc_info=True)

    def _run(self) -> None:
        while True:
            batch = self._collect()
            if batch:
                self._write(batch)
            if self._stop.is_set() and self._queue.empty():
                return

    def _collect(self) -> list[T]:
        batch: list[T] = []
        deadline: float | None = None
        while len(batch) < self.flush_records:
            if self._stop.is_set() and self._queue.empty():
                break
            remaining = 0.2 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=min(remaining, 0.2)))
            except queue.Empty:
                continue
            if deadline is None:
                deadline = time.monotonic() + self.flush_seconds  # the clock starts at the first item
        return batch

    def _write(self, batch: list[T]) -> None:
        try:
            n = self.write_batch(batch)
        except Exception as exc:  # a logging failure must never reach a request
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("%s: dropped %d records: %s", self._thread.name, len(batch), exc)
            self._drop(len(batch), "write_failed")
            return
        self.written += n
        if n < len(batch):
            self._drop(len(batch) - n, "invalid")
        try:
            self._on_written(n)
        except Exception:
            log.debug("on_written callback failed", exc_info=True)
