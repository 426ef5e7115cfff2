"""The demo's run folders: a fresh one per run, previous reports kept, ``--resume`` only when asked."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rlops_demo import rundir
from rlops_demo.__main__ import choose_run

T0 = datetime(2026, 11, 22, 3, 15, 0, tzinfo=UTC)


def _finish(run: rundir.RunDir) -> rundir.RunDir:
    run.summary.write_text("{}")
    return run


def test_each_run_gets_its_own_folder_even_in_the_same_second(tmp_path: Path) -> None:
    a = rundir.new_run(tmp_path, T0)
    b = rundir.new_run(tmp_path, T0)
    c = rundir.new_run(tmp_path, T0)
    assert [r.run_id for r in (a, b, c)] == ["20261122T031500Z", "20261122T031500Z-2", "20261122T031500Z-3"]
    assert all(r.path.is_dir() for r in (a, b, c))
    assert [r.run_id for r in rundir.list_runs(tmp_path)] == [a.run_id, b.run_id, c.run_id]


def test_runs_sort_by_time_then_number(tmp_path: Path) -> None:
    for name in ["20261122T031500Z-10", "20261122T031500Z-2", "20261121T235959Z", "20261122T031500Z"]:
        (tmp_path / "runs" / name).mkdir(parents=True)
    (tmp_path / "runs" / "notes").mkdir()  # not a run: ignored, never pruned
    names = [r.run_id for r in rundir.list_runs(tmp_path)]
    assert names == ["20261121T235959Z", "20261122T031500Z", "20261122T031500Z-2", "20261122T031500Z-10"]


def test_latest_is_a_relative_symlink_that_moves(tmp_path: Path) -> None:
    first = rundir.new_run(tmp_path, T0)
    rundir.mark_latest(tmp_path, first)
    second = rundir.new_run(tmp_path, T0)
    link = rundir.mark_latest(tmp_path, second)
    assert os.readlink(link) == f"runs/{second.run_id}"
    assert link.resolve() == second.path.resolve()


def test_latest_that_is_a_real_folder_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "latest").mkdir()
    (tmp_path / "latest" / "mine.txt").write_text("keep")
    with pytest.raises(rundir.RunDirError, match="not a symlink"):
        rundir.mark_latest(tmp_path, rundir.new_run(tmp_path, T0))
    assert (tmp_path / "latest" / "mine.txt").read_text() == "keep"


def test_prune_keeps_the_newest_finished_and_every_unfinished_run(tmp_path: Path) -> None:
    finished = [_finish(rundir.new_run(tmp_path, T0)) for _ in range(4)]
    unfinished = rundir.new_run(tmp_path, T0)
    current = rundir.new_run(tmp_path, T0)
    removed = rundir.prune(tmp_path, keep=2, current=current)
    assert removed == [finished[0].path, finished[1].path]
    left = {r.path for r in rundir.list_runs(tmp_path)}
    assert left == {finished[2].path, finished[3].path, unfinished.path, current.path}
    assert rundir.prune(tmp_path, keep=-1, current=current) == []


def test_resume_picks_the_newest_unfinished_run(tmp_path: Path) -> None:
    _finish(rundir.new_run(tmp_path, T0))
    interrupted = rundir.new_run(tmp_path, T0)
    assert rundir.resume_run(tmp_path) == interrupted


def test_resume_refuses_a_finished_run_and_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(rundir.RunDirError, match=r"no runs.*without --resume"):
        rundir.resume_run(tmp_path)
    done = _finish(rundir.new_run(tmp_path, T0))
    with pytest.raises(rundir.RunDirError, match=r"finished.*without --resume"):
        rundir.resume_run(tmp_path)
    assert done.summary.exists()  # nothing lost


def test_choose_run_twice_gives_two_fresh_runs_and_keeps_the_first_report(tmp_path: Path) -> None:
    """What ``make demo`` twice does before any training: the second run never sees the first's storage."""
    first = choose_run(tmp_path, resume=False, keep=5)
    (first.storage / "corridor").mkdir(parents=True)
    (first.storage / "corridor" / "best_checkpoint.txt").write_text("/x\n")
    first.report.write_text("<html>first</html>")
    _finish(first)
    second = choose_run(tmp_path, resume=False, keep=5)
    assert second.path != first.path
    assert not second.storage.exists()
    assert first.report.read_text() == "<html>first</html>"
    assert (tmp_path / "latest").resolve() == second.path.resolve()


def test_unwritable_out_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(rundir.RunDirError, match="--out"):
        rundir.new_run(blocker / "demo", T0)


def test_leftovers_of_the_old_layout_are_named_not_touched(tmp_path: Path) -> None:
    (tmp_path / "storage" / "corridor").mkdir(parents=True)
    (tmp_path / "report.html").write_text("old")
    run = choose_run(tmp_path, resume=False, keep=5)
    assert rundir.legacy_leftovers(tmp_path) == [tmp_path / "storage", tmp_path / "report.html"]
    assert (tmp_path / "report.html").read_text() == "old"
    assert run.path.parent == tmp_path / "runs"
