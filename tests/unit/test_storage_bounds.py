"""Bounds on what is read from a store, errors that say what happened, and version tokens that change
on every write (issue 10 classes 5, 6 and 7). S3 cases use moto in server mode; the slow-server cases
use a real loopback HTTP server (tests/helpers/s3_faults.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from rlops_core import checkpoints, storage
from rlops_core.storage import AccessDenied, LimitExceeded, StorageTimeout
from tests.helpers.s3_faults import TricklingS3, deny


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/store"


# --------------------------------------------------------------------------------------------- sizes


def test_an_oversized_pointer_is_refused_without_downloading_it(root: str) -> None:
    pointer = checkpoints.pointer_uri(root, "ch")
    storage.write_bytes(pointer, b"s3://bucket/ck" + b" " * (16 << 20))
    if root.startswith("s3://"):
        with deny() as sent, pytest.raises(LimitExceeded, match="over the limit of 4096") as err:
            storage.read_if_changed(pointer, None, max_bytes=checkpoints.MAX_POINTER_BYTES)
        assert [s.split()[0] for s in sent] == ["HEAD"], sent  # the size alone decides: no GET at all
    else:
        with pytest.raises(LimitExceeded, match="over the limit of 4096") as err:
            storage.read_if_changed(pointer, None, max_bytes=checkpoints.MAX_POINTER_BYTES)
    assert err.value.etag  # the refusal can be remembered for this version
    with pytest.raises(checkpoints.CheckpointError, match="over the limit of 4096 bytes"):
        checkpoints.read_pointer(pointer)


def test_a_pointer_at_the_limit_is_read(root: str) -> None:
    pointer = checkpoints.pointer_uri(root, "ch")
    text = "s3://bucket/ck\n"
    storage.write_bytes(pointer, text.encode() + b" " * (checkpoints.MAX_POINTER_BYTES - len(text)))
    assert checkpoints.read_pointer(pointer) == "s3://bucket/ck"
    data, _ = storage.read_if_changed(pointer, None, max_bytes=checkpoints.MAX_POINTER_BYTES)
    assert data is not None and len(data) == checkpoints.MAX_POINTER_BYTES


def test_bounded_reads_on_s3_are_ranged(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/big.bin"
    storage.write_bytes(uri, b"x" * 100_000)
    seen: list[str] = []

    def record(request, **_kwargs):
        value = request.headers.get("Range")
        seen.append(value.decode() if isinstance(value, bytes) else str(value))

    client = storage.s3_client()
    client.meta.events.register("before-send.s3", record)
    try:
        with pytest.raises(LimitExceeded, match="100000 bytes, over the limit of 1000"):
            storage.read_bytes(uri, max_bytes=1000)
    finally:
        client.meta.events.unregister("before-send.s3", record)
    assert seen == ["bytes=0-1000"]


def test_bounded_read_of_an_empty_object(root: str) -> None:
    uri = storage.join_uri(root, "empty.txt")
    storage.write_bytes(uri, b"")
    assert storage.read_bytes(uri, max_bytes=10) == b""
    data, token = storage.read_if_changed(uri, None, max_bytes=10)
    assert data == b"" and token


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("s3://bucket/ck\u200b", "\\u200b"),
        ("s3://bucket/\u202eck", "\\u202e"),
        ("s3://bucket/ck\x1b[2J", "\\x1b"),
        ("/data/ck\x7f", "\\x7f"),
    ],
)
def test_invisible_characters_in_a_pointer_are_refused_and_shown_escaped(text: str, escaped: str) -> None:
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.parse_pointer(text + "\n")
    message = str(err.value)
    assert escaped in message and text.strip() not in message and message.isprintable()


# --------------------------------------------------------------------------------------------- time


@pytest.fixture
def trickling(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[TricklingS3]:
    with TricklingS3(what=request.param, size=120, gap=0.5) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        storage.reset_clients()
        yield server
    storage.reset_clients()


@pytest.mark.parametrize("trickling", ["body", "headers"], indirect=True)
def test_a_trickling_server_cannot_hold_a_read_past_its_total_deadline(trickling: TricklingS3) -> None:
    """The server would take 60 s for its answer (one byte each 0.5 s); per-read timeouts never trip."""
    started = time.monotonic()
    with pytest.raises(StorageTimeout, match="took longer than 1 s"):
        storage.read_if_changed("s3://slow-bucket/best_checkpoint.txt", None, max_bytes=4096, deadline_s=1.0)
    with pytest.raises(StorageTimeout):
        storage.read_bytes("s3://slow-bucket/ck/rlops.json", max_bytes=4096, deadline_s=1.0)
    with pytest.raises(StorageTimeout):
        storage.list_files("s3://slow-bucket/ck", deadline_s=1.0)
    assert time.monotonic() - started < 30, "a read was held by the server"  # hang detector only


@pytest.mark.parametrize("trickling", ["body"], indirect=True)
def test_a_poll_against_a_trickling_server_is_a_transient_timeout(
    trickling: TricklingS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlops_operator import checks

    monkeypatch.setattr(storage, "READ_DEADLINE_S", 1.0)  # the setting; 30 s by default
    started = time.monotonic()
    with pytest.raises(checks.TransientError) as err:
        checks.read_pointer("s3://slow-bucket/ch/best_checkpoint.txt", None)
    assert err.value.reason == "StorageTimeout" and "took longer than 1 s" in err.value.message
    assert time.monotonic() - started < 30, "the poll was held by the server"  # hang detector only


# --------------------------------------------------------------------------------------------- errors


def test_access_denied_is_its_own_error(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/secret/best_checkpoint.txt"
    storage.write_text(uri, "s3://bucket/ck\n")
    with deny("secret/best_checkpoint.txt"):
        for call in (
            lambda: storage.read_if_changed(uri, None, max_bytes=4096),
            lambda: storage.read_bytes(uri),
            lambda: storage.stat(uri),
            lambda: list(storage.iter_chunks(uri)),
        ):
            with pytest.raises(AccessDenied, match=r"access denied to s3://.*check the credentials"):
                call()
    assert AccessDenied.transient and not LimitExceeded.transient and not storage.UnsafeKeyError.transient


def test_local_permission_error_is_access_denied(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    path = tmp_path / "locked.txt"
    path.write_text("x")
    path.chmod(0)
    with pytest.raises(AccessDenied):
        storage.read_bytes(str(path))


# --------------------------------------------------------------------------------------------- versions


def test_rewriting_the_same_pointer_is_a_new_version(root: str) -> None:
    """Issue 10 class 7: pointer, then the checkpoint's manifest, then the same pointer again."""
    pointer = checkpoints.pointer_uri(root, "ch")
    ck = storage.join_uri(root, "exp", "ck")
    checkpoints.write_pointer(pointer, ck)
    first, token = storage.read_if_changed(pointer, None)
    assert storage.read_if_changed(pointer, token) == (None, token)
    storage.write_text(storage.join_uri(ck, checkpoints.MANIFEST_NAME), "{}")
    checkpoints.write_pointer(pointer, ck)  # the very same bytes, at once
    again, new_token = storage.read_if_changed(pointer, token)
    assert again == first and new_token != token
    assert storage.read_if_changed(pointer, new_token) == (None, new_token)
    assert storage.stat(pointer).etag == new_token


def test_versioned_bucket_tokens_change_for_other_writers(s3_bucket: str) -> None:
    """Objects written by other tools (no write id) still get a new token on a versioned bucket."""
    loc = storage.parse_uri(s3_bucket)
    client = boto3.client("s3")
    client.put_bucket_versioning(Bucket=loc.bucket, VersioningConfiguration={"Status": "Enabled"})
    uri = f"{s3_bucket}/ch/best_checkpoint.txt"
    client.put_object(Bucket=loc.bucket, Key="ch/best_checkpoint.txt", Body=b"s3://bucket/ck\n")
    _, token = storage.read_if_changed(uri, None)
    client.put_object(Bucket=loc.bucket, Key="ch/best_checkpoint.txt", Body=b"s3://bucket/ck\n")
    data, new_token = storage.read_if_changed(uri, token)
    assert data == b"s3://bucket/ck\n" and new_token != token and "|v=" in new_token


def test_a_plain_etag_from_an_older_status_reads_once_more(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/ch/best_checkpoint.txt"
    storage.write_text(uri, "s3://bucket/ck\n")
    etag = storage.s3_client().head_object(
        Bucket=storage.parse_uri(uri).bucket, Key="ch/best_checkpoint.txt"
    )["ETag"]
    data, token = storage.read_if_changed(uri, etag)
    assert data == b"s3://bucket/ck\n" and token.startswith(etag + "|")
