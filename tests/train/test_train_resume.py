"""A run killed mid-way (SIGKILL of the driver, as a preempted RayJob pod) resumes under the same name."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rlops_core import checkpoints
from tests.train.conftest import FAST_CORRIDOR, REPO_ROOT, cli_command, cli_env

pytestmark = pytest.mark.slow

STOP_ITERS = 3


def _checkpoint_files(exp: Path) -> dict[str, set[str]]:
    """Every finished checkpoint directory (it holds rllib_checkpoint.json) and its files."""
    out = {}
    for marker in exp.glob("*/checkpoint_*/rllib_checkpoint.json"):
        ckpt = marker.parent
        out[ckpt.relative_to(exp).as_posix()] = {
            p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file()
        }
    return out


def _snapshot_after(exp: Path, when: float) -> bool:
    """Whether Tune's experiment state was saved after ``when`` (a file mtime)."""
    return any(p.stat().st_mtime > when for p in exp.glob("experiment_state-*.json"))


def _wait_for_first_checkpoint(proc: subprocess.Popen, exp: Path, timeout: float) -> dict[str, set[str]]:
    """Wait until a checkpoint is complete and the experiment state saved since records it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _checkpoint_files(exp)
        if found:
            first = min((exp / c / "rllib_checkpoint.json").stat().st_mtime for c in found)
            if _snapshot_after(exp, first):
                return found
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended before its first checkpoint:\n{out}\n{err}")
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared in time")


def test_killed_run_resumes_with_all_trials_and_no_lost_checkpoints(ray_cluster, tmp_path: Path) -> None:
    args = [
        *FAST_CORRIDOR,
        "--storage",
        str(tmp_path),
        "--name",
        "preempted",
        "--lr",
        "0.01,0.005",
        "--stop-iters",
        str(STOP_ITERS),
        "--num-to-keep",
        "10",
    ]
    exp = tmp_path / "preempted"
    proc = subprocess.Popen(
        cli_command(*args),
        cwd=REPO_ROOT,
        env=cli_env(ray_cluster.address),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        before = _wait_for_first_checkpoint(proc, exp, timeout=240)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (exp / "best_checkpoint.txt").exists()  # the kill came before the commit point

    resumed = subprocess.run(
        cli_command(*args),
        cwd=REPO_ROOT,
        env=cli_env(ray_cluster.address),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming experiment preempted" in resumed.stdout

    after = _checkpoint_files(exp)
    for ckpt, files in before.items():  # nothing written before the kill was lost
        assert ckpt in after and files <= after[ckpt], ckpt

    trials = sorted(p for p in exp.iterdir() if p.is_dir() and p.name.startswith("PPO_corridor_"))
    assert len(trials) == 2
    lrs = set()
    for trial in trials:
        lrs.add(json.loads((trial / "params.json").read_text())["lr"])
        with (trial / "progress.csv").open() as fh:
            iterations = [int(row["training_iteration"]) for row in csv.DictReader(fh)]
        assert max(iterations) == STOP_ITERS
        assert sorted(set(iterations)) == list(range(1, STOP_ITERS + 1))
        assert len(list(trial.glob("checkpoint_*/rllib_checkpoint.json"))) >= STOP_ITERS
    assert lrs == {0.01, 0.005}

    # At least one trial was interrupted and continued from its checkpoint, not from scratch.
    last_results = [json.loads((t / "result.json").read_text().splitlines()[-1]) for t in trials]
    assert any(r["iterations_since_restore"] < STOP_ITERS for r in last_results)

    best = checkpoints.read_pointer(str(exp / "best_checkpoint.txt"))
    checkpoints.verify_checkpoint(best)
