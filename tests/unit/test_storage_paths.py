"""Nothing escapes its place (issue 10 class 4, issue 14 §1): keys, joins, downloads, symlinks.

S3 cases run against moto in server mode (an emulation of S3 over real HTTP on loopback), which, like
S3, accepts keys with empty, ``.`` and ``..`` segments.
"""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest

from rlops_core import checkpoints, keys, storage
from rlops_core.storage import StorageURIError, UnsafeKeyError


def _files_below(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*")} if path.exists() else set()


# --------------------------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "empty"),
        (".", "'.' segment"),
        ("..", "'..' segment"),
        ("a/../b", "'..' segment"),
        ("a/./b", "'.' segment"),
        ("/tmp/x", "absolute"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("a\\..\\b", "backslash"),
        ("a\x00b", "control characters"),
        ("a\nb", "control characters"),
        ("a\x1b[31mb", "control characters"),
        ("a\u200bb", "invisible characters"),
        ("a/" + "x" * 256, "over 255"),
        ("x/" * 600, "longer than 1024"),
    ],
)
def test_check_key_refuses(key: str, why: str) -> None:
    with pytest.raises(UnsafeKeyError, match=why):
        keys.check_key(key)


def test_check_key_keeps_good_keys_unchanged() -> None:
    for key in ("a", "env_runner/connector state.json", "learner_group/learner/rl_module/p/m.pt", "..a/b.."):
        assert keys.check_key(key) == key


def test_shown_escapes_invisible_characters_and_truncates() -> None:
    assert keys.shown("s3://b/a\u200bb\x1b") == "'s3://b/a\\u200bb\\x1b'"
    long = keys.shown("x" * 5000)
    assert len(long) < 260 and "5000 characters" in long


# --------------------------------------------------------------------------------------------- joins


@pytest.mark.parametrize("part", ["..", "a/../../b", "a//b", ".", "a\\b", "a\x00b"])
def test_join_refuses_parts_that_could_leave(part: str) -> None:
    for base in ("s3://bucket/ck", "/data/ck"):
        with pytest.raises(UnsafeKeyError):
            storage.join_uri(base, part)


def test_child_uri_uses_the_key_exactly_and_never_collapses() -> None:
    assert storage.child_uri("s3://bucket/ck", "a/b.pt") == "s3://bucket/ck/a/b.pt"
    assert storage.child_uri("/data/ck", "a/b.pt") == "/data/ck/a/b.pt"
    for rel in ("/tmp/x", "a//b", "../x"):  # the old join stripped '/tmp/x' to 'tmp/x': another object
        with pytest.raises(UnsafeKeyError):
            storage.child_uri("s3://bucket/ck", rel)


def test_same_uri_is_strict() -> None:
    assert storage.same_uri("s3://bucket/a/b/", "s3://bucket/a/b")
    assert storage.same_uri("file:///data/ck", "/data/ck/")
    assert not storage.same_uri("s3://bucket/a", "s3://bucket/a/b")
    assert not storage.same_uri(None, "s3://bucket/a") and not storage.same_uri("", "")
    assert not storage.same_uri("gs://x/y", "gs://x/y")  # malformed is never "the same", even verbatim


# --------------------------------------------------------------------------------------------- S3 keys


@pytest.mark.parametrize("evil", ["/{escape}", "../../{name}", "sub/../../{name}", "a\\..\\{name}"])
def test_s3_listing_and_download_refuse_escaping_keys_and_write_nothing(
    s3_bucket: str, tmp_path: Path, evil: str
) -> None:
    escape = tmp_path / "outside" / "pwned"
    key_rel = evil.format(escape=str(escape).lstrip("/"), name="pwned")
    loc = storage.parse_uri(s3_bucket)
    client = boto3.client("s3")
    client.put_object(Bucket=loc.bucket, Key="ck/good.bin", Body=b"fine")
    client.put_object(Bucket=loc.bucket, Key=f"ck/{key_rel}", Body=b"attacker")
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeKeyError):
        storage.list_files(f"{s3_bucket}/ck")
    with pytest.raises(UnsafeKeyError):
        storage.download_dir(f"{s3_bucket}/ck", dest)
    assert _files_below(dest) == set()  # refused before the first write, good files included
    assert not escape.exists() and not (tmp_path / "pwned").exists()


def test_issue14_empty_segment_checkpoint_is_refused_before_hashing(s3_bucket: str, tmp_path: Path) -> None:
    """``ckpt//tmp/x``: verification used to hash ``ckpt/tmp/x`` while the download wrote ``/tmp/x``."""
    ck = f"{s3_bucket}/exp/ck"
    for rel, data in {"learner_group/rl_module/p/w.pt": b"w" * 100, "tmp/x": b"decoy"}.items():
        storage.write_bytes(storage.child_uri(ck, rel), data)
    checkpoints.write_manifest(checkpoints.build_manifest(ck, metric_name="m", metric_value=1, env_id="e"))
    loc = storage.parse_uri(ck)
    boto3.client("s3").put_object(Bucket=loc.bucket, Key=f"{loc.key}//tmp/x", Body=b"payload")
    with pytest.raises(checkpoints.CheckpointError, match="is absolute"):
        checkpoints.verify_checkpoint(ck)


# --------------------------------------------------------------------------------------------- download


def test_download_checkpoint_checks_every_path_before_writing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "rl_module").mkdir(parents=True)
    (src / "rl_module" / "w.pt").write_bytes(b"w")
    good = checkpoints.FileEntry("rl_module/w.pt", 1, checkpoints.sha256_of(str(src / "rl_module" / "w.pt")))
    for bad in ("../escaped", "/abs", "a//b"):
        manifest = checkpoints.Manifest(
            str(src), [good, checkpoints.FileEntry(bad, 1, "0" * 64)], "m", 1.0, "e"
        )
        dest = tmp_path / "dest"
        with pytest.raises(checkpoints.CheckpointError, match="cannot be downloaded safely"):
            checkpoints.download_checkpoint(str(src), manifest, dest)
        assert _files_below(dest) == set()
    assert not (tmp_path / "escaped").exists()


def test_download_refuses_a_symlink_planted_in_the_destination(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "rl_module").mkdir(parents=True)
    (src / "rl_module" / "w.pt").write_bytes(b"weights")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "rl_module").symlink_to(outside)
    with pytest.raises(UnsafeKeyError, match="symlink"):
        storage.download_dir(str(src), dest)
    assert _files_below(outside) == set()


def test_download_file_stops_at_the_recorded_size(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(storage.LimitExceeded):
        storage.download_file(str(big), tmp_path / "copy.bin", max_bytes=100)


def test_hashing_streams_instead_of_reading_whole_files(tmp_path: Path) -> None:
    import tracemalloc

    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        for _ in range(48):
            fh.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        checkpoints.sha256_of(str(big))
        storage.download_file(str(big), tmp_path / "copy.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"hashing a 48 MiB file peaked at {peak >> 20} MiB"


# --------------------------------------------------------------------------------------------- local symlinks


def test_a_symlink_inside_an_allowed_prefix_pointing_outside_is_outside(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (outside / "ck").mkdir(parents=True)
    allowed.mkdir()
    (allowed / "ck").symlink_to(outside / "ck")
    assert not storage.is_within(str(allowed / "ck"), [str(allowed)])
    assert storage.is_within(str(outside / "ck"), [str(outside)])
    (allowed / "real").mkdir()
    (allowed / "alias").symlink_to(allowed / "real")  # a symlink that stays inside is fine
    assert storage.is_within(str(allowed / "alias"), [str(allowed)])


def test_a_symlinked_file_inside_a_checkpoint_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("credentials")
    ck = tmp_path / "ck"
    (ck / "rl_module").mkdir(parents=True)
    (ck / "rl_module" / "w.pt").write_bytes(b"w")
    (ck / "rl_module" / "extra.pt").symlink_to(secret)
    with pytest.raises(UnsafeKeyError, match="symlink"):
        storage.list_files(str(ck))
    with pytest.raises(checkpoints.CheckpointError, match="symlink"):
        checkpoints.build_manifest(str(ck), metric_name="m", metric_value=1, env_id="e")
    with pytest.raises(UnsafeKeyError, match="symlink"):
        storage.download_dir(str(ck), tmp_path / "dest")
    assert not (tmp_path / "dest" / "rl_module" / "extra.pt").exists()


def test_a_symlinked_folder_inside_a_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f").write_text("x")
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeKeyError, match="symlink"):
        storage.list_files(str(ck))


def test_a_fifo_inside_a_checkpoint_is_refused_not_read(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    os.mkfifo(ck / "pipe")
    with pytest.raises(UnsafeKeyError, match="not a regular file"):
        storage.list_files(str(ck))
    with pytest.raises(UnsafeKeyError, match="not a regular file"):
        storage.read_bytes(str(ck / "pipe"), max_bytes=10)


def test_uri_with_nul_is_refused() -> None:
    with pytest.raises(StorageURIError, match="NUL"):
        storage.parse_uri("/data/a\x00b")
