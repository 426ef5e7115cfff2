"""The shared benchmark method: interleaving, spreads, the load gate and pinning (no benchmark runs)."""

from __future__ import annotations

import itertools
import os
import signal

import pytest

from bench import method


def test_interleaved_runs_rounds_over_every_variant() -> None:
    order = method.interleaved(["a", "b", "c"], 3)
    assert [v for _, v in order] == ["a", "b", "c"] * 3
    assert [r for r, _ in order] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_interleaved_refuses_zero_repeats() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        method.interleaved(["a"], 0)


def test_spread_is_median_min_max_of_the_repeats() -> None:
    assert method.spread([3.0, 1.0, 10.0]) == {"median": 3.0, "min": 1.0, "max": 10.0, "n": 3}
    assert method.fmt_spread(method.spread([700, 749.4, 760]), 0) == "749 (700-760)"
    with pytest.raises(ValueError):
        method.spread([])


def _run(busy: list[float], repeats: int = 3, start_load: float = 0.3) -> method.Run:
    """A Run whose points saw the given idle-window CPU use (the real measure() path, no sleeping)."""
    run = method.Run(
        "unit",
        repeats=repeats,
        machine={"cores": 2},
        git={"commit": "x", "dirty": False},
        load_at_start=[start_load, 0.0, 0.0],
    )
    run.threshold = method.quiet_threshold(2)
    feed = iter(busy)
    original = method.cpu_busy
    try:
        method.cpu_busy = lambda seconds=0.0: next(feed)  # type: ignore[assignment]
        for (rep, variant), _ in zip(
            itertools.cycle(method.interleaved(["a", "b"], repeats)), busy, strict=False
        ):
            run.measure(variant, "p", rep, lambda: {"v": 1.0})
    finally:
        method.cpu_busy = original  # type: ignore[assignment]
    return run


def test_quiet_only_when_every_idle_window_was_quiet() -> None:
    assert method.quiet_threshold(2) == 1.0
    assert _run([0.2, 0.3, 0.45, 0.1, 0.3, 0.4]).quiet
    loaded = _run([0.2, 0.3, 0.5, 0.1, 0.3, 0.4])  # one window at the threshold is enough to fail
    assert not loaded.quiet
    assert loaded.max_busy == 0.5
    assert loaded.header()["quiet"] is False


def test_a_run_started_on_a_loaded_machine_is_not_quiet() -> None:
    assert not _run([0.1] * 6, start_load=1.0).quiet
    assert _run([0.1] * 6, start_load=0.99).quiet


def test_a_run_with_fewer_than_three_repeats_is_never_quiet() -> None:
    assert not _run([0.1, 0.1], repeats=1).quiet


def test_a_run_without_points_is_not_quiet() -> None:
    assert not method.Run("unit", repeats=3, machine={"cores": 2}, git={}, load_at_start=[0.0] * 3).quiet


def test_header_records_machine_git_method_pinning_and_loads() -> None:
    run = _run([0.2] * 6)
    header = run.header()
    assert header["schema"] == method.SCHEMA
    assert header["method"]["repeats"] == 3
    assert header["method"]["quiet_threshold"] == 1.0
    assert header["load_at_start"][0] == 0.3 and header["max_cpu_busy_before"] == 0.2
    assert header["pinning"] == {
        "enabled": False,
        "load_generator_cpus": None,
        "server_cpus": None,
        "tool": None,
    }
    assert all(p["cpu_busy_before"] == 0.2 and len(p["load_before"]) == 3 for p in run.points)
    summary = run.summary(["v", "missing"])
    assert summary["a"]["p"] == {"v": {"median": 1.0, "min": 1.0, "max": 1.0, "n": 3}}


def test_cpu_busy_counts_other_work_but_not_the_benchmarks_own_processes() -> None:
    """A spinning process outside this process tree is about one busy core; one of our own children
    spinning is not other work (real /proc, real processes)."""
    import subprocess
    import sys

    spin = [sys.executable, "-c", "while True: pass"]
    own = subprocess.Popen(spin)
    try:
        mine = method.cpu_busy(1.0)
    finally:
        own.kill()
        own.wait()
    # setsid + a double fork: the spinner is re-parented away from this process tree.
    outsider = subprocess.run(
        ["setsid", "sh", "-c", f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    pid = int(outsider.stdout.strip())
    try:
        other = method.cpu_busy(1.0)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert other >= 0.6, (mine, other)
    assert mine < other - 0.4, (mine, other)
