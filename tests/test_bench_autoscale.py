"""The autoscale benchmark's results follow the shared method and reach the report like the others.

No Ray here: the points go through the benchmark's own recording and summarising code
(``bench.method.Run.measure`` → ``autoscale_bench.assemble``), with the machine's load replaced by
fixed values (``method.load_average`` and ``method.cpu_busy`` patched), then through
``bench.report.autoscale_rows`` and the report's quiet/loaded rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import autoscale_bench, method, report
from tests.test_bench_report import QUIET, README_TEXT, _write

AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 4,
    "target_ongoing_requests": 4,
    "upscale_delay_s": 3,
    "downscale_delay_s": 60,
}
LEVELS = [1, 4]
STEP_CLIENTS = 12


def _step(repeat: int, failed: int = 0) -> dict[str, Any]:
    """One repeat of the load step; the repeats differ, so medians and min-max can be told apart."""
    return {
        "seconds_to_scale_up_decision": 4.0 + repeat,
        "seconds_to_first_new_replica": 10.0 + 2 * repeat,
        "seconds_to_target_replicas": 20.0 + 3 * repeat,
        "ramp_p50_ms": 50.0 + repeat,
        "ramp_p99_ms": 400.0 + 100 * repeat,
        "ramp_rps": 120.0,
        "seconds_back_to_min": 61.0 + repeat,
        "requests": 5000 + 10 * repeat,
        "failed": failed,
        "errors": ["HTTP 500: boom"] if failed else [],
    }


def autoscale_results(
    monkeypatch: pytest.MonkeyPatch,
    *,
    repeats: int = 3,
    load: float = 0.2,
    busy: float = 0.1,
    failed_in_repeat: dict[int, int] | None = None,
) -> dict[str, Any]:
    """A results file as ``autoscale_bench.run`` writes it, measured on a machine this loaded."""
    monkeypatch.setattr(method, "load_average", lambda: [load, load, load])
    monkeypatch.setattr(method, "cpu_busy", lambda seconds=0.0: busy)
    run = method.Run(
        "autoscale",
        repeats=repeats,
        machine={"cores": 2, "model": "test CPU", "mem_gb": 4.0},
        git={"commit": "0123456789abcdef" * 2 + "01234567", "dirty": False},
        load_at_start=[load, load, load],  # the field's default reads the real machine
    )
    run.threshold = method.quiet_threshold(2)
    failed_in_repeat = failed_in_repeat or {}
    for rep in range(repeats):  # the benchmark's order: capacity, cold start, step, per repeat
        for clients in LEVELS:
            values = {"rps": 40.0 * clients + rep, "p50_ms": 20.0, "p99_ms": 50.0 + rep, "failed": 0}
            run.measure("capacity", f"{clients} clients", rep, lambda v=values: v)
        cold = {"seconds_to_running": 9.0 + rep, "checkpoint_load_seconds": 1.5 + 0.25 * rep}
        run.measure("cold start", "1 -> 2 replicas", rep, lambda v=cold: v)
        step = _step(rep, failed_in_repeat.get(rep, 0))
        run.measure("step", f"1 -> {STEP_CLIENTS} clients", rep, lambda v=step: v)
    return autoscale_bench.assemble(run, LEVELS, 5.0, STEP_CLIENTS, 3, AUTOSCALING)


def rows_by_measure(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["measure"]: row for row in report.autoscale_rows(results)}


# ------------------------------------------------------------------------------------------ the rows
def test_rows_report_medians_with_the_spread_of_the_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    results = autoscale_results(monkeypatch)
    assert results["quiet"] is True and results["method"]["repeats"] == 3
    rows = rows_by_measure(results)
    first = rows["load step 1 → 12 clients: first new replica RUNNING"]
    assert first["value"] == "12.0 s (10.0-14.0 s)"  # median and min-max of 10, 12, 14
    assert first["baseline"] == "5.0 s (4.0-6.0 s) (scale-up decision)"
    assert first["ratio"] == "2.40x"  # 12 / 5: the ratio of the medians
    assert rows["load step 1 → 12 clients: 3 replicas RUNNING"]["value"] == "23.0 s (20.0-26.0 s)"
    assert (
        rows["p99 from the load step until 5 s after the target count"]["value"]
        == "500.0 ms (400.0-600.0 ms)"
    )
    cold = rows["replica cold start: config change → new replica RUNNING"]
    assert cold["value"] == "10.0 s (9.0-11.0 s)" and cold["baseline"].startswith("1.75 s (1.5-2.0 s)")
    failed = rows["failed requests while scaling up and back down"]
    assert failed["value"] == "0" and failed["target"] == "0" and failed["met"] is True
    assert {row["area"] for row in rows.values()} == {"autoscale"}


def test_one_failed_request_in_any_repeat_misses_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worst repeat counts, not the median: two clean repeats do not hide a failed request."""
    results = autoscale_results(monkeypatch, failed_in_repeat={1: 2})
    assert results["summary"]["step"]["1 -> 12 clients"]["failed"]["median"] == 0
    failed = rows_by_measure(results)["failed requests while scaling up and back down"]
    assert failed["value"] == "2" and failed["met"] is False


def test_results_without_a_step_give_no_rows() -> None:
    assert report.autoscale_rows({"summary": {}, "step_clients": 12}) == []
    assert report.autoscale_rows({}) == []


def test_the_markdown_report_says_quiet_or_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    quiet = autoscale_bench.to_markdown(autoscale_results(monkeypatch))
    assert "quiet)" in quiet.splitlines()[0] and "LOADED" not in quiet
    loaded = autoscale_bench.to_markdown(autoscale_results(monkeypatch, busy=0.9))
    assert "LOADED" in loaded.splitlines()[0] and "LOADED: not for the README" in loaded
    assert "| 4 | 161.0 (160.0-162.0) |" in loaded  # capacity at 4 clients: median (min-max)


# ------------------------------------------------------------------------------------------ the method
def test_fewer_than_three_repeats_need_quick_and_never_count_as_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="at least 3"):
        autoscale_bench.main(["--repeats", "1"])  # refused before any cluster starts
    quick = autoscale_results(monkeypatch, repeats=1, load=0.0, busy=0.0)
    assert quick["quiet"] is False and report.status(quick) == "loaded"


@pytest.mark.parametrize(
    ("load", "busy"),
    [(1.0, 0.1), (0.2, 0.5)],
    ids=["load-average-at-start", "cpu-busy-before-a-point"],
)
def test_a_loaded_run_is_refused_for_the_readme_and_marked_in_report_md(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, load: float, busy: float
) -> None:
    results_dir, readme = tmp_path / "results", tmp_path / "README.md"
    results_dir.mkdir()
    readme.write_text(README_TEXT)
    _write(results_dir, QUIET)
    (results_dir / "autoscale.json").write_text(
        json.dumps(autoscale_results(monkeypatch, load=load, busy=busy))
    )
    with pytest.raises(
        report.ReportRefused, match=r"autoscale\.json was measured on a loaded machine"
    ) as info:
        report.build(results_dir, readme)
    assert "python -m bench.autoscale_bench" in str(info.value)
    assert readme.read_text() == README_TEXT
    table, issues = report.build(results_dir, readme, allow_loaded=True)
    autoscale_lines = [line for line in table.splitlines() if line.startswith("| autoscale")]
    assert len(autoscale_lines) == 5 and all("**loaded**" in line for line in autoscale_lines)
    assert not any("**loaded**" in line for line in table.splitlines() if line.startswith("| rollout"))
    assert issues and readme.read_text() == README_TEXT


def test_a_quiet_run_reaches_the_readme_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    results_dir, readme = tmp_path / "results", tmp_path / "README.md"
    results_dir.mkdir()
    readme.write_text(README_TEXT)
    _write(results_dir, QUIET)
    (results_dir / "autoscale.json").write_text(json.dumps(autoscale_results(monkeypatch)))
    table, issues = report.build(results_dir, readme)
    assert issues == []
    in_readme = report.readme_table(readme.read_text())
    assert in_readme == table
    assert "| autoscale | load step 1 → 12 clients: first new replica RUNNING | 12.0 s (10.0-14.0 s)" in table
    assert "autoscale at " in table  # the Runs line names the run, its repeats and status


def test_the_section_is_registered_and_optional_until_its_first_run(tmp_path: Path) -> None:
    section = next(s for s in report.SECTIONS if s.name == "autoscale")
    assert section.module == "bench.autoscale_bench" and section.rows is report.autoscale_rows
    assert section.required is False
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    _write(results_dir, QUIET)
    assert not any("autoscale" in p for p in report.problems(report.load_results(results_dir)))
