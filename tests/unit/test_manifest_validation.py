"""Manifests that must never verify (issue 10 classes 2-5): no files, no policy, unsafe keys, too many
files, too large, non-finite or missing metrics. Each runs on a local folder and on moto's S3 server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlops_core import checkpoints, storage
from rlops_core.checkpoints import MANIFEST_NAME, MANIFEST_SCHEMA, CheckpointError

POLICY = "learner_group/learner/rl_module/default_policy/module_state.pt"


@pytest.fixture(params=["local", "s3"])
def ck(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A checkpoint folder holding one policy file and one other file (no manifest yet)."""
    root = str(tmp_path / "store") if request.param == "local" else request.getfixturevalue("s3_bucket")
    uri = storage.join_uri(root, "exp", "trial", "checkpoint_000001")
    storage.write_bytes(storage.child_uri(uri, POLICY), b"weights" * 10)
    storage.write_bytes(storage.child_uri(uri, "algorithm_state.pkl"), b"state")
    return storage.parse_uri(uri).uri


def _body(ck: str, **changes: object) -> dict:
    body = json.loads(
        checkpoints.build_manifest(ck, metric_name="m", metric_value=1.0, env_id="corridor").to_json()
    )
    body.update(changes)
    return body


def _write(ck: str, text: str | bytes) -> None:
    storage.write_bytes(storage.join_uri(ck, MANIFEST_NAME), text.encode() if isinstance(text, str) else text)


def test_a_valid_manifest_verifies(ck: str) -> None:
    _write(ck, json.dumps(_body(ck)))
    assert checkpoints.verify_checkpoint(ck).metric_value == 1.0


@pytest.mark.parametrize(
    ("metric_json", "message"),
    [
        ('{"name": "m", "value": Infinity}', "Infinity, which is not a finite number"),
        ('{"name": "m", "value": -Infinity}', "-Infinity, which is not a finite number"),
        ('{"name": "m", "value": NaN}', "NaN, which is not a finite number"),
        ('{"name": "m", "value": 1e999}', "not a finite number"),
        ('{"name": "m", "value": "inf"}', "not a finite number"),
        ('{"name": "m", "value": "-Infinity"}', "not a finite number"),
        ('{"name": "m", "value": "nan"}', "not a finite number"),
        ('{"name": "m", "value": true}', "must be a number"),
        ('{"name": "m", "value": [1]}', "must be a number"),
        ('{"name": "m"}', "metric 'm' has no value"),
        ('{"name": "m", "value": null}', "metric 'm' has no value"),
        ('{"value": 3}', "metric has no name"),
        ('"m=3"', "has no metric"),
    ],
)
def test_non_finite_or_missing_metrics_are_refused(ck: str, metric_json: str, message: str) -> None:
    text = json.dumps(_body(ck, metric="@METRIC@")).replace('"@METRIC@"', metric_json)
    _write(ck, text)
    with pytest.raises(CheckpointError, match=message):
        checkpoints.verify_checkpoint(ck)


def test_a_manifest_without_a_metric_names_it_instead_of_a_key_error(ck: str) -> None:
    body = _body(ck)
    del body["metric"]
    _write(ck, json.dumps(body))
    with pytest.raises(CheckpointError, match=r"has no metric \(expected \"metric\""):
        checkpoints.verify_checkpoint(ck)


def test_build_manifest_refuses_a_non_finite_metric(ck: str) -> None:
    for value in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(CheckpointError, match="not a finite number"):
            checkpoints.build_manifest(ck, metric_name="m", metric_value=value, env_id="e")


def test_a_manifest_that_lists_no_files_is_refused(ck: str) -> None:
    _write(ck, json.dumps(_body(ck, files=[])))
    with pytest.raises(CheckpointError, match="lists no files"):
        checkpoints.verify_checkpoint(ck)


def test_a_manifest_without_policy_weights_is_not_a_checkpoint(ck: str) -> None:
    body = _body(ck)
    body["files"] = [f for f in body["files"] if f["path"] != POLICY]
    loc = storage.parse_uri(storage.child_uri(ck, POLICY))
    if loc.scheme == "file":
        loc.path.unlink()
    else:
        storage.s3_client().delete_object(Bucket=loc.bucket, Key=loc.key)
    _write(ck, json.dumps(body))
    with pytest.raises(CheckpointError, match="lists no policy weights"):
        checkpoints.verify_checkpoint(ck)
    assert checkpoints.verify_checkpoint(ck, require_policy=False).files  # explicit opt-out still checks


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../outside.pt", "'..' segment"),
        ("/etc/passwd", "absolute"),
        ("a//b", "absolute|empty segment"),
        ("learner_group\\..\\x", "backslash"),
        ("a/\u200b/b", "invisible"),
        ("", "empty"),
        (MANIFEST_NAME, "lists itself"),
    ],
)
def test_manifest_keys_with_bad_segments_are_refused(ck: str, path: str, message: str) -> None:
    body = _body(ck)
    body["files"].append({"path": path, "size": 1, "sha256": "0" * 64})
    _write(ck, json.dumps(body))
    with pytest.raises(CheckpointError, match=message):
        checkpoints.verify_checkpoint(ck)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "x", "size": -1, "sha256": "0" * 64}, "size of 'x'"),
        ({"path": "x", "size": True, "sha256": "0" * 64}, "size of 'x'"),
        ({"path": "x", "size": "12", "sha256": "0" * 64}, "size of 'x'"),
        ({"path": "x", "size": 1, "sha256": "zz"}, "64 lowercase hex"),
        ({"path": "x", "size": 1}, "64 lowercase hex"),
        ("x", "must be an object"),
    ],
)
def test_malformed_file_entries_are_refused(ck: str, entry: object, message: str) -> None:
    body = _body(ck)
    body["files"].append(entry)
    _write(ck, json.dumps(body))
    with pytest.raises(CheckpointError, match=message):
        checkpoints.verify_checkpoint(ck)


def test_duplicate_file_entries_are_refused(ck: str) -> None:
    body = _body(ck)
    body["files"].append(dict(body["files"][0]))
    _write(ck, json.dumps(body))
    with pytest.raises(CheckpointError, match="twice"):
        checkpoints.verify_checkpoint(ck)


def test_too_many_files_are_refused(ck: str) -> None:
    body = _body(ck)
    body["files"] += [
        {"path": f"pad/{i}", "size": 0, "sha256": "0" * 64} for i in range(checkpoints.MAX_FILES)
    ]
    _write(ck, json.dumps(body))
    with pytest.raises(CheckpointError, match=f"over the limit of {checkpoints.MAX_FILES}"):
        checkpoints.verify_checkpoint(ck)


def test_an_oversized_manifest_is_refused_without_reading_it_whole(ck: str) -> None:
    body = _body(ck, extra={"padding": "x" * (checkpoints.MAX_MANIFEST_BYTES + 10)})
    _write(ck, json.dumps(body))
    with pytest.raises(CheckpointError, match="over the limit of 4194304 bytes"):
        checkpoints.verify_checkpoint(ck)
    with pytest.raises(CheckpointError, match="over the limit"):
        checkpoints.Manifest.from_json(json.dumps(body))


def test_deeply_nested_json_is_malformed_not_a_crash(ck: str) -> None:
    _write(ck, '{"schema": "' + MANIFEST_SCHEMA + '", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError, match="malformed"):
        checkpoints.verify_checkpoint(ck)


def test_manifest_checkpoint_uri_must_be_a_storage_uri(ck: str) -> None:
    _write(ck, json.dumps(_body(ck, checkpoint_uri="gs://elsewhere/x")))
    with pytest.raises(CheckpointError, match="checkpoint_uri is not a storage URI"):
        checkpoints.verify_checkpoint(ck)
