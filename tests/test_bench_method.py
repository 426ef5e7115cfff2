"""The shared benchmark method: interleaving, spreads, the load gate and pinning (no benchmark runs)."""

from __future__ import annotations

import itertools

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


def _run(loads: list[float], repeats: int = 3) -> method.Run:
    """A Run whose points saw the given 1-min load averages (the real measure() path)."""
    run = method.Run("unit", repeats=repeats, machine={"cores": 2}, git={"commit": "x", "dirty": False})
    run.threshold = method.quiet_threshold(2)
    feed = iter(loads)
    original = method.load_average
    try:
        method.load_average = lambda: [next(feed), 0.0, 0.0]  # type: ignore[assignment]
        for (rep, variant), _ in zip(
            itertools.cycle(method.interleaved(["a", "b"], repeats)), loads, strict=False
        ):
            run.measure(variant, "p", rep, lambda: {"v": 1.0})
    finally:
        method.load_average = original  # type: ignore[assignment]
    return run


def test_quiet_only_when_every_point_started_below_the_threshold() -> None:
    assert method.quiet_threshold(2) == 1.0
    assert _run([0.2, 0.5, 0.9, 0.1, 0.3, 0.4]).quiet
    loaded = _run([0.2, 0.5, 1.0, 0.1, 0.3, 0.4])  # one point at the threshold is enough to fail
    assert not loaded.quiet
    assert loaded.max_load == 1.0
    assert loaded.header()["quiet"] is False


def test_a_run_with_fewer_than_three_repeats_is_never_quiet() -> None:
    assert not _run([0.1, 0.1], repeats=1).quiet


def test_a_run_without_points_is_not_quiet() -> None:
    assert not method.Run("unit", repeats=3, machine={"cores": 2}, git={}).quiet


def test_header_records_machine_git_method_pinning_and_loads() -> None:
    run = _run([0.2] * 6)
    header = run.header()
    assert header["schema"] == method.SCHEMA
    assert header["method"]["repeats"] == 3
    assert header["method"]["quiet_threshold"] == 1.0
    assert header["pinning"] == {
        "enabled": False,
        "load_generator_cpus": None,
        "server_cpus": None,
        "tool": None,
    }
    assert all(p["load_before"][0] == 0.2 for p in run.points)
    summary = run.summary(["v", "missing"])
    assert summary["a"]["p"] == {"v": {"median": 1.0, "min": 1.0, "max": 1.0, "n": 3}}


def test_machine_info_and_git_commit_are_real() -> None:
    info = method.machine_info()
    assert info["cores"] >= 1 and info["mem_gb"] and info["model"]
    assert len(method.git_info()["commit"]) == 40


def test_pinning_splits_load_generator_and_servers() -> None:
    pin = method.plan_pinning(True, n_cores=4)
    assert pin.prefix("load") == ["taskset", "-c", "0"]
    assert pin.prefix("server") == ["taskset", "-c", "1,2,3"]
    assert method.plan_pinning(False).prefix("server") == []
    with pytest.raises(ValueError, match="at least 2 CPUs"):
        method.plan_pinning(True, n_cores=1)


def test_fewer_than_three_repeats_needs_quick() -> None:
    assert method.check_repeats(3) == 3
    assert method.check_repeats(1, allow_fewer=True) == 1
    with pytest.raises(ValueError, match="at least 3"):
        method.check_repeats(2)
