"""Writes the decision log (served actions and feedback) from a Serve replica, off the request path.

The request path calls :meth:`DecisionWriter.decision` or :meth:`DecisionWriter.feedback`: they stamp the
time and a record number and enqueue a plain dict (no validation, no I/O, never blocks, never raises). A
background thread validates the records against :mod:`rlops_core.decision_log`'s schemas and writes each batch
as one new object at ``<root>/<app>/decisions/<yyyymmdd>/<hh>/<writer>-<seq>.jsonl``. A write is retried a
few times under the same name (the same bytes, so a retry after a lost answer is harmless), then the batch is
dropped and counted. A restarted replica is a new writer with a new id, so nothing is ever overwritten.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import Retrying, stop_after_attempt, wait_exponential

from rlops_core import decision_log, storage
from rlops_core.decision_log import DecisionRecord, FeedbackRecord

from .batch_writer import BackgroundBatchWriter, log


class DecisionLogSettings(BaseModel):
    """Where and how often the decision log is written (``user_config.decision_log``)."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(..., min_length=1, description="Storage root (s3://bucket/prefix or a local path).")
    flush_records: int = Field(500, ge=1, le=100_000)
    flush_seconds: float = Field(2.0, gt=0.0, le=300.0)
    max_queue: int = Field(20_000, ge=1)
    write_attempts: int = Field(3, ge=1, le=10)


class DecisionWriter(BackgroundBatchWriter[dict[str, Any]]):
    """One replica's decision-log writer."""

    def __init__(
        self,
        settings: DecisionLogSettings,
        app: str,
        replica: str,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        storage.parse_uri(settings.root)  # a malformed root fails reconfigure, not a later write
        decision_log.log_root(settings.root, app)  # so does an application name that cannot be a folder
        self.settings = settings
        self.app = app
        self.replica = replica
        self.writer_id = decision_log.new_writer_id(replica)
        self._records = itertools.count()
        self._objects = itertools.count()
        self._clock = clock
        super().__init__(
            name="rlops-decision-log",
            flush_records=settings.flush_records,
            flush_seconds=settings.flush_seconds,
            max_queue=settings.max_queue,
            on_written=on_written,
            on_dropped=on_dropped,
        )

    # ------------------------------------------------------------------------- request path (cheap)
    def decision(self, **fields: Any) -> bool:
        """Log one answered request of an episode (fields of :class:`DecisionRecord`, minus the stamps)."""
        return self._offer("decision", fields)

    def feedback(self, episode_id: str, reward: float, done: bool, step: int | None = None) -> bool:
        """Log one accepted ``POST /feedback``."""
        return self._offer(
            "feedback", {"episode_id": episode_id, "reward": reward, "done": done, "step": step}
        )

    def _offer(self, kind: str, fields: dict[str, Any]) -> bool:
        fields.update(type=kind, replica=self.replica, seq=next(self._records))
        fields.setdefault("time", self._clock())
        return self.offer(fields)

    def status(self) -> dict[str, Any]:
        return {"root": self.settings.root, "writer": self.writer_id, **super().status()}

    # ------------------------------------------------------------------------------------ thread
    def write_batch(self, batch: list[dict[str, Any]]) -> int:
        records: list[DecisionRecord | FeedbackRecord] = []
        for raw in batch:
            try:
                model = DecisionRecord if raw.get("type") == "decision" else FeedbackRecord
                records.append(model.model_validate({k: v for k, v in raw.items() if v is not None}))
            except ValidationError as exc:
                log.warning("decision log: dropped an invalid %s record: %s", raw.get("type"), exc)
        if not records:
            return 0
        seq = next(self._objects)
        uri = decision_log.object_uri(self.settings.root, self.app, self.writer_id, seq, self._clock())
        data = decision_log.encode(records)
        for attempt in Retrying(
            stop=stop_after_attempt(self.settings.write_attempts),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        ):
            with attempt:
                storage.write_bytes(uri, data)
        return len(records)
