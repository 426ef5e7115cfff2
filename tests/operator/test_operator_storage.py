"""The engine on a real S3-protocol server (moto in server mode): conditional reads and an outage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rlops_operator import checks
from rlops_operator.engine import Engine
from rlops_operator.spec import RolloutSpec, TargetSpec

from rlops_core import checkpoints, storage
from tests.helpers.s3_faults import deny
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
    assert sorted(d.kind for d in result.decisions) == ["Applied", "Recovered"]  # in either order
    assert target.applied == [new] and "lastError" not in result.status


# --------------------------------------------------------------------------------------------- hardening
# Issue 10 classes 2 (checks side), 4, 5, 6 (storage side) and 7, through the calls the engine makes.


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket")


def test_a_rewritten_pointer_with_the_same_content_is_read_again(root: str) -> None:
    """Pointer first, then the manifest, then the same pointer again: the second write must count."""
    spec = _spec(root)
    ck = storage.join_uri(root, "exp", "t1", "checkpoint_000001")
    storage.write_bytes(storage.child_uri(ck, "learner_group/learner/rl_module/default_policy/w.pt"), b"w")
    checkpoints.write_pointer(spec.pointer, ck)
    first = checks.read_pointer(spec.pointer, None)
    with pytest.raises(checks.Refusal, match=r"has no rlops\.json"):
        checks.check_candidate(spec, first.checkpoint_uri)
    checkpoints.write_manifest(checkpoints.build_manifest(ck, metric_name="m", metric_value=1, env_id="e"))
    assert checks.read_pointer(spec.pointer, first.etag).checkpoint_uri is None  # nothing rewritten yet
    checkpoints.write_pointer(spec.pointer, ck)
    again = checks.read_pointer(spec.pointer, first.etag)
    assert again.checkpoint_uri == storage.parse_uri(ck).uri and again.etag != first.etag
    assert checks.check_candidate(spec, again.checkpoint_uri).manifest.metric_value == 1


def test_an_oversized_pointer_is_refused_once_per_version(root: str) -> None:
    spec = _spec(root)
    storage.write_bytes(spec.pointer, b"s3://bucket/ck\n" + b"#" * (4 << 20))
    with pytest.raises(checks.Refusal) as err:
        checks.read_pointer(spec.pointer, None)
    assert err.value.reason == "PointerTooLarge" and err.value.etag
    assert checks.read_pointer(spec.pointer, err.value.etag) == checks.PointerRead(None, err.value.etag)


def test_invisible_characters_in_a_pointer_are_escaped_in_the_refusal(root: str) -> None:
    spec = _spec(root)
    storage.write_text(spec.pointer, "s3://bucket/ck\u200b\u2066x\n")
    with pytest.raises(checks.Refusal) as err:
        checks.read_pointer(spec.pointer, None)
    assert err.value.reason == "PointerInvalid"
    assert "\\u200b" in err.value.message and "\u200b" not in err.value.message


def test_a_denied_pointer_is_access_denied_not_unreachable(s3_bucket: str) -> None:
    spec = _spec(s3_bucket)
    checkpoints.write_pointer(spec.pointer, make_checkpoint(s3_bucket, "exp", "t1", 3.0))
    with deny("best_checkpoint.txt"), pytest.raises(checks.TransientError) as err:
        checks.read_pointer(spec.pointer, None)
    assert err.value.reason == "AccessDenied" and "access denied" in err.value.message


def test_one_unreadable_file_in_sixty_stops_the_check_and_is_cheap_to_retry(s3_bucket: str) -> None:
    files = {f"shard/f_{i:02d}.bin": bytes([i]) * 100 for i in range(59)}
    files["learner_group/learner/rl_module/default_policy/module_state.pt"] = b"weights"
    uri = make_checkpoint(s3_bucket, "exp", "t60", 5.0, files=files)
    spec = _spec(s3_bucket)
    with deny("shard/f_30.bin") as sent:
        with pytest.raises(checks.TransientError) as err:
            checks.check_candidate(spec, uri)
        assert err.value.reason == "AccessDenied"
        fetched = [s for s in sent if s.startswith("GET") and "/shard/" in s]
        assert fetched[-1].endswith("/shard/f_30.bin") and len(fetched) == 31  # stopped at the failure
        sent.clear()
        with pytest.raises(checks.TransientError):
            checks.check_candidate(spec, uri)  # the next poll: manifest, listing, the failing file
    assert len(sent) == 3, sent
    assert checks.check_candidate(spec, uri).checkpoint_uri == uri  # once readable, it passes


def test_a_checkpoint_with_an_escaping_key_is_refused_not_retried(s3_bucket: str) -> None:
    uri = make_checkpoint(s3_bucket, "exp", "t1", 3.0)
    loc = storage.parse_uri(uri)
    storage.s3_client().put_object(Bucket=loc.bucket, Key=f"{loc.key}/../../escape", Body=b"x")
    with pytest.raises(checks.Refusal) as err:
        checks.check_candidate(_spec(s3_bucket), uri)
    assert err.value.reason == "CheckpointInvalid" and "'..' segment" in err.value.message


def test_a_symlink_out_of_the_allowed_prefix_is_refused(tmp_path: Path) -> None:
    outside = make_checkpoint(str(tmp_path / "outside"), "exp", "t1", 3.0)
    root = tmp_path / "store"
    (root / "exp").mkdir(parents=True)
    (root / "exp" / "link").symlink_to(Path(outside).parent)
    spec = _spec(str(root))
    with pytest.raises(checks.Refusal) as err:
        checks.check_candidate(spec, str(root / "exp" / "link" / "checkpoint_000001"))
    assert err.value.reason == "OutsideAllowedPrefixes"


def test_require_improvement_that_cannot_be_evaluated_is_refused(root: str) -> None:
    base = _spec(root)
    spec = RolloutSpec(pointer=base.pointer, target=base.target, require_improvement=True, name="s")
    live = make_checkpoint(root, "exp", "live", 3.0)
    new = make_checkpoint(root, "exp", "new", 4.0)
    with pytest.raises(checks.Refusal) as err:
        checks.check_candidate(spec, new, None, live_uri=live)
    assert err.value.reason == "LiveMetricUnknown" and live in err.value.message
    with pytest.raises(checks.Refusal) as err:
        checks.check_candidate(spec, new, ("env_runners/episode_return_mean", float("inf")), live_uri=live)
    assert err.value.reason == "LiveMetricUnknown"
    assert checks.check_candidate(spec, new, None).checkpoint_uri == new  # nothing live: nothing to beat
    assert checks.check_candidate(spec, new, checks.live_metric_of(live), live_uri=live).checkpoint_uri == new


def test_a_non_finite_metric_never_passes_the_gates(root: str) -> None:
    uri = make_checkpoint(root, "exp", "t1", 3.0)
    manifest_uri = storage.join_uri(uri, checkpoints.MANIFEST_NAME)
    text = storage.read_text(manifest_uri).replace('"value": 3.0', '"value": 1e999')
    storage.write_text(manifest_uri, text)
    with pytest.raises(checks.Refusal) as err:
        checks.check_candidate(_spec(root), uri)
    assert err.value.reason == "CheckpointInvalid" and "not a finite number" in err.value.message
    assert checks.live_metric_of(uri) is None
