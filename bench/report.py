"""One benchmark report: training, serving and rollout figures with their same-run baselines.

``python -m bench.report`` (``make bench``) runs the three benchmarks one after another (each in its
own process, so their Ray clusters never overlap), then writes ``bench/results/report.json``,
``bench/results/report.md`` and the table between the ``bench:`` markers in the README.
``--from-results`` only rebuilds the report from the JSON files already in ``bench/results``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BENCHES = ("train_bench", "serve_bench", "rollout_bench")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _row(
    area: str, measure: str, value: str, baseline: str, ratio: str, target: str, met: bool | None
) -> dict:
    return {
        "area": area,
        "measure": measure,
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "target": target,
        "met": met,
    }


def training_rows(train: dict[str, Any]) -> list[dict]:
    """Time to solve through train_job vs the plain RLlib loop, per case."""
    rows = []
    for name, case in train.get("cases", {}).items():
        tj, plain = case["train_job"], case["plain_loop"]
        solved = tj["all_solved"] and plain["all_solved"]
        rows.append(
            _row(
                "training",
                f"{name}: time to mean return ≥ {case['target_return']}",
                f"{tj['median_wall_s']} s (train_job)",
                f"{plain['median_wall_s']} s (plain RLlib loop)",
                f"{case['ratio_train_job_to_plain']:.2f}x",
                f"≤ {case['ratio_target']}x",
                bool(case["ratio_met"] and solved),
            )
        )
        if "cartpole_solve_target_s" in case:
            rows.append(
                _row(
                    "training",
                    "CartPole-v1 solved through train_job",
                    f"{tj['median_wall_s']} s",
                    "",
                    "",
                    f"< {case['cartpole_solve_target_s']} s",
                    bool(case["cartpole_solve_target_met"]),
                )
            )
    return rows


def serving_rows(serve: dict[str, Any]) -> list[dict]:
    """Throughput and latency of this app and the other serving patterns against bare FastAPI."""
    servers = serve.get("servers", {})
    bare = servers.get("bare_fastapi")
    ours = servers.get("rlops_fast_ingress")
    if not bare or not ours:
        return []
    bare16 = bare["c16"]["rps"]
    rows = [
        _row(
            "serving",
            "req/s at 16 connections (this app, direct ingress + HAProxy)",
            f"{ours['c16']['rps']}",
            f"{bare16} (bare uvicorn + FastAPI)",
            f"{ours['c16']['rps'] / bare16:.2f}x",
            "≥ 1.5x",
            ours["c16"]["rps"] >= 1.5 * bare16,
        ),
        _row(
            "serving",
            "p99 at 16 connections",
            f"{ours['c16']['p99_ms']} ms",
            f"{bare['c16']['p99_ms']} ms",
            "",
            "≤ 30 ms",
            ours["c16"]["p99_ms"] <= 30.0,
        ),
        _row(
            "serving",
            "p50 at 1 connection",
            f"{ours['c1']['p50_ms']} ms",
            f"{bare['c1']['p50_ms']} ms",
            "",
            "≤ 6 ms",
            ours["c1"]["p50_ms"] <= 6.0,
        ),
    ]
    for key, label in (
        ("rlops_default_proxy", "this app, default proxy"),
        ("rllib_example_fast_ingress", "RLlib's Serve example pattern"),
        ("tutorial_fast_ingress", "tutorial pattern (Algorithm per replica)"),
    ):
        other = servers.get(key)
        if other:
            rows.append(
                _row(
                    "serving",
                    f"req/s at 16 connections: {label}",
                    f"{other['c16']['rps']}",
                    f"{bare16}",
                    f"{other['c16']['rps'] / bare16:.2f}x",
                    "",
                    None,
                )
            )
    swaps = ours.get("swaps") or []
    if swaps:
        rows.append(
            _row(
                "serving",
                "replica cold start / hot-swap",
                f"{ours['cold_start_s']} s / " + ", ".join(f"{s['seconds']} s" for s in swaps),
                "",
                "",
                "",
                None,
            )
        )
    return rows


def rollout_rows(rollout: dict[str, Any]) -> list[dict]:
    """Pointer write to the endpoint answering from the new checkpoint, under load."""
    if not rollout:
        return []
    return [
        _row(
            "rollout",
            f"pointer → live, median of {rollout['promotions']} (poll {rollout['poll_interval_s']} s)",
            f"{rollout['median_s']} s",
            f"{rollout['baseline_median_s']} s (direct PUT, no poll)",
            f"{rollout['ratio_median_vs_baseline']:.2f}x",
            f"≤ {rollout['target_median_s']} s",
            bool(rollout["meets_target"]),
        ),
        _row(
            "rollout",
            "failed requests during the swaps",
            str(rollout["requests_failed"]),
            f"{rollout['requests_ok']} answered",
            "",
            "0",
            rollout["requests_failed"] == 0,
        ),
    ]


def to_markdown(rows: list[dict], sources: dict[str, str]) -> str:
    """The README table; each row's baseline was measured in the same benchmark run."""
    mark = {True: "yes", False: "**no**", None: ""}
    lines = [
        "| area | measure | value | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['area']} | {r['measure']} | {r['value']} | {r['baseline']} | {r['ratio']} | {r['target']} "
        f"| {mark[r['met']]} |"
        for r in rows
    ]
    lines.append("")
    lines.append(
        "Runs: "
        + "; ".join(f"{name} at {when}" for name, when in sources.items())
        + ". Details: `bench/results/{train,serve,rollout}.md`. Regenerate with `make bench`."
    )
    return "\n".join(lines) + "\n"


def _load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def render() -> tuple[dict[str, Any], str]:
    """The report (rows and sources) and its Markdown table, from the result files in bench/results."""
    train, serve, rollout = _load("train"), _load("serve"), _load("rollout")
    rows = training_rows(train) + serving_rows(serve) + rollout_rows(rollout)
    sources = {
        name: data.get("started_at") or data.get("when", "?")
        for name, data in (("training", train), ("serving", serve), ("rollout", rollout))
        if data
    }
    return {"rows": rows, "sources": sources}, to_markdown(rows, sources)


def readme_table(text: str) -> str | None:
    """The table between the README's bench markers, or None when the markers are missing."""
    match = re.search(f"{re.escape(BEGIN)}\n(.*?){re.escape(END)}", text, flags=re.S)
    return match.group(1) if match else None


def build() -> str:
    """Write report.json, report.md and the README table; return the table."""
    report, table = render()
    (RESULTS / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "report.md").write_text("# Benchmark report\n\n" + table)
    readme = ROOT / "README.md"
    text = readme.read_text()
    if readme_table(text) is not None:
        new = re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}", f"{BEGIN}\n{table}{END}", text, flags=re.S)
        readme.write_text(new)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--from-results", action="store_true", help="do not run the benchmarks")
    parser.add_argument("--only", choices=BENCHES, action="append", help="run only these benchmarks")
    args = parser.parse_args(argv)
    if not args.from_results:
        for bench in args.only or BENCHES:
            print(f"== running bench.{bench}", flush=True)
            subprocess.run([sys.executable, "-m", f"bench.{bench}"], cwd=ROOT, check=True)
    print(build())


if __name__ == "__main__":
    main(sys.argv[1:])
