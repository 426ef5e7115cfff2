"""The durable decision log of progressive delivery: served actions and feedback, joined into episodes.

**Records** (one JSON object per line, ``"type"`` says which): a :class:`DecisionRecord` for every
answered request that carried an ``episode_id`` (slot, checkpoint, action, the probability of that action,
and in shadow mode the challenger's probability of the same action), and a :class:`FeedbackRecord` for
every accepted ``POST /feedback`` (reward, done).

**Layout** under the storage root (the same root capture uses)::

    <root>/<app>/decisions/<yyyymmdd>/<hh>/<writer>-<seq>.jsonl

``<yyyymmdd>/<hh>`` is the UTC hour at which the writer *wrote* the object (not when its records were made),
``<writer>`` is ``<replica>.<nonce>``, unique per writer instance (a restarted replica is a new writer), and
``<seq>`` is that writer's object number, zero-padded to 10 digits. Objects are written whole, once, by a
single background thread per writer in ``seq`` order, and never rewritten or appended to, so any object store
works (S3 has no append).

**Reading** is incremental (:class:`DecisionLogReader`): the cursor (:class:`LogCursor`, small and JSON-able,
kept in the rollout's status) holds the oldest hour partition still listed and, per writer, the highest
``seq`` already read. A poll lists only the partitions from the cursor's hour (at most ``lookback_hours``
before now) to now, and reads only objects above each writer's mark. An object written more than
``lookback_hours`` after its partition's hour ended is missed; that needs a writer stalled (or a clock
skewed) by hours and is documented in docs/progressive.md.

**Joining** (:class:`EpisodeJoiner`) groups records by ``episode_id``. An episode is finished
``settle_seconds`` after its ``done`` feedback was read (so decisions another replica has not flushed yet
still arrive); episodes served by both slots are ``mixed`` (reported, never credited to either slot).

Nothing here imports the project's other packages, Ray or torch; I/O goes through :mod:`rlops_core.storage`.
"""

from __future__ import annotations

import bisect
import json
import re
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from . import storage
from .offpolicy import LoggedEpisode, LoggedStep

EPISODE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
EpisodeId = Annotated[str, StringConstraints(pattern=EPISODE_ID_PATTERN)]
Slot = Literal["champion", "challenger"]
SLOTS: tuple[Slot, Slot] = ("champion", "challenger")

LOG_DIR = "decisions"
_NAME = re.compile(r"^(?P<writer>[A-Za-z0-9_.-]+)-(?P<seq>\d{10})\.jsonl$")
_PARTITION = "%Y%m%d/%H"


# ------------------------------------------------------------------------------------------------ records
class ShadowScore(BaseModel):
    """What the challenger made of the same observation in shadow mode (logged, never returned)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint_uri: str
    prob: float | None = Field(
        None, ge=0.0, le=1.0, description="Challenger's probability of the served action."
    )
    probs: list[float] | None = Field(None, description="Challenger's distribution over discrete actions.")
    action: Any = Field(None, description="The action the challenger would have sampled.")
    value: float | None = Field(None, description="The challenger's value estimate of the observation.")
    error: str | None = Field(None, description="Why the challenger could not score, if it could not.")


class DecisionRecord(BaseModel):
    """One answered request of an episode."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["decision"] = "decision"
    episode_id: EpisodeId
    step: int | None = Field(
        None, ge=0, description="The client's step index in the episode, if it sent one."
    )
    replica: str
    seq: int = Field(..., ge=0, description="Record number within the writer (orders one replica's records).")
    time: float = Field(..., description="Unix time the answer was produced (the replica's clock).")
    slot: Slot
    checkpoint_uri: str = Field(..., description="The checkpoint that answered.")
    mode: Literal["none", "shadow", "canary"] = "none"
    weight: float = Field(0.0, ge=0.0, le=1.0, description="Challenger weight in force.")
    challenger_uri: str | None = Field(
        None, description="Challenger checkpoint in force (None: champion only)."
    )
    action: Any
    prob: float | None = Field(None, ge=0.0, le=1.0, description="Probability of the served action.")
    probs: list[float] | None = None
    deterministic: bool = False
    observation: Any = None
    shadow: ShadowScore | None = None
    latency_ms: float | None = Field(None, ge=0.0)
    error: str | None = Field(
        None, description="The answering slot failed (a server error), e.g. 'policy_error'."
    )


class FeedbackRecord(BaseModel):
    """One accepted ``POST /feedback``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["feedback"] = "feedback"
    episode_id: EpisodeId
    reward: float = Field(..., allow_inf_nan=False)
    done: bool = False
    step: int | None = Field(None, ge=0)
    replica: str
    seq: int = Field(..., ge=0)
    time: float


Record = Annotated[DecisionRecord | FeedbackRecord, Field(discriminator="type")]
_RECORD = TypeAdapter(Record)


def encode(records: Iterable[DecisionRecord | FeedbackRecord]) -> bytes:
    """JSONL bytes for one object (compact, one record per line, trailing newline)."""
    return "".join(r.model_dump_json(exclude_none=True) + "\n" for r in records).encode("utf-8")


def decode(data: bytes) -> tuple[list[DecisionRecord | FeedbackRecord], int]:
    """Records of one object and the number of lines that were not valid records (skipped, counted)."""
    out: list[DecisionRecord | FeedbackRecord] = []
    bad = 0
    for line in data.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            out.append(_RECORD.validate_python(json.loads(line)))
        except (ValueError, ValidationError):
            bad += 1
    return out, bad


# ------------------------------------------------------------------------------------------------ layout
def log_root(root: str, app: str) -> str:
    """``<root>/<app>/decisions``."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,253}", app or ""):
        raise ValueError(f"application name {app!r} cannot name a log folder: use letters, digits, _ . -")
    return storage.join_uri(root, app, LOG_DIR)


def new_writer_id(replica: str) -> str:
    """``<replica>.<nonce>``: unique per writer instance, safe in an object name."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", replica or "replica")[:80] or "replica"
    return f"{clean}.{secrets.token_hex(4)}"


def partition_of(ts: float) -> str:
    """The UTC hour partition ``yyyymmdd/hh`` of a Unix time."""
    return datetime.fromtimestamp(ts, UTC).strftime(_PARTITION)


def object_uri(root: str, app: str, writer: str, seq: int, written_at: float) -> str:
    """Where a writer's ``seq``-th object, written at ``written_at``, goes."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", writer):
        raise ValueError(f"writer id {writer!r} must be letters, digits, _ . - (use new_writer_id())")
    return storage.join_uri(log_root(root, app), partition_of(written_at), f"{writer}-{seq:010d}.jsonl")


def _partitions(start: str, end_ts: float) -> list[str]:
    begin = datetime.strptime(start, _PARTITION).replace(tzinfo=UTC)
    end = datetime.fromtimestamp(end_ts, UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    out = []
    while begin <= end:  # one hour past now absorbs a writer whose clock runs ahead
        out.append(begin.strftime(_PARTITION))
        begin += timedelta(hours=1)
    return out


# ------------------------------------------------------------------------------------------------ reader
class WriterMark(BaseModel):
    """How far one writer's objects have been read."""

    seq: int
    partition: str


class LogCursor(BaseModel):
    """Where incremental reading stands; small enough for a status field (``model_dump()`` is JSON-able)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    partition: str = Field(..., pattern=r"^\d{8}/\d{2}$", description="Oldest hour partition still listed.")
    writers: dict[str, WriterMark] = Field(default_factory=dict)

    @classmethod
    def starting_at(cls, ts: float) -> LogCursor:
        """A cursor that reads objects written from ``ts``'s hour on."""
        return cls(partition=partition_of(ts))


@dataclass
class ReadResult:
    """What one poll read."""

    records: list[DecisionRecord | FeedbackRecord] = field(default_factory=list)
    objects: int = 0
    bad_lines: int = 0
    missing_objects: int = 0
    errors: list[str] = field(default_factory=list)


class DecisionLogReader:
    """Lists and reads the objects written since the cursor; never re-reads one."""

    def __init__(
        self, root: str, app: str, cursor: LogCursor | dict[str, Any] | None, *, lookback_hours: int = 2
    ) -> None:
        self.base = log_root(root, app)
        if lookback_hours < 1:
            raise ValueError("lookback_hours must be at least 1")
        self.lookback_hours = lookback_hours
        self.cursor: LogCursor | None = (
            LogCursor.model_validate(cursor) if isinstance(cursor, dict) else cursor
        )

    def poll(self, now: float) -> ReadResult:
        """Read every new object. A storage error stops that writer for this poll (retried next poll)."""
        cursor = self.cursor or LogCursor.starting_at(now)
        floor = partition_of(now - self.lookback_hours * 3600)
        start = max(cursor.partition, floor)
        result = ReadResult()
        listed: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
        for part in _partitions(start, now):
            try:
                names = storage.list_files(storage.join_uri(self.base, part))
            except storage.StorageError as exc:
                result.errors.append(f"listing {part}: {exc}")
                self.cursor = cursor  # nothing read from here on; keep the old cursor
                return result
            for name in names:
                m = _NAME.match(name)
                if not m:
                    continue
                writer, seq = m["writer"], int(m["seq"])
                mark = cursor.writers.get(writer)
                if mark is None or seq > mark.seq:
                    listed[writer].append((seq, part, name))
        writers = dict(cursor.writers)
        for writer, objs in sorted(listed.items()):
            for seq, part, name in sorted(objs):
                try:
                    data = storage.read_bytes(storage.join_uri(self.base, part, name))
                except storage.ObjectNotFound:
                    result.missing_objects += 1  # deleted by a lifecycle rule after listing: nothing to read
                except storage.StorageError as exc:
                    result.errors.append(f"reading {part}/{name}: {exc}")
                    break  # keep this writer's order: retry from here next poll
                else:
                    records, bad = decode(data)
                    result.records.extend(records)
                    result.bad_lines += bad
                    result.objects += 1
                writers[writer] = WriterMark(seq=seq, partition=part)
        # forget writers whose last object is older than any partition the next poll lists
        writers = {w: m for w, m in writers.items() if m.partition >= start}
        self.cursor = LogCursor(partition=start, writers=writers)
        return result


# ------------------------------------------------------------------------------------------------ join
@dataclass
class Episode:
    """A finished episode: its decisions in order, the reward credited to each, and which slot served it."""

    episode_id: str
    decisions: list[DecisionRecord]
    rewards: list[float]  # one per decision: feedback credited to the latest decision before it
    feedback: int
    ended_at: float

    @property
    def slot(self) -> Literal["champion", "challenger", "mixed"]:
        slots = {d.slot for d in self.decisions}
        return "mixed" if len(slots) > 1 else next(iter(slots))  # type: ignore[return-value]

    @property
    def total_return(self) -> float:
        return float(sum(self.rewards))

    @property
    def started_at(self) -> float:
        return self.decisions[0].time

    @property
    def mode(self) -> str:
        return self.decisions[0].mode

    @property
    def weight(self) -> float:
        return self.decisions[0].weight

    @property
    def challenger_uri(self) -> str | None:
        return self.decisions[0].challenger_uri

    @property
    def errors(self) -> int:
        return sum(d.error is not None for d in self.decisions)

    def off_policy_steps(self) -> LoggedEpisode | None:
        """The episode for an off-policy estimate, or None when a step lacks a probability it needs.

        Needs every decision answered by the champion (sampled, with its probability) and scored by the
        challenger in shadow mode (its probability of the same action).
        """
        steps = []
        for d, r in zip(self.decisions, self.rewards, strict=True):
            sh = d.shadow
            if d.slot != "champion" or d.deterministic or not d.prob or sh is None or sh.prob is None:
                return None
            state = _hashable(d.observation)
            action = d.action if isinstance(d.action, int) and not isinstance(d.action, bool) else None
            probs = tuple(sh.probs) if sh.probs else None
            steps.append(LoggedStep(d.prob, sh.prob, r, state=state, action=action, target_probs=probs))
        return LoggedEpisode(tuple(steps), self.episode_id)


def _hashable(value: Any) -> Any:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _credit(decisions: list[DecisionRecord], feedback: list[FeedbackRecord]) -> list[float]:
    """Credit each reward to the latest decision made before it (by step index when all carry one)."""
    rewards = [0.0] * len(decisions)
    by_step = all(d.step is not None for d in decisions) and all(f.step is not None for f in feedback)
    keys = [float(d.step) if by_step else d.time for d in decisions]  # type: ignore[arg-type]
    order = sorted(range(len(decisions)), key=lambda i: keys[i])
    sorted_keys = [keys[i] for i in order]
    for f in feedback:
        at = float(f.step) if by_step else f.time  # type: ignore[arg-type]
        pos = bisect.bisect_right(sorted_keys, at) - 1  # the latest decision at or before the feedback
        rewards[order[max(pos, 0)]] += f.reward
    return rewards


@dataclass
class _Open:
    decisions: list[DecisionRecord] = field(default_factory=list)
    feedback: list[FeedbackRecord] = field(default_factory=list)
    done_seen_at: float | None = None
    last_seen_at: float = 0.0


@dataclass
class JoinCounters:
    """Records that did not make a finished episode, by why (all reported, none silently lost)."""

    orphan_feedback: int = 0  # episodes with feedback and done but no decision (unknown episode)
    late_records: int = 0  # records for an episode already finished
    abandoned: int = 0  # episodes with no done feedback for abandon_seconds
    bad_lines: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class EpisodeJoiner:
    """Groups decisions and feedback by episode; hands out episodes once finished and settled."""

    def __init__(self, settle_seconds: float = 30.0, abandon_seconds: float = 3600.0) -> None:
        if settle_seconds < 0 or abandon_seconds <= settle_seconds:
            raise ValueError("need 0 <= settle_seconds < abandon_seconds")
        self.settle_seconds = settle_seconds
        self.abandon_seconds = abandon_seconds
        self._open: dict[str, _Open] = {}
        self._closed: dict[str, float] = {}
        self.counters = JoinCounters()

    @property
    def open_episodes(self) -> int:
        return len(self._open)

    def add(self, records: Sequence[DecisionRecord | FeedbackRecord], now: float) -> None:
        for rec in records:
            if rec.episode_id in self._closed:
                self.counters.late_records += 1
                continue
            ep = self._open.setdefault(rec.episode_id, _Open())
            ep.last_seen_at = now
            if isinstance(rec, DecisionRecord):
                ep.decisions.append(rec)
            else:
                ep.feedback.append(rec)
                if rec.done and ep.done_seen_at is None:
                    ep.done_seen_at = now

    def finished(self, now: float) -> list[Episode]:
        """Episodes whose ``done`` was read at least ``settle_seconds`` ago, oldest first."""
        out = []
        for eid in list(self._open):
            ep = self._open[eid]
            if ep.done_seen_at is not None and now - ep.done_seen_at >= self.settle_seconds:
                del self._open[eid]
                self._closed[eid] = now
                if not ep.decisions:
                    self.counters.orphan_feedback += 1
                    continue
                decisions = sorted(ep.decisions, key=_decision_order)
                feedback = sorted(ep.feedback, key=lambda f: (f.step if f.step is not None else -1, f.time))
                out.append(
                    Episode(
                        eid,
                        decisions,
                        _credit(decisions, feedback),
                        len(feedback),
                        max(f.time for f in feedback),
                    )
                )
            elif now - ep.last_seen_at >= self.abandon_seconds:
                del self._open[eid]
                self.counters.abandoned += 1
        for eid, at in list(self._closed.items()):
            if now - at >= self.abandon_seconds:
                del self._closed[eid]
        out.sort(key=lambda e: (e.ended_at, e.episode_id))
        return out


def _decision_order(d: DecisionRecord) -> tuple[float, float, str, int]:
    return (d.step if d.step is not None else -1, d.time, d.replica, d.seq)


@dataclass
class PollResult:
    """Finished episodes and the bookkeeping of one poll."""

    episodes: list[Episode]
    decisions: list[
        DecisionRecord
    ]  # every decision read by this poll (for request, error and latency counts)
    cursor: dict[str, Any]
    objects: int
    open_episodes: int
    counters: dict[str, int]
    errors: list[str]


class EpisodeStream:
    """A reader and a joiner together: ``poll(now)`` returns newly finished episodes and the new cursor.

    The joiner's open episodes live in memory. After a restart, build the stream again from the cursor saved
    when the stage began (not the latest one), so episodes that were open are read whole again.
    """

    def __init__(
        self,
        root: str,
        app: str,
        cursor: LogCursor | dict[str, Any] | None,
        *,
        settle_seconds: float = 30.0,
        abandon_seconds: float = 3600.0,
        lookback_hours: int = 2,
    ) -> None:
        self.reader = DecisionLogReader(root, app, cursor, lookback_hours=lookback_hours)
        self.joiner = EpisodeJoiner(settle_seconds, abandon_seconds)

    def poll(self, now: float) -> PollResult:
        read = self.reader.poll(now)
        self.joiner.add(read.records, now)
        self.joiner.counters.bad_lines += read.bad_lines
        episodes = self.joiner.finished(now)
        assert self.reader.cursor is not None
        return PollResult(
            episodes=episodes,
            decisions=[r for r in read.records if isinstance(r, DecisionRecord)],
            cursor=self.reader.cursor.model_dump(),
            objects=read.objects,
            open_episodes=self.joiner.open_episodes,
            counters=self.joiner.counters.as_dict(),
            errors=read.errors,
        )
