"""The demo's run directories: every ``make demo`` starts in a fresh one and keeps the previous ones.

Layout under the output folder (``results/demo`` by default)::

    runs/<UTC time>/        one run: storage/ (checkpoints, pointer), report.html, images/, logs
    latest -> runs/<...>    relative symlink to the newest run

A run that finished has a ``summary.json``. ``--resume`` continues the newest run that did not finish
(an interrupted one) instead of starting a new one. The oldest finished runs beyond ``keep`` are
removed when a new run starts; unfinished runs are never removed.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

RUNS = "runs"
LATEST = "latest"
SUMMARY = "summary.json"
_RUN_ID = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")


class RunDirError(Exception):
    """The run directory cannot be created or resumed; the message says what to do."""


@dataclass(frozen=True)
class RunDir:
    """One demo run's folder and the paths the demo writes inside it."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def storage(self) -> Path:
        return self.path / "storage"

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def finished(self) -> bool:
        return self.summary.is_file()


def _sort_key(path: Path) -> tuple[str, int]:
    stamp, _, n = path.name.partition("-")
    return stamp, int(n or 0)


def list_runs(out: Path) -> list[RunDir]:
    """Every run under ``out``, oldest first (names that are not run ids are ignored)."""
    runs = out / RUNS
    if not runs.is_dir():
        return []
    found = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink() and _RUN_ID.match(p.name)]
    return [RunDir(p) for p in sorted(found, key=_sort_key)]


def new_run(out: Path, now: datetime | None = None) -> RunDir:
    """Create a fresh run folder named after the UTC time (``-2``, ``-3``... if that name is taken)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    runs = out / RUNS
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create {runs}: {exc}; pass --out to a writable folder") from exc
    for n in range(1, 1000):
        path = runs / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()  # atomic: two demos started in the same second get different folders
        except FileExistsError:
            continue
        return RunDir(path)
    raise RunDirError(f"more than 999 runs named {stamp} in {runs}")


def resume_run(out: Path) -> RunDir:
    """The newest run that did not finish, to continue it; a clear error when there is none."""
    runs = list_runs(out)
    if not runs:
        raise RunDirError(f"nothing to resume: no runs under {out / RUNS}; run without --resume")
    newest = runs[-1]
    if newest.finished:
        raise RunDirError(
            f"nothing to resume: the newest run {newest.path} finished (it has {SUMMARY}); "
            "run without --resume to start a new one"
        )
    return newest


def mark_latest(out: Path, run: RunDir) -> Path:
    """Point ``out/latest`` at ``run`` (a relative symlink, replaced atomically)."""
    link = out / LATEST
    if link.exists() and not link.is_symlink():
        raise RunDirError(f"{link} exists and is not a symlink; move it away so the demo can manage it")
    tmp = out / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path(RUNS) / run.run_id, target_is_directory=True)
    tmp.replace(link)
    return link


def prune(out: Path, keep: int, current: RunDir) -> list[Path]:
    """Remove the oldest finished runs so that at most ``keep`` finished runs remain besides ``current``.

    Unfinished runs (interrupted, resumable) and ``current`` are never removed. ``keep`` < 0 keeps all.
    """
    if keep < 0:
        return []
    finished = [r for r in list_runs(out) if r.finished and r.path != current.path]
    doomed = finished[: max(0, len(finished) - keep)]
    for run in doomed:
        shutil.rmtree(run.path)
    return [r.path for r in doomed]


LEGACY = ("storage", "report.html", "rollout.png", "summary.json", "ray-head.log")


def legacy_leftovers(out: Path) -> list[Path]:
    """What demos before run folders wrote straight into ``out`` (no longer read; safe to delete)."""
    return [out / name for name in LEGACY if (out / name).exists()]
