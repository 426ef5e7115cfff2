"""The engine on a real S3-protocol server (moto in server mode): conditional reads and an outage."""

from __future__ import annotations

from typing import Any

from rlops_operator import checks
from rlops_operator.engine import Engine
from rlops_operator.spec import RolloutSpec, TargetSpec

from rlops_core import checkpoints, storage
from tests.operator.conftest import make_checkpoint
from tests.operator.doubles import ConfigTarget


def _spec(root: str) -> RolloutSpec:
    return RolloutSpec(
        pointer=checkpoints.pointer_uri(root, "corridor"),
        target=TargetSpec(dashboard_url="http://127.0.0.1:1"),
        name="s3",
    )


def test_pointer_is_read_with_a_conditional_get(s3_bucket: str) -> None:
    uri = make_checkpoint(s3_bucket, "exp", "t1", 3.0)
    spec = _spec(s3_bucket)
    checkpoints.write_pointer(spec.pointer, uri)
    first = checks.read_pointer(spec.pointer, None)
    assert first.checkpoint_uri == uri and first.etag
    again = checks.read_pointer(spec.pointer, first.etag)
    assert again.checkpoint_uri is None and again.etag == first.etag  # 304: nothing downloaded
    checkpoints.write_pointer(spec.pointer, make_checkpoint(s3_bucket, "exp", "t2", 4.0))
    changed = checks.read_pointer(spec.pointer, first.etag)
    assert changed.checkpoint_uri and changed.checkpoint_uri.endswith("t2/checkpoint_000001")


def test_promotion_from_s3_and_hash_mismatch(s3_bucket: str) -> None:
    live = make_checkpoint(s3_bucket, "exp", "t1", 3.0)
    good = make_checkpoint(s3_bucket, "exp", "t2", 4.0)
    bad = make_checkpoint(s3_bucket, "exp", "t3", 9.0)
    storage.write_bytes(storage.join_uri(bad, "env_runner/connector.pkl"), b"connector stat!")  # same size
    spec = _spec(s3_bucket)
    target = ConfigTarget(live)
    engine = Engine(spec, target)
    checkpoints.write_pointer(spec.pointer, bad)
    st = engine.step({}).status
    assert st["conditions"][0]["reason"] == "CheckpointInvalid" and "sha256" in st["message"]
    assert target.applied == []
    checkpoints.write_pointer(spec.pointer, good)
    st = engine.step(st).status
    assert target.applied == [good] and st["phase"] == "Verifying"


def test_storage_outage_blocks_promotion_and_recovers(s3_server: Any, s3_bucket: str) -> None:
    live = make_checkpoint(s3_bucket, "exp", "t1", 3.0)
    new = make_checkpoint(s3_bucket, "exp", "t2", 4.0)
    spec = _spec(s3_bucket)
    checkpoints.write_pointer(spec.pointer, new)
    target = ConfigTarget(live)
    engine = Engine(spec, target)
    s3_server.stop()
    try:
        result = engine.step({})
        assert [d.kind for d in result.decisions] == ["Error"]
        assert result.decisions[0].reason == "StorageUnreachable"
        st = result.status
        assert "cannot read pointer" in st["message"] and st["lastError"]["reason"] == "StorageUnreachable"
        assert engine.step(st).decisions == []  # said once, not on every poll
        assert target.applied == []
    finally:
        s3_server.start()
    result = engine.step(st)
    assert [d.kind for d in result.decisions] == ["Recovered", "Applied"]
    assert target.applied == [new] and "lastError" not in result.status
