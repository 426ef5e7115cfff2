"""Bad configuration exits non-zero with one clear message, before any training starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.train.conftest import run_cli
from workloads.train_job import main


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# A few cases through a real subprocess (exit code and stderr as a RayJob sees them) ...
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--env", "pong", "--stop-iters", "1"], "unknown env 'pong'"),
        (["--env", "corridor", "--stop-iters", "1", "--storage", "s3://A_b/x"], "malformed S3 bucket name"),
        (["--env", "corridor", "--stop-iters", "1", "--num-env-runners", "-2"], "resources.num_env_runners"),
        (["--env", "corridor", "--stop-iters", "x"], "'--stop-iters': Input should be a valid integer"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], fragment: str) -> None:
    run = run_cli(*args, timeout=60)
    assert run.returncode == 2
    assert fragment in _one_error_line(run.stderr)
    assert "starting experiment" not in run.stdout


# ... and the rest through main() in this process (the same code, without the interpreter start-up).
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--env", "corridor", "--stop-iters", "1", "--storage", "ftp://h/x"], "unsupported storage"),
        (["--env", "corridor", "--stop-iters", "0"], "stop.iters"),
        (["--env", "corridor", "--stop-iters", "1", "--num-samples", "0"], "num_samples"),
        (["--env", "corridor", "--stop-iters", "1", "--num-gpus-per-learner", "-1"], "num_gpus_per_learner"),
        (["--env", "corridor", "--stop-iters", "1", "--num-to-keep", "0"], "checkpoint.num_to_keep"),
        (["--env", "corridor", "--stop-iters", "1", "--channel", "corridor-ppo"], "must differ"),
        (["--env", "corridor"], "no stop criterion"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--stop-iters", "2"], "say what to train"),
        (["--env", "corridor", "--lr", "fast"], "--lr takes a number"),
        (["--env", "corridor", "--scheduler", "hyperband"], "is not one of 'none', 'asha'"),
    ],
)
def test_bad_flags_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    argv = args if "--storage" in args else [*args, "--storage", str(tmp_path / "out")]
    assert main(argv) == 2  # flag errors come back as the exit code too, no SystemExit
    assert fragment in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_unknown_yaml_key_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("extends: tutorial\nresources:\n  num_env_runer: 2\n")
    run = run_cli("--config", str(cfg), "--storage", str(tmp_path / "out"), timeout=60)
    assert run.returncode == 2
    assert "resources.num_env_runer: unknown key" in _one_error_line(run.stderr)
    assert not (tmp_path / "out").exists()


def test_unreachable_s3_endpoint_fails_before_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    run = run_cli("--preset", "tutorial", "--storage", "s3://rlops-nowhere/runs", timeout=120)
    assert run.returncode == 2
    line = _one_error_line(run.stderr)
    assert "s3://rlops-nowhere/runs is not usable" in line and "unreachable" in line


def test_missing_bucket_fails_before_ray(s3_server) -> None:
    run = run_cli("--preset", "tutorial", "--storage", "s3://rlops-missing-bucket/runs", timeout=60)
    assert run.returncode == 2
    assert "bucket 'rlops-missing-bucket' does not exist" in _one_error_line(run.stderr)


@pytest.mark.slow
def test_more_gpus_than_the_cluster_has_fails_without_an_autoscaler(
    ray_cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check needs the cluster's resources: main() connects (here: reuses this process's
    connection to the shared cluster), then fails before Tune starts anything."""
    code = main(["--preset", "tutorial", "--storage", str(tmp_path), "--num-gpus-per-learner", "2"])
    assert code == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert "GPU=2" in line and "--autoscaler" in line
    assert "starting experiment" not in captured.out
    assert not (tmp_path / "tutorial").exists()
