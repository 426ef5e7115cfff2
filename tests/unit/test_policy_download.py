"""The Serve replica's load path without Ray (issue 14 §1): a hot swap downloads only the manifest's
files into a fresh temp dir, hashing as they stream, and leaves nothing behind when it is refused.

The checkpoints live on moto's S3 server; ``tempfile.tempdir`` points at a folder of the test so that
what the load leaves behind can be seen.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlops_core import checkpoints, storage
from workloads.serving.policy import PolicyLoadError, load_policy

POLICY = "learner_group/learner/rl_module/default_policy/module_state.pt"


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import tempfile

    root = tmp_path / "replica-tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _checkpoint(root: str, files: dict[str, bytes]) -> str:
    uri = storage.join_uri(root, "exp", "trial", "checkpoint_000001")
    for rel, data in files.items():
        storage.write_bytes(storage.child_uri(uri, rel), data)
    checkpoints.write_manifest(checkpoints.build_manifest(uri, metric_name="m", metric_value=1, env_id="e"))
    return storage.parse_uri(uri).uri


def test_a_file_changed_after_verification_is_caught_while_streaming(s3_bucket: str, temp_root: Path) -> None:
    uri = _checkpoint(s3_bucket, {POLICY: b"a" * 5000, "env_runner/state.pkl": b"s"})
    storage.write_bytes(storage.child_uri(uri, POLICY), b"b" * 5000)  # same size: listing still matches
    with pytest.raises(PolicyLoadError, match=r"verify: downloaded .*module_state\.pt .*sha256"):
        load_policy(uri)
    assert list(temp_root.iterdir()) == []  # the temp dir is gone, nothing else was written


def test_a_checkpoint_without_policy_weights_is_refused_before_any_download(
    s3_bucket: str, temp_root: Path
) -> None:
    uri = _checkpoint(s3_bucket, {"env_runner/state.pkl": b"s"})
    with pytest.raises(PolicyLoadError, match=r"verify: .*lists no policy weights"):
        load_policy(uri)
    assert list(temp_root.iterdir()) == []


def test_an_empty_segment_key_cannot_write_outside_the_replica_temp_dir(
    s3_bucket: str, temp_root: Path, tmp_path: Path
) -> None:
    uri = _checkpoint(s3_bucket, {POLICY: b"w" * 100})
    target = tmp_path / "elsewhere" / "x"
    loc = storage.parse_uri(uri)
    storage.s3_client().put_object(Bucket=loc.bucket, Key=f"{loc.key}/{target}", Body=b"payload")
    with pytest.raises(PolicyLoadError, match=r"verify: .*is absolute"):
        load_policy(uri)
    assert not target.exists() and list(temp_root.iterdir()) == []


@pytest.mark.slow  # imports ray.rllib (no cluster is started)
def test_a_refused_load_removes_its_download(s3_bucket: str, temp_root: Path) -> None:
    uri = _checkpoint(s3_bucket, {POLICY: b"w" * 100})  # verified, but no connector pipelines
    with pytest.raises(PolicyLoadError, match="load: checkpoint has no"):
        load_policy(uri)
    assert list(temp_root.iterdir()) == []
