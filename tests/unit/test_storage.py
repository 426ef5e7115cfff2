"""rlops_core.storage on a local folder and on a real S3-protocol server (moto in server mode)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from rlops_core import storage
from rlops_core.storage import Location, ObjectNotFound, StorageError, StorageURIError

BACKENDS = ["local", "s3"]


@pytest.fixture(params=BACKENDS)
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage root: a fresh local folder, or a fresh bucket (with a prefix) on the S3 test server."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/store"


@pytest.fixture
def s3_requests(s3_bucket: str) -> Iterator[list[str]]:
    """Every HTTP request the shared S3 client sends while the test runs, as 'METHOD url'."""
    sent: list[str] = []

    def record(request, **_kwargs):
        tag = request.headers.get("If-None-Match")
        tag = tag.decode() if isinstance(tag, bytes) else tag
        sent.append(f"{request.method} {request.url} if-none-match={tag}")

    client = storage.s3_client()
    client.meta.events.register("before-send.s3", record)
    yield sent
    client.meta.events.unregister("before-send.s3", record)


def _tree(base: Path) -> dict[str, bytes]:
    files = {
        "algorithm_state.pkl": os.urandom(3000),
        "learner_group/rl_module/default_policy/module_state.pt": bytes(range(256)) * 5,
        "learner_group/empty.txt": b"",
        "env_runner/connector state.json": b'{"a": 1}',
    }
    for rel, data in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    return files


# --------------------------------------------------------------------------------------------- read/write


def test_write_read_round_trip(root):
    uri = storage.join_uri(root, "a", "b.bin")
    payload = bytes(range(256)) * 10
    storage.write_bytes(uri, payload)
    assert storage.read_bytes(uri) == payload
    storage.write_text(uri, "héllo\n")
    assert storage.read_text(uri) == "héllo\n"
    assert storage.read_bytes(uri) == "héllo\n".encode()


def test_missing_object_raises_object_not_found(root):
    missing = storage.join_uri(root, "nope.txt")
    for call in (storage.read_bytes, storage.stat, lambda u: list(storage.iter_chunks(u))):
        with pytest.raises(ObjectNotFound, match=r"no (object|file) at .*nope\.txt"):
            call(missing)
    with pytest.raises(ObjectNotFound):
        storage.read_if_changed(missing, None)


def test_read_text_rejects_non_utf8(root):
    uri = storage.join_uri(root, "bin.txt")
    storage.write_bytes(uri, b"\xff\xfe\x00")
    with pytest.raises(StorageError, match="is not UTF-8 text"):
        storage.read_text(uri)


def test_local_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    uri = str(tmp_path / "d" / "pointer.txt")
    storage.write_text(uri, "one\n")
    storage.write_text(uri, "two\n")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["pointer.txt"]
    assert storage.read_text(uri) == "two\n"


def test_list_files_recurses_and_respects_the_prefix(root):
    storage.write_bytes(storage.join_uri(root, "dir", "x.bin"), b"12345")
    storage.write_bytes(storage.join_uri(root, "dir", "sub", "y.bin"), b"")
    storage.write_bytes(storage.join_uri(root, "dirx", "z.bin"), b"zz")  # a sibling sharing the prefix
    assert storage.list_files(storage.join_uri(root, "dir")) == {"x.bin": 5, "sub/y.bin": 0}
    assert storage.list_files(storage.join_uri(root, "dir") + "/") == {"x.bin": 5, "sub/y.bin": 0}
    assert storage.list_files(storage.join_uri(root, "nothing-here")) == {}


def test_list_files_ignores_s3_directory_markers(s3_bucket):
    loc = storage.parse_uri(s3_bucket)
    client = boto3.client("s3")
    for key in ("exp/", "exp/ckpt/", "exp/ckpt/sub/"):  # what pyarrow's create_dir writes
        client.put_object(Bucket=loc.bucket, Key=key, Body=b"")
    client.put_object(Bucket=loc.bucket, Key="exp/ckpt/sub/a.bin", Body=b"abc")
    assert storage.list_files(f"{s3_bucket}/exp/ckpt") == {"sub/a.bin": 3}


def test_stat_size_and_change_tag(root):
    uri = storage.join_uri(root, "obj")
    storage.write_bytes(uri, b"first")
    first = storage.stat(uri)
    assert first.size == 5 and first.etag
    storage.write_bytes(uri, b"second!")
    second = storage.stat(uri)
    assert second.size == 7 and second.etag != first.etag


def test_read_if_changed(root):
    uri = storage.join_uri(root, "best_checkpoint.txt")
    storage.write_text(uri, "A\n")
    data, tag = storage.read_if_changed(uri, None)
    assert data == b"A\n" and tag
    assert storage.read_if_changed(uri, tag) == (None, tag)
    storage.write_text(uri, "B\n")
    data, new_tag = storage.read_if_changed(uri, tag)
    assert data == b"B\n" and new_tag != tag
    assert storage.read_if_changed(uri, new_tag) == (None, new_tag)


def test_read_if_changed_on_s3_costs_one_request_when_idle(s3_bucket, s3_requests):
    uri = f"{s3_bucket}/ch/best_checkpoint.txt"
    storage.write_text(uri, "A\n")
    _, tag = storage.read_if_changed(uri, None)
    s3_requests.clear()
    assert storage.read_if_changed(uri, tag) == (None, tag)
    assert len(s3_requests) == 1, s3_requests
    assert s3_requests[0].startswith("HEAD "), s3_requests  # nothing downloaded while idle


def test_iter_chunks_streams_the_whole_object(root):
    uri = storage.join_uri(root, "big.bin")
    payload = os.urandom(10_000)
    storage.write_bytes(uri, payload)
    chunks = list(storage.iter_chunks(uri, chunk_size=4096))
    assert [len(c) for c in chunks] == [4096, 4096, 10_000 - 8192]
    assert b"".join(chunks) == payload


# --------------------------------------------------------------------------------------------- directories


def test_upload_download_round_trip(root, tmp_path):
    src = tmp_path / "src"
    files = _tree(src)
    target = storage.join_uri(root, "exp", "checkpoint_000001")
    storage.upload_dir(src, target)
    assert storage.list_files(target) == {rel: len(data) for rel, data in files.items()}
    dest = storage.download_dir(target, tmp_path / "dest")
    assert dest == tmp_path / "dest"
    got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert got == files


def test_download_dir_with_s3_directory_markers(s3_bucket, tmp_path):
    loc = storage.parse_uri(s3_bucket)
    client = boto3.client("s3")
    client.put_object(Bucket=loc.bucket, Key="ck/", Body=b"")
    client.put_object(Bucket=loc.bucket, Key="ck/sub/", Body=b"")
    client.put_object(Bucket=loc.bucket, Key="ck/sub/w.pt", Body=b"weights")
    dest = storage.download_dir(f"{s3_bucket}/ck", tmp_path / "d")
    assert (dest / "sub" / "w.pt").read_bytes() == b"weights"


def test_download_missing_directory_and_upload_missing_source(root, tmp_path):
    with pytest.raises(ObjectNotFound, match=r"no (directory|objects) (at|below) .*absent"):
        storage.download_dir(storage.join_uri(root, "absent"), tmp_path / "d")
    with pytest.raises(StorageError, match="not a directory"):
        storage.upload_dir(tmp_path / "no-such-dir", storage.join_uri(root, "x"))


# --------------------------------------------------------------------------------------------- reachability


def test_check_reachable(root):
    storage.check_reachable(root)
    if root.startswith("/"):
        assert Path(root).is_dir()


def test_check_reachable_missing_bucket(s3_server):
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-xyz' does not exist"):
        storage.check_reachable("s3://no-such-bucket-xyz/prefix")


def test_check_reachable_unwritable_local_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot create storage folder"):
        storage.check_reachable(str(blocker / "sub"))


@pytest.fixture
def closed_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """AWS_ENDPOINT_URL pointing at a loopback port that nothing listens on."""
    from rlops_demo.cluster import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    storage.reset_clients()
    yield endpoint
    storage.reset_clients()  # the next test builds a client from the restored environment


def test_unreachable_endpoint_gives_a_clear_storage_error(closed_endpoint):
    for call in (
        lambda: storage.read_bytes("s3://some-bucket/key.txt"),
        lambda: storage.write_text("s3://some-bucket/key.txt", "x"),
        lambda: storage.list_files("s3://some-bucket/dir"),
        lambda: storage.check_reachable("s3://some-bucket"),
    ):
        pattern = r"S3 unreachable for s3://some-bucket.*Could not connect"
        with pytest.raises(StorageError, match=pattern) as exc:
            call()
        assert closed_endpoint in str(exc.value)


# --------------------------------------------------------------------------------------------- URIs


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b", Location("s3", "bucket", "a/b")),
        ("s3://bucket", Location("s3", "bucket", "")),
        ("s3://bucket/", Location("s3", "bucket", "")),
        ("s3://my.bucket-1/a/b/", Location("s3", "my.bucket-1", "a/b")),
        ("  s3://bucket/x \n", Location("s3", "bucket", "x")),
        ("file:///tmp/x", Location("file", "", "/tmp/x")),
        ("file://localhost/tmp/x", Location("file", "", "/tmp/x")),
        ("file:///tmp/a%20b", Location("file", "", "/tmp/a b")),
        ("/tmp/x/", Location("file", "", "/tmp/x")),
        ("/tmp/a/./b/../c", Location("file", "", "/tmp/a/c")),
    ],
)
def test_parse_uri_accepts(uri, expected):
    assert storage.parse_uri(uri) == expected


def test_parse_uri_relative_and_home_paths_become_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert storage.parse_uri("runs/demo") == Location("file", "", str(tmp_path / "runs" / "demo"))
    assert storage.parse_uri("~/runs") == Location("file", "", str(tmp_path / "home" / "runs"))


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (None, "empty"),
        ("s3://", "bucket name"),
        ("s3:///key", "bucket name"),
        ("s3://ab/x", "bucket name"),
        ("s3://" + "b" * 64, "bucket name"),
        ("s3://Bucket/x", "bucket name"),
        ("s3://bucket_name/x", "bucket name"),
        ("s3://-bucket/x", "bucket name"),
        ("s3://bucket-/x", "bucket name"),
        ("s3://bucket./x", "bucket name"),
        ("s3://a..b/x", "bucket name"),
        ("s3://user@bucket/x", "bucket name"),
        ("s3://bucket:9000/x", "bucket name"),
        ("s3://bucket/a//b", "S3 key"),
        ("s3://bucket/a/../b", "S3 key"),
        ("s3://bucket/./b", "S3 key"),
        ("s3://bucket/x?versionId=1", "query or fragment"),
        ("s3://bucket/x#frag", "query or fragment"),
        ("gs://bucket/x", "unsupported storage scheme 'gs'"),
        ("http://example.com/x", "unsupported storage scheme 'http'"),
        ("hdfs://nn/x", "unsupported storage scheme 'hdfs'"),
        ("file://host/tmp/x", "must not name a host"),
        ("file://", "names no path"),
    ],
)
def test_parse_uri_rejects(uri, message):
    with pytest.raises(StorageURIError, match=message):
        storage.parse_uri(uri)


def test_uri_errors_are_value_errors_and_storage_errors():
    with pytest.raises(ValueError):
        storage.parse_uri("ftp://x/y")
    with pytest.raises(StorageError):
        storage.parse_uri("ftp://x/y")


def test_location_uri_and_join():
    assert storage.parse_uri("s3://bucket/a/b").uri == "s3://bucket/a/b"
    assert storage.parse_uri("s3://bucket").uri == "s3://bucket"
    assert storage.parse_uri("file:///tmp/x").uri == "/tmp/x"
    assert (
        storage.join_uri("s3://bucket", "exp", "best_checkpoint.txt") == "s3://bucket/exp/best_checkpoint.txt"
    )
    assert storage.join_uri("s3://bucket/root/", "/exp/", "ck") == "s3://bucket/root/exp/ck"
    assert storage.join_uri("/data/root", "exp", "", "f.txt") == "/data/root/exp/f.txt"
    with pytest.raises(StorageURIError, match="not a local path"):
        _ = storage.parse_uri("s3://bucket/a").path


@pytest.mark.parametrize(
    ("uri", "prefixes", "inside"),
    [
        ("s3://b00/ab/c", ["s3://b00/ab"], True),
        ("s3://b00/ab", ["s3://b00/ab"], True),
        ("s3://b00/ab", ["s3://b00/ab/"], True),
        ("s3://b00/abc", ["s3://b00/ab"], False),
        ("s3://b00/abc/d", ["s3://b00/ab"], False),
        ("s3://b00/x/y", ["s3://b00"], True),
        ("s3://b01/ab/c", ["s3://b00/ab"], False),
        ("s3://b00/ab/c", ["/b00/ab"], False),
        ("/b00/ab/c", ["s3://b00/ab"], False),
        ("s3://b00/q", ["s3://b00/ab", "s3://b00/q"], True),
        ("s3://b00/q", [], False),
        ("/data/ck/1", ["/data/ck"], True),
        ("/data/ckx/1", ["/data/ck"], False),
        ("file:///data/ck/1", ["/data/ck/"], True),
        ("/data/ck/../secret", ["/data/ck"], False),
        ("/data/ck/sub/../2", ["/data/ck"], True),
        ("/anything", ["/"], True),
    ],
)
def test_is_within(uri, prefixes, inside):
    assert storage.is_within(uri, prefixes) is inside


def test_is_within_rejects_malformed_input():
    with pytest.raises(StorageURIError):
        storage.is_within("gs://b00/x", ["s3://b00"])
    with pytest.raises(StorageURIError):
        storage.is_within("s3://b00/x", ["s3://B/x"])


def test_s3_client_is_cached_per_process_and_reset(s3_server):
    first = storage.s3_client()
    assert storage.s3_client() is first
    storage.reset_clients()
    assert storage.s3_client() is not first
