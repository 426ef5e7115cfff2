"""The decision log: schemas, layout, the replica-side writer, incremental reading and joining into episodes.

Storage is a local folder and moto's S3 server (server mode, real HTTP). Two "replicas" are two writers in
this process; a restart is a new writer for the same replica name.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rlops_core import decision_log, storage
from rlops_core.decision_log import (
    DecisionRecord,
    EpisodeJoiner,
    EpisodeStream,
    FeedbackRecord,
    LogCursor,
)
from workloads.serving.batch_writer import BackgroundBatchWriter
from workloads.serving.decision_writer import DecisionLogSettings, DecisionWriter

APP = "corridor"
T0 = 1_795_000_000.0  # 2026-11-18, a fixed clock for names and partitions


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/store"


def writer(root: str, replica: str, clock: Clock, **kw: Any) -> DecisionWriter:
    settings = DecisionLogSettings(root=root, flush_seconds=kw.pop("flush_seconds", 30.0), **kw)
    return DecisionWriter(settings, APP, replica, clock=clock)


def decide(
    w: DecisionWriter, eid: str, slot: str = "champion", *, step: int | None = None, **kw: Any
) -> None:
    fields: dict[str, Any] = {
        "episode_id": eid,
        "slot": slot,
        "checkpoint_uri": f"s3://b/{slot}",
        "mode": "canary",
        "weight": 0.5,
        "challenger_uri": "s3://b/challenger",
        "action": 1,
        "prob": 0.5,
        "step": step,
    }
    fields.update(kw)
    assert w.decision(**fields)


def objects(root: str) -> dict[str, int]:
    return storage.list_files(decision_log.log_root(root, APP))


# ------------------------------------------------------------------------------------------- schemas
def test_records_round_trip_and_bad_lines_are_counted() -> None:
    d = DecisionRecord(
        episode_id="e-1",
        replica="r",
        seq=0,
        time=T0,
        slot="champion",
        checkpoint_uri="u",
        action=[0.5, 1.0],
        prob=0.25,
        shadow={"checkpoint_uri": "c", "prob": 0.5},
    )
    f = FeedbackRecord(episode_id="e-1", reward=1.5, done=True, replica="r", seq=1, time=T0 + 1)
    data = decision_log.encode([d, f]) + b"not json\n" + b'{"type": "decision"}\n\n'
    records, bad = decision_log.decode(data)
    assert records == [d, f] and bad == 2
    assert b"null" not in decision_log.encode([d])  # absent fields are left out, not written as null


@pytest.mark.parametrize(
    "change, match",
    [
        ({"episode_id": "has space"}, "episode_id"),
        ({"episode_id": "x" * 129}, "episode_id"),
        ({"prob": 1.5}, "prob"),
        ({"slot": "third"}, "slot"),
        ({"unknown": 1}, "unknown"),
        ({"step": -1}, "step"),
    ],
)
def test_decision_schema_refuses_bad_fields(change: dict, match: str) -> None:
    base = {"episode_id": "e", "replica": "r", "seq": 0, "time": T0, "slot": "champion"}
    base |= {"checkpoint_uri": "u", "action": 0}
    with pytest.raises(ValidationError, match=match):
        DecisionRecord.model_validate({**base, **change})


def test_feedback_schema_refuses_non_finite_reward() -> None:
    with pytest.raises(ValidationError, match="reward"):
        FeedbackRecord(episode_id="e", reward=float("inf"), replica="r", seq=0, time=T0)


def test_layout_names() -> None:
    uri = decision_log.object_uri("s3://bkt/root", APP, "replica-1.ab12cd34", 7, T0)
    assert uri == "s3://bkt/root/corridor/decisions/20261118/11/replica-1.ab12cd34-0000000007.jsonl"
    wid = decision_log.new_writer_id("PolicyServer#abc/1")
    assert wid.startswith("PolicyServer_abc_1.") and wid != decision_log.new_writer_id("PolicyServer#abc/1")
    with pytest.raises(ValueError, match="application name"):
        decision_log.log_root("s3://bkt/root", "../etc")
    with pytest.raises(ValueError, match="writer id"):
        decision_log.object_uri("s3://bkt/root", APP, "a/b", 1, T0)


# ----------------------------------------------------------------------------- write, read, join
def test_two_replicas_joined_by_episode_incrementally_and_across_a_restart(root: str) -> None:
    clock = Clock()
    a, b = writer(root, "replica-a", clock), writer(root, "replica-b", clock)
    # e1: champion, decisions on both replicas, feedback on replica b. e2: challenger. e3: mixed.
    decide(a, "e1", step=0)
    decide(b, "e1", step=1)
    b.feedback("e1", 1.0, False, step=0)
    b.feedback("e1", 2.0, True, step=1)
    decide(a, "e2", "challenger", step=0, checkpoint_uri="s3://b/challenger")
    a.feedback("e2", 5.0, True, step=0)
    decide(a, "e3", "champion", step=0)
    decide(b, "e3", "challenger", step=1)
    a.feedback("e3", 1.0, True, step=1)
    a.close()
    b.close()
    assert a.written == 5 and b.written == 4 and a.dropped == b.dropped == 0

    stream = EpisodeStream(root, APP, LogCursor.starting_at(T0), settle_seconds=10)
    first = stream.poll(T0 + 1)
    assert first.objects == 2 and first.episodes == []  # done is read, but not settled yet
    assert first.open_episodes == 3
    settled = stream.poll(T0 + 12)
    assert settled.objects == 0  # nothing re-read
    by_id = {e.episode_id: e for e in settled.episodes}
    assert set(by_id) == {"e1", "e2", "e3"}
    assert (
        by_id["e1"].slot == "champion" and by_id["e1"].rewards == [1.0, 2.0] and by_id["e1"].total_return == 3
    )
    assert by_id["e2"].slot == "challenger" and by_id["e2"].total_return == 5
    assert by_id["e3"].slot == "mixed"
    assert [d.replica for d in by_id["e1"].decisions] == ["replica-a", "replica-b"]

    # replica a restarts: a new writer for the same replica name; nothing is overwritten
    before = objects(root)
    clock.t = T0 + 20
    a2 = writer(root, "replica-a", clock)
    assert a2.writer_id != a.writer_id
    decide(a2, "e4", step=0)
    a2.feedback("e4", 7.0, True, step=0)
    a2.close()
    after = objects(root)
    assert set(before) < set(after) and all(after[k] == v for k, v in before.items())

    # the cursor goes through JSON (a status field) and a new stream continues from it
    cursor = json.loads(json.dumps(settled.cursor))
    resumed = EpisodeStream(root, APP, cursor, settle_seconds=10)
    r1 = resumed.poll(T0 + 21)
    assert r1.objects == 1
    r2 = resumed.poll(T0 + 40)
    assert [e.episode_id for e in r2.episodes] == ["e4"] and r2.episodes[0].total_return == 7.0
    assert resumed.poll(T0 + 60).objects == 0


def test_many_batches_flushed_by_size_are_all_read_in_order(root: str) -> None:
    clock = Clock()
    w = writer(root, "r", clock, flush_records=3)
    for i in range(10):
        decide(w, f"ep-{i}", step=0)
        w.feedback(f"ep-{i}", float(i), True, step=0)
    w.close()
    assert len(objects(root)) >= 7  # 20 records in batches of at most 3
    stream = EpisodeStream(root, APP, None, settle_seconds=0)
    got = stream.poll(T0 + 1).episodes
    assert sorted(e.total_return for e in got) == [float(i) for i in range(10)]


def test_flush_by_time_without_close(tmp_path: Path) -> None:
    clock = Clock(time.time())
    w = writer(str(tmp_path), "r", clock, flush_seconds=0.2)
    decide(w, "ep-1")
    deadline = time.monotonic() + 30
    while not objects(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert objects(str(tmp_path)), "the writer did not flush one record within 30 s of flush_seconds=0.2"
    w.close()


def test_reward_credit_by_time_when_steps_are_missing(tmp_path: Path) -> None:
    clock = Clock()
    w = writer(str(tmp_path), "r", clock)
    decide(w, "e", time=T0)
    w._offer("feedback", {"episode_id": "e", "reward": 1.0, "done": False, "time": T0 + 0.5})
    decide(w, "e", time=T0 + 1)
    w._offer("feedback", {"episode_id": "e", "reward": 2.0, "done": False, "time": T0 + 1.5})
    w._offer("feedback", {"episode_id": "e", "reward": 4.0, "done": True, "time": T0 + 1.6})
    w.close()
    (ep,) = EpisodeStream(str(tmp_path), APP, None, settle_seconds=0).poll(T0 + 5).episodes
    assert ep.rewards == [1.0, 6.0] and ep.feedback == 3


def test_settle_waits_for_a_slow_replica_and_late_records_are_counted(tmp_path: Path) -> None:
    root, clock = str(tmp_path), Clock()
    fast, slow = writer(root, "fast", clock), writer(root, "slow", clock)
    decide(fast, "e", step=0)
    fast.feedback("e", 1.0, True, step=1)
    fast.close()
    stream = EpisodeStream(root, APP, None, settle_seconds=30)
    assert stream.poll(T0 + 1).episodes == []
    decide(slow, "e", step=1, slot="challenger")  # flushed late by another replica
    slow.close()
    (ep,) = stream.poll(T0 + 31).episodes
    assert len(ep.decisions) == 2 and ep.slot == "mixed"
    late = writer(root, "late", clock)
    decide(late, "e", step=2)
    late.close()
    res = stream.poll(T0 + 40)
    assert res.episodes == [] and res.counters["late_records"] == 1


def test_orphan_feedback_and_abandoned_episodes_are_counted() -> None:
    j = EpisodeJoiner(settle_seconds=0, abandon_seconds=100)
    j.add([FeedbackRecord(episode_id="ghost", reward=1, done=True, replica="r", seq=0, time=T0)], T0)
    j.add(
        [
            DecisionRecord(
                episode_id="open", replica="r", seq=1, time=T0, slot="champion", checkpoint_uri="u", action=0
            )
        ],
        T0,
    )
    assert j.finished(T0 + 1) == [] and j.counters.orphan_feedback == 1
    assert j.finished(T0 + 101) == [] and j.counters.abandoned == 1 and j.open_episodes == 0
    with pytest.raises(ValueError, match="settle_seconds"):
        EpisodeJoiner(settle_seconds=10, abandon_seconds=5)


def test_off_policy_steps_need_shadow_and_sampled_champion(tmp_path: Path) -> None:
    root, clock = str(tmp_path), Clock()
    w = writer(root, "r", clock)
    shadow = {"checkpoint_uri": "s3://b/challenger", "prob": 0.8, "probs": [0.2, 0.8]}
    decide(w, "ok", step=0, mode="shadow", weight=0.0, observation=[1], shadow=shadow)
    w.feedback("ok", -1.0, True, step=0)
    decide(w, "noshadow", step=0, mode="shadow")
    w.feedback("noshadow", 1.0, True, step=0)
    decide(w, "greedy", step=0, mode="shadow", deterministic=True, shadow=shadow)
    w.feedback("greedy", 1.0, True, step=0)
    w.close()
    eps = {e.episode_id: e for e in EpisodeStream(root, APP, None, settle_seconds=0).poll(T0 + 1).episodes}
    logged = eps["ok"].off_policy_steps()
    assert logged is not None
    (step,) = logged.steps
    assert (step.behavior_prob, step.target_prob, step.reward) == (0.5, 0.8, -1.0)
    assert step.state == "[1]" and step.action == 1 and step.target_probs == (0.2, 0.8)
    assert eps["noshadow"].off_policy_steps() is None and eps["greedy"].off_policy_steps() is None


# ------------------------------------------------------------------------------- incremental listing
def test_cursor_lists_only_recent_partitions_and_forgets_old_writers(tmp_path: Path) -> None:
    root = str(tmp_path)
    old = Clock(T0)
    w = writer(root, "old", old)
    decide(w, "e-old")
    w.close()
    reader = decision_log.DecisionLogReader(root, APP, LogCursor.starting_at(T0), lookback_hours=2)
    assert reader.poll(T0 + 10).objects == 1
    assert set(reader.cursor.writers) == {w.writer_id}
    # five hours later: the old partition is out of the window and its writer is forgotten
    later = T0 + 5 * 3600
    res = reader.poll(later)
    assert res.objects == 0 and reader.cursor.writers == {}
    assert reader.cursor.partition == decision_log.partition_of(later - 2 * 3600)
    with pytest.raises(ValueError, match="lookback_hours"):
        decision_log.DecisionLogReader(root, APP, None, lookback_hours=0)


def test_corrupt_lines_and_foreign_files_are_skipped(tmp_path: Path) -> None:
    root = str(tmp_path)
    base = decision_log.log_root(root, APP)
    part = decision_log.partition_of(T0)
    good = DecisionRecord(
        episode_id="e", replica="r", seq=0, time=T0, slot="champion", checkpoint_uri="u", action=0, prob=0.5
    )
    fb = FeedbackRecord(episode_id="e", reward=2, done=True, replica="r", seq=1, time=T0)
    storage.write_bytes(f"{base}/{part}/w.x-0000000000.jsonl", decision_log.encode([good]) + b"{oops\n")
    storage.write_bytes(f"{base}/{part}/w.x-0000000001.jsonl", decision_log.encode([fb]))
    storage.write_bytes(f"{base}/{part}/README.txt", b"not a log object")
    res = EpisodeStream(root, APP, None, settle_seconds=0).poll(T0 + 1)
    assert res.objects == 2 and res.counters["bad_lines"] == 1 and len(res.episodes) == 1


def test_storage_outage_reports_and_keeps_the_cursor(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root, clock = s3_bucket + "/store", Clock()
    w = writer(root, "r", clock)
    decide(w, "e", step=0)
    w.feedback("e", 3.0, True, step=0)
    w.close()
    stream = EpisodeStream(root, APP, LogCursor.starting_at(T0), settle_seconds=0)
    cursor_before = stream.reader.cursor.model_dump()
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    storage.reset_clients()
    try:
        res = stream.poll(T0 + 1)
    finally:
        monkeypatch.undo()
        storage.reset_clients()
    assert res.errors and "listing" in res.errors[0] and res.episodes == []
    assert stream.reader.cursor.model_dump() == cursor_before
    (ep,) = stream.poll(T0 + 2).episodes  # the store is back: nothing was lost
    assert ep.total_return == 3.0


# -------------------------------------------------------------------------------------------- writer
def test_writer_never_blocks_and_counts_drops_when_full(tmp_path: Path) -> None:
    gate = threading.Event()

    class Stuck(BackgroundBatchWriter[int]):
        def write_batch(self, batch: list[int]) -> int:
            gate.wait(30)
            return len(batch)

    dropped: list[tuple[int, str]] = []
    w = Stuck(
        name="t",
        flush_records=1,
        flush_seconds=0.01,
        max_queue=5,
        on_dropped=lambda n, why: dropped.append((n, why)),
    )
    started = time.monotonic()
    results = [w.offer(i) for i in range(100)]
    assert time.monotonic() - started < 5  # generous: a blocking offer would hang here
    assert results.count(False) >= 90 and w.dropped == results.count(False)
    assert {why for _, why in dropped} == {"queue_full"}
    gate.set()
    w.close()
    assert w.written == results.count(True) and not w.running
    assert not w.offer(1) and dropped[-1] == (1, "closed")


def test_failed_write_drops_the_batch_and_says_why(tmp_path: Path) -> None:
    (tmp_path / APP).write_text("a file where the log folder should be")
    w = writer(str(tmp_path), "r", Clock(), write_attempts=2)
    decide(w, "e")
    w.close()
    assert w.written == 0 and w.dropped == 1 and w.last_error
    assert w.status()["dropped"] == 1 and w.status()["writer"] == w.writer_id


def test_invalid_records_are_dropped_in_the_thread_not_the_request(tmp_path: Path) -> None:
    w = writer(str(tmp_path), "r", Clock())
    assert w.decision(episode_id="bad id", slot="champion", checkpoint_uri="u", action=0)  # accepted cheaply
    decide(w, "good")
    w.close()
    assert w.written == 1 and w.dropped == 1


def test_bad_settings_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        DecisionLogSettings(root="")
    with pytest.raises(ValueError, match="unsupported storage scheme"):
        DecisionWriter(DecisionLogSettings(root="ftp://x/y"), APP, "r")
    with pytest.raises(ValueError, match="application name"):
        DecisionWriter(DecisionLogSettings(root=str(tmp_path)), "bad/app", "r")
