"""The progressive benchmark's report rows, its README gate, and its wrk episode script (no Ray here).

The synthetic results go through the benchmark's own summarising code (``bench.method.Run.measure``,
``progressive_bench.serving_targets`` / ``stage_summary`` / ``to_markdown``); the wrk script runs against a
local recording HTTP server so the episode ids it sends are checked for real.
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bench import method, progressive_bench, report
from workloads.serving.routing import validate_episode_id

WRK = (("champion_only", 1000.0, 20.0), ("canary_50", 950.0, 22.0), ("shadow", 700.0, 30.0))


def _stages(scale: float) -> list[dict[str, Any]]:
    return [
        {"stage": name, "weight": w, "seconds": s * scale, "outcome": "passed", "episodes": {}}
        for name, w, s in (("Shadow", 0.0, 4.0), ("Canary(0)", 0.25, 8.0), ("Canary(1)", 0.5, 8.0))
    ] + [{"stage": "Full", "weight": 1.0, "seconds": 9.0 * scale, "outcome": "promoted", "episodes": {}}]


def results(monkeypatch: pytest.MonkeyPatch, *, repeats: int, load: float, quick: bool = False) -> dict:
    """A results dict shaped as ``progressive_bench.main`` writes it, measured through ``Run.measure``."""
    monkeypatch.setattr(method, "load_average", lambda: [load, load, load])
    monkeypatch.setattr(method, "cpu_busy", lambda seconds=0.0: load / 2)
    run = method.Run(
        "progressive",
        repeats=repeats,
        machine={"cores": 2, "model": "test CPU", "mem_gb": 4.0},
        git={"commit": "f" * 40, "dirty": False},
        load_at_start=[load, load, load],
    )
    run.threshold = method.quiet_threshold(2)
    for rep, variant in method.interleaved([v for v, _, _ in WRK], repeats):
        rps, p99 = next((r, p) for v, r, p in WRK if v == variant)
        for point, scale in (("c16", 1.0), ("c1", 0.4)):
            values = {
                "rps": rps * scale + rep,
                "p50_ms": 10.0,
                "p99_ms": p99 + rep,
                "errors": 0,
                "threads": 2,
            }
            run.measure(variant, point, rep, lambda v=values: v)
    rows = []
    for rep in range(repeats):
        row = {"pointer_to_100_s": 30.0 + rep, "outcome": "promoted", "stages": _stages(1 + rep / 10)}
        rows.append(run.measure("progressive", "pointer_to_100", rep, lambda r=row: r))
    summary = run.summary([*progressive_bench.METRICS, "pointer_to_100_s"])
    return {
        **run.header(),
        "duration_s": 3.0 if quick else 8.0,
        "quick": quick,
        "summary": summary,
        "targets": progressive_bench.serving_targets(summary),
        "serving": {
            "labels": {v: label for v, (label, _) in progressive_bench.VARIANTS.items()},
            "replica_rss_mib": {"champion_only": 400.0, "canary_50": 430.0, "shadow": 431.0},
            "split_checks": [{"decision_log": {"challenger_share": 0.49}}],
            "split_direct": {"requests": 200, "challenger_share": 0.5, "expected_share": 0.5},
        },
        "rollout": {
            "strategy": progressive_bench.STRATEGY,
            "poll_interval_s": 2.0,
            "load_workers": 4,
            "requests_ok": 5000,
            "requests_failed": 0,
            "rollouts": rows,
        },
        "stage_summary": progressive_bench.stage_summary(rows),
        "points": run.points,
    }


def test_progressive_rows_compare_each_slot_mode_with_champion_only(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = report.progressive_rows(results(monkeypatch, repeats=3, load=0.2))
    by_measure = {r["measure"]: r for r in rows}
    canary = by_measure["req/s at 16 connections, challenger in canary mode at 50%"]
    assert canary["value"] == "951 (950-952)" and canary["baseline"] == "1001 (1000-1002) (champion only)"
    assert canary["ratio"] == "0.95x" and canary["target"] == "≥ 0.9x" and canary["met"] is True
    shadow = by_measure["req/s at 16 connections, challenger in shadow mode"]
    assert shadow["ratio"] == "0.70x" and shadow["target"] == "" and shadow["met"] is None
    assert by_measure["p99 at 16 connections, challenger in shadow mode"]["value"] == "31.0 ms (30.0-32.0 ms)"
    timed = next(r for r in rows if r["measure"].startswith("pointer → new champion at 100%"))
    assert timed["value"] == "31.0 s (30.0-32.0 s)"
    for text in (
        "25% hold 5 s min 10 ep.",
        "50% hold 5 s min 10 ep.",
        "100% hold 5 s min 10 ep.",
        "poll 2.0",
    ):
        assert text in timed["measure"]
    failed = by_measure["failed requests during the progressive rollouts"]
    assert (failed["value"], failed["target"], failed["met"]) == ("0", "0", True)
    assert {r["area"] for r in rows} == {"progressive"} and len(rows) == 6


def test_a_slow_canary_misses_its_target(monkeypatch: pytest.MonkeyPatch) -> None:
    data = results(monkeypatch, repeats=3, load=0.2)
    data["summary"]["canary_50"]["c16"]["rps"]["median"] = 800.0
    canary = report.progressive_rows(data)[0]
    assert canary["ratio"] == "0.80x" and canary["met"] is False


def test_failed_requests_during_rollouts_miss_the_zero_target(monkeypatch: pytest.MonkeyPatch) -> None:
    data = results(monkeypatch, repeats=3, load=0.2)
    data["rollout"]["requests_failed"] = 3
    failed = report.progressive_rows(data)[-1]
    assert failed["value"] == "3" and failed["met"] is False


def test_results_without_the_champion_baseline_give_no_rows() -> None:
    assert report.progressive_rows({"summary": {}}) == []


def _progressive_problems(data: dict | None) -> list[str]:
    found = report.problems({"progressive": data} if data is not None else {})
    return [p for p in found if "progressive.json" in p]


def test_quick_and_loaded_runs_are_refused_for_the_readme(monkeypatch: pytest.MonkeyPatch) -> None:
    quick = results(monkeypatch, repeats=1, load=0.1, quick=True)
    assert quick["quiet"] is False
    loaded = results(monkeypatch, repeats=3, load=3.0)
    assert loaded["quiet"] is False
    for data in (quick, loaded):
        (problem,) = _progressive_problems(data)
        assert "loaded machine" in problem and "python -m bench.progressive_bench" in problem
        data_rows, table = report.render({"progressive": data})
        assert data_rows["rows"] and all(row["loaded"] for row in data_rows["rows"])
        assert "**loaded**" in table
    assert _progressive_problems(results(monkeypatch, repeats=3, load=0.2)) == []
    assert _progressive_problems(None) == []  # not run yet: left out of the table, not refused


def test_build_refuses_the_readme_for_a_quick_progressive_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the other sections' committed (or missing) results, a quick run never reaches the README."""
    res = tmp_path / "results"
    shutil.copytree(report.RESULTS, res)
    (res / "progressive.json").write_text(json.dumps(results(monkeypatch, repeats=1, load=0.1, quick=True)))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n")
    with pytest.raises(report.ReportRefused, match=r"progressive\.json was measured on a loaded machine"):
        report.build(res, readme)
    table, issues = report.build(res, readme, allow_loaded=True)
    assert any("progressive.json" in i for i in issues) and "old" in readme.read_text()
    assert "progressive" in table


def test_markdown_names_every_variant_the_split_and_the_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    text = progressive_bench.to_markdown(results(monkeypatch, repeats=3, load=0.2))
    for label, _ in progressive_bench.VARIANTS.values():
        assert label in text
    assert "0.95x" in text and "met" in text and "50.0% of 200 direct requests" in text
    assert "25% hold 5 s, min 10 episodes per slot" in text and "**0 failed**" in text


# ---------------------------------------------------------------------------------------------- routing
def test_the_routing_hash_splits_the_benchmarks_episode_ids_about_evenly() -> None:
    ids = progressive_bench.episode_ids("bench.r0.c16.canary_50", threads=2, requests=8000)
    assert len(set(ids)) == 800  # 10 steps per episode
    assert 0.45 <= progressive_bench.expected_share(ids, 0.5) <= 0.55
    assert progressive_bench.expected_share(ids, 0.0) == 0.0
    assert progressive_bench.expected_share(ids, 1.0) == 1.0


@pytest.mark.parametrize("prefix", ["", "bad prefix", 'x"y', "a/b"])
def test_a_prefix_that_would_make_invalid_episode_ids_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="episode id prefix"):
        progressive_bench.wrk_script(prefix)


class _Recorder(BaseHTTPRequestHandler):
    bodies: list[bytes] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            self.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_wrk_sends_valid_distinct_episodes_of_ten_steps_per_thread() -> None:
    _Recorder.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        out = progressive_bench.run_wrk_episodes(url, 4, 1.0, "bench.test", [])
    finally:
        server.shutdown()
        server.server_close()
    assert out["requests"] > 20 and out["threads"] == 2
    bodies = [json.loads(b) for b in _Recorder.bodies]
    episodes: dict[str, list[int]] = {}
    for body in bodies:
        assert body["state"] == [1]
        validate_episode_id(body["episode_id"])
        assert body["episode_id"].startswith("bench.test.t")
        episodes.setdefault(body["episode_id"], []).append(body["step"])
    assert {eid.split(".")[2] for eid in episodes} == {"t1", "t2"}  # each wrk thread has its own ids
    for steps in episodes.values():  # consecutive steps (wrk builds one request it never sends at start)
        assert sorted(steps) == list(range(min(steps), min(steps) + len(steps)))
        assert len(steps) <= progressive_bench.STEPS_PER_EPISODE
    assert sum(len(s) == progressive_bench.STEPS_PER_EPISODE for s in episodes.values()) >= 2


def test_stage_seconds_reads_the_engines_own_status_format() -> None:
    """The stage timings come from ``status.progressive.stages`` exactly as the engine serialises them."""
    from rlops_operator.progressive import StageSummary

    stages = [
        StageSummary(name="shadow", stage="Shadow", weight=0.0, started_at=100.0, ended_at=112.5),
        StageSummary(name="canary", stage="Canary(0)", weight=0.25, started_at=112.5, ended_at=130.0),
        StageSummary(name="canary", stage="Canary(1)", weight=0.5, started_at=130.0),  # still running
    ]
    status = {"stages": [s.model_dump(mode="json", by_alias=True) for s in stages]}
    got = progressive_bench.stage_seconds(status)
    assert [(s["stage"], s["weight"], s["seconds"]) for s in got] == [
        ("Shadow", 0.0, 12.5),
        ("Canary(0)", 0.25, 17.5),
        ("Canary(1)", 0.5, None),
    ]
    assert progressive_bench.stage_summary([{"stages": got}])["Canary(0)"]["median"] == 17.5


def test_fewer_than_three_rollouts_need_quick(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        progressive_bench.main(["--rollouts", "2"])  # refused before any cluster starts
    assert exc.value.code == 2
    assert "--repeats/--rollouts 2: the method needs at least 3" in capsys.readouterr().err
