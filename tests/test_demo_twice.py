"""``make demo`` twice in the same checkout: both runs pass, each in its own run folder.

The real main job (``python -m rlops_demo``, its defaults except a shorter second round, its own Ray
cluster on free loopback ports) runs twice into one output folder. Before run folders existed, the
second run resumed the first's storage, found the channel already at round 2 and exited 1.

The first run uses today's ``Replace`` flow (``--replace``, two rounds); the second the demo's default,
which is the progressive-delivery story once ``rlops_demo.strategy.PROGRESSIVE_READY`` is on (three
rounds: round 2 promoted through shadow, gate and canary; round 3, trained on the wrong simulator,
aborted while round 2 keeps serving). Either way each run's summary says which it ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlops_demo import rundir
from tests.test_report_render import image_sources

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 900  # a Replace run takes ~3 minutes here, a progressive one ~6; this only catches a hang
# The real demo with a shorter second round (5 instead of 10 iterations): still well above round 1.
SMALL = ("--second-iters", "5")


def _demo(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    return subprocess.run(
        [sys.executable, "-m", "rlops_demo", "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def _check_finished(run: rundir.RunDir) -> dict:
    summary = json.loads(run.summary.read_text())
    assert summary["requests_failed"] == 0
    rounds = summary["rounds"]
    rollouts = summary["rollouts"]
    if summary["strategy"] == "Replace":
        assert [r["name"] for r in rounds] == ["round-1", "round-2"]
        assert [r["outcome"] for r in rollouts] == ["promoted"]
    else:
        assert [r["name"] for r in rounds] == ["round-1", "round-2", "round-3"]
        assert [r["outcome"] for r in rollouts] == ["promoted", "aborted"]
        assert rounds[2]["metric"] > rounds[1]["metric"]  # the old metric gate would have promoted it
        assert [s["name"] for s in rollouts[0]["stages"]][-1] == "full"
        aborted = rollouts[1]
        assert aborted["challenger"] == rounds[2]["checkpoint_uri"] and aborted["reason"]
    assert rollouts[0]["challenger"] == rounds[1]["checkpoint_uri"]
    assert all(r["promoted"] for r in rounds)
    live = [uri for _, uri in summary["live_checkpoints"]]
    assert live[-1] == rounds[1]["checkpoint_uri"]
    assert summary["rounds"][1]["checkpoint_uri"].startswith(str(run.storage))
    srcs = image_sources(run.report.read_text())
    assert srcs and all((run.path / src).is_file() for src in srcs)
    return summary


@pytest.mark.slow
def test_demo_runs_twice_in_the_same_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    first = _demo(out, *SMALL, "--replace")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = _demo(out, *SMALL)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    runs = rundir.list_runs(out)
    assert len(runs) == 2 and all(r.finished for r in runs)
    a, b = (_check_finished(r) for r in runs)
    assert a["rounds"][1]["checkpoint_uri"] != b["rounds"][1]["checkpoint_uri"]
    assert (out / "latest").resolve() == runs[1].path.resolve()

    # --resume is explicit, and a finished run is not resumed: a clear message, nothing touched.
    resumed = _demo(out, "--resume")
    assert resumed.returncode != 0
    assert "nothing to resume" in resumed.stderr and "without --resume" in resumed.stderr
    assert len(rundir.list_runs(out)) == 2
