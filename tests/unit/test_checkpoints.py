"""The checkpoint contract: manifest ``rlops.json``, its verification, the pointer, and the write order.

Every storage-dependent test runs on a local folder and on the S3 test server.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from datetime import datetime
from pathlib import Path

import pytest

from rlops_core import checkpoints, storage
from rlops_core.checkpoints import (
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    CheckpointError,
    FileEntry,
    Manifest,
    parse_pointer,
)


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/store"


def _put_checkpoint(checkpoint_uri: str, seed: int = 0) -> dict[str, bytes]:
    """Write the files of a checkpoint (shaped like an RLlib one) and return them."""
    rng = random.Random(seed)
    files = {
        "algorithm_state.pkl": bytes(rng.randrange(256) for _ in range(2048)),
        "rllib_checkpoint.json": json.dumps({"type": "Algorithm", "seed": seed}).encode(),
        "learner_group/learner/rl_module/default_policy/module_state.pt": bytes(
            rng.randrange(256) for _ in range(4096)
        ),
        "env_runner/empty_marker": b"",
    }
    for rel, data in files.items():
        storage.write_bytes(storage.join_uri(checkpoint_uri, rel), data)
    return files


def _build(checkpoint_uri: str, value: float = 9.4) -> Manifest:
    return checkpoints.build_manifest(
        checkpoint_uri,
        metric_name="env_runners/episode_return_mean",
        metric_value=value,
        env_id="corridor",
        env_config={"reward": 10.0},
        trial_id="PPO_corridor_0001",
        experiment="demo",
        ray_job_id="raysubmit_abc",
        extra={"iterations": 3},
    )


def _commit(checkpoint_uri: str, pointer: str, value: float = 9.4) -> Manifest:
    """The contract's write order after the files: manifest, then pointer."""
    manifest = _build(checkpoint_uri, value)
    checkpoints.write_manifest(manifest)
    checkpoints.write_pointer(pointer, checkpoint_uri)
    return manifest


# --------------------------------------------------------------------------------------------- manifest


def test_build_manifest_lists_every_file_with_size_and_sha256(root):
    ck = storage.join_uri(root, "demo", "trial_0", "checkpoint_000002")
    files = _put_checkpoint(ck)
    manifest = _build(ck)
    assert manifest.files == [
        FileEntry(rel, len(data), hashlib.sha256(data).hexdigest()) for rel, data in sorted(files.items())
    ]
    assert manifest.checkpoint_uri == storage.parse_uri(ck).uri
    assert (manifest.metric_name, manifest.metric_value) == ("env_runners/episode_return_mean", 9.4)
    assert (manifest.env_id, manifest.env_config) == ("corridor", {"reward": 10.0})
    assert (manifest.trial_id, manifest.experiment, manifest.ray_job_id) == (
        "PPO_corridor_0001",
        "demo",
        "raysubmit_abc",
    )
    assert datetime.fromisoformat(manifest.created_at).tzinfo is not None


def test_manifest_json_round_trip(root):
    ck = storage.join_uri(root, "demo", "ck")
    _put_checkpoint(ck)
    manifest = _build(ck)
    body = json.loads(manifest.to_json())
    assert body["schema"] == MANIFEST_SCHEMA
    assert body["metric"] == {"name": "env_runners/episode_return_mean", "value": 9.4}
    assert body["env"] == {"id": "corridor", "config": {"reward": 10.0}}
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert Manifest.from_json(manifest.to_json().encode()) == manifest
    written = checkpoints.write_manifest(manifest)
    assert written == storage.join_uri(ck, MANIFEST_NAME)
    assert checkpoints.read_manifest(ck) == manifest
    # Rebuilding ignores the manifest itself: it is not one of the checkpoint's files.
    assert [f.path for f in _build(ck).files] == [f.path for f in manifest.files]
    assert checkpoints.verify_checkpoint(ck) == manifest


def test_build_manifest_of_an_empty_directory_fails(root):
    with pytest.raises(CheckpointError, match="has no files"):
        _build(storage.join_uri(root, "nothing"))


# --------------------------------------------------------------------------------------------- verify


@pytest.fixture
def committed(root: str) -> tuple[str, dict[str, bytes]]:
    """A checkpoint with its files and a correct manifest."""
    ck = storage.join_uri(root, "demo", "trial_0", "checkpoint_000001")
    files = _put_checkpoint(ck)
    checkpoints.write_manifest(_build(ck))
    checkpoints.verify_checkpoint(ck)
    return ck, files


PT = "learner_group/learner/rl_module/default_policy/module_state.pt"


def test_verify_detects_a_truncated_file(committed):
    ck, files = committed
    storage.write_bytes(storage.join_uri(ck, PT), files[PT][:-1])
    with pytest.raises(CheckpointError, match=f"{PT} in .* has size 4095, manifest says 4096"):
        checkpoints.verify_checkpoint(ck)


def test_verify_detects_an_altered_file_of_the_same_size(committed):
    ck, files = committed
    altered = bytearray(files[PT])
    altered[1000] ^= 0x01
    storage.write_bytes(storage.join_uri(ck, PT), bytes(altered))
    with pytest.raises(CheckpointError, match=f"{PT} in .* does not match its sha256"):
        checkpoints.verify_checkpoint(ck)
    # With a hashing limit below the file's size only sizes are compared for it, so it passes.
    assert checkpoints.verify_checkpoint(ck, max_hash_bytes=4095).checkpoint_uri == storage.parse_uri(ck).uri
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoints.verify_checkpoint(ck, max_hash_bytes=4096)


def test_verify_detects_an_empty_file_that_gained_bytes(committed):
    ck, _ = committed
    storage.write_bytes(storage.join_uri(ck, "env_runner/empty_marker"), b"x")
    with pytest.raises(CheckpointError, match="has size 1, manifest says 0"):
        checkpoints.verify_checkpoint(ck)


def test_verify_detects_an_extra_file(committed):
    ck, _ = committed
    storage.write_bytes(storage.join_uri(ck, "learner_group", "extra.bin"), b"surprise")
    with pytest.raises(CheckpointError, match=r"files not in its manifest: \['learner_group/extra.bin'\]"):
        checkpoints.verify_checkpoint(ck)


def test_verify_detects_a_missing_file(committed):
    ck, _ = committed
    loc = storage.parse_uri(storage.join_uri(ck, "rllib_checkpoint.json"))
    if loc.scheme == "file":
        loc.path.unlink()
    else:
        storage.s3_client().delete_object(Bucket=loc.bucket, Key=loc.key)
    with pytest.raises(CheckpointError, match=r"incomplete: missing \['rllib_checkpoint.json'\]"):
        checkpoints.verify_checkpoint(ck)


def test_verify_detects_a_manifest_copied_from_another_directory(committed, root):
    ck, files = committed
    twin = storage.join_uri(root, "demo", "trial_1", "checkpoint_000001")
    for rel, data in files.items():  # identical files: only the manifest's own URI gives it away
        storage.write_bytes(storage.join_uri(twin, rel), data)
    storage.write_bytes(
        storage.join_uri(twin, MANIFEST_NAME), storage.read_bytes(storage.join_uri(ck, MANIFEST_NAME))
    )
    with pytest.raises(CheckpointError, match="copied from elsewhere"):
        checkpoints.verify_checkpoint(twin)


def test_verify_without_a_manifest(root):
    ck = storage.join_uri(root, "demo", "bare")
    _put_checkpoint(ck)
    with pytest.raises(CheckpointError, match=f"has no {MANIFEST_NAME}"):
        checkpoints.verify_checkpoint(ck)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"{not json", "malformed"),
        (b"", "malformed"),
        (b"\xff\xfe", "malformed"),
        (b"[1, 2]", "malformed"),
        (b"null", "malformed"),
        (b'{"schema": "something/else"}', "schema is 'something/else'"),
        (json.dumps({"schema": MANIFEST_SCHEMA}).encode(), "malformed"),
        (
            json.dumps(
                {
                    "schema": MANIFEST_SCHEMA,
                    "checkpoint_uri": "/x",
                    "files": [{"path": "a", "size": "big", "sha256": "0"}],
                    "metric": {"name": "m", "value": 1},
                    "env": {"id": "corridor"},
                }
            ).encode(),
            "malformed",
        ),
        (
            json.dumps(
                {
                    "schema": MANIFEST_SCHEMA,
                    "checkpoint_uri": "/x",
                    "files": [],
                    "metric": {"name": "m", "value": "high"},
                    "env": {"id": "corridor"},
                }
            ).encode(),
            "malformed",
        ),
    ],
)
def test_verify_rejects_a_malformed_manifest(committed, text, message):
    ck, _ = committed
    storage.write_bytes(storage.join_uri(ck, MANIFEST_NAME), text)
    with pytest.raises(CheckpointError, match=message):
        checkpoints.verify_checkpoint(ck)


# --------------------------------------------------------------------------------------------- pointer


@pytest.mark.parametrize(
    ("text", "uri"),
    [
        ("s3://bucket/exp/ck\n", "s3://bucket/exp/ck"),
        ("s3://bucket/exp/ck", "s3://bucket/exp/ck"),
        ("  s3://bucket/exp/ck  \r\n", "s3://bucket/exp/ck"),
        ("\r\n\r\ns3://bucket/exp/ck\r\n\r\n", "s3://bucket/exp/ck"),
        ("\t/data/exp/checkpoint_000001 \n", "/data/exp/checkpoint_000001"),
        ("file:///data/exp/ck\n", "file:///data/exp/ck"),
        (b"s3://bucket/exp/ck\r\n", "s3://bucket/exp/ck"),
        ("/data/with space/ck\n", "/data/with space/ck"),
    ],
)
def test_parse_pointer_tolerates_whitespace_and_crlf(text, uri):
    assert parse_pointer(text) == uri


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("  \r\n\n\t", "empty"),
        (b"", "empty"),
        ("s3://bucket/a\ns3://bucket/b\n", "exactly one checkpoint, found 2 lines"),
        ("s3://bucket/a\r\n/data/b\r\n", "exactly one checkpoint"),
        ("hello world", "absolute URI"),
        ("checkpoint_000001", "absolute URI"),
        ('{"checkpoint": "s3://bucket/a"}', "does not name a checkpoint URI"),
        ("http://example.com/ck", "does not name a checkpoint URI"),
        ("s3://", "does not name a checkpoint URI"),
        ("s3://BAD_bucket/ck", "does not name a checkpoint URI"),
        (b"\xff\xfe\x00\x01", "not UTF-8"),
        (b"\x89PNG\r\n\x1a\n", "not UTF-8"),
        (b"/data/a\x00b", "control characters"),
        ("s3://bucket/a\tb", "control characters"),
    ],
)
def test_parse_pointer_rejects(text, message):
    with pytest.raises(CheckpointError, match=message):
        parse_pointer(text)


def test_pointer_uri_layout():
    assert checkpoints.pointer_uri("s3://bucket/root", "demo") == "s3://bucket/root/demo/best_checkpoint.txt"
    assert checkpoints.pointer_uri("/data", "corridor") == "/data/corridor/best_checkpoint.txt"


def test_write_and_read_pointer(root):
    ck = storage.join_uri(root, "demo", "ck")
    pointer = checkpoints.pointer_uri(root, "demo")
    checkpoints.write_pointer(pointer, ck)
    assert storage.read_bytes(pointer) == (storage.parse_uri(ck).uri + "\n").encode()
    assert checkpoints.read_pointer(pointer) == storage.parse_uri(ck).uri


def test_read_pointer_missing_or_garbage(root):
    pointer = checkpoints.pointer_uri(root, "nobody")
    with pytest.raises(CheckpointError, match="no pointer at"):
        checkpoints.read_pointer(pointer)
    storage.write_bytes(pointer, os.urandom(64) + b"\xff")
    with pytest.raises(CheckpointError):
        checkpoints.read_pointer(pointer)


# --------------------------------------------------------------------------------------------- write order


def test_commit_writes_manifest_then_pointer(root):
    ck = storage.join_uri(root, "demo", "trial_0", "checkpoint_000003")
    _put_checkpoint(ck)
    pointer = checkpoints.pointer_uri(root, "demo")
    manifest = _commit(ck, pointer)
    named = checkpoints.read_pointer(pointer)
    assert checkpoints.verify_checkpoint(named) == manifest


def test_crash_before_the_pointer_leaves_the_previous_pointer_valid(root):
    pointer = checkpoints.pointer_uri(root, "corridor")
    a = storage.join_uri(root, "demo", "trial_0", "checkpoint_000001")
    _put_checkpoint(a, seed=1)
    manifest_a = _commit(a, pointer, value=9.1)

    # Checkpoint B: files written, then a crash before the manifest.
    b = storage.join_uri(root, "demo", "trial_1", "checkpoint_000004")
    _put_checkpoint(b, seed=2)
    assert checkpoints.read_pointer(pointer) == storage.parse_uri(a).uri
    with pytest.raises(CheckpointError, match=r"has no rlops\.json"):
        checkpoints.verify_checkpoint(b)  # B is not promotable yet

    # Manifest of B written, then a crash before the pointer.
    checkpoints.write_manifest(_build(b, value=9.5))
    assert checkpoints.read_pointer(pointer) == storage.parse_uri(a).uri
    assert checkpoints.verify_checkpoint(checkpoints.read_pointer(pointer)) == manifest_a
    assert checkpoints.verify_checkpoint(b).metric_value == 9.5  # B is complete but not live

    # The pointer write is the commit point.
    checkpoints.write_pointer(pointer, b)
    assert checkpoints.read_pointer(pointer) == storage.parse_uri(b).uri
    assert checkpoints.verify_checkpoint(checkpoints.read_pointer(pointer)).metric_value == 9.5
    assert checkpoints.verify_checkpoint(a) == manifest_a  # the previous checkpoint is untouched


def test_a_manifest_written_while_files_were_still_arriving_fails_verification(root):
    ck = storage.join_uri(root, "demo", "trial_2", "checkpoint_000001")
    files = _put_checkpoint(ck)
    checkpoints.write_manifest(_build(ck))
    # A late writer adds a file and rewrites another after the manifest was taken.
    storage.write_bytes(storage.join_uri(ck, "late.bin"), b"late")
    with pytest.raises(CheckpointError, match="not in its manifest"):
        checkpoints.verify_checkpoint(ck)
    storage.write_bytes(storage.join_uri(ck, "late.bin"), b"")
    checkpoints.write_manifest(_build(ck))
    checkpoints.verify_checkpoint(ck)
    storage.write_bytes(storage.join_uri(ck, "algorithm_state.pkl"), files["algorithm_state.pkl"][::-1])
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoints.verify_checkpoint(ck)
