"""One benchmark report: training, serving and rollout figures with their same-run baselines.

``python -m bench.report`` (``make bench``) runs the benchmarks one after another (each in its own
process, so their Ray clusters never overlap), then writes ``bench/results/report.json``,
``bench/results/report.md`` and the table between the ``bench:`` markers in the README.
``--from-results`` only rebuilds the report from the JSON files already in ``bench/results``.

The README table only takes **quiet** runs (see ``bench/method.py``): a results file whose run was
loaded, or that predates the method (no repeats, no load record), makes this command exit non-zero
and name the file. ``--allow-loaded`` writes ``report.md`` anyway, with every loaded row marked, and
still leaves the README alone.

Another benchmark joins the report with one :class:`Section` in ``SECTIONS`` (its results file name,
its module and a function from its results to rows); nothing else here changes.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.method import SCHEMA, fmt_spread

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
RERUN = "make bench"


class ReportRefused(RuntimeError):
    """A results file cannot go in the README (loaded, old format, missing); the message says which."""


def _row(
    area: str,
    measure: str,
    value: str,
    baseline: str,
    ratio: str,
    target: str,
    met: bool | None,
) -> dict[str, Any]:
    return {
        "area": area,
        "measure": measure,
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "target": target,
        "met": met,
    }


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    return a["median"] / b["median"] if b["median"] else float("nan")


# ---------------------------------------------------------------------------------------------- training
def training_rows(train: dict[str, Any]) -> list[dict[str, Any]]:
    """Time to solve through train_job vs the plain RLlib loop (medians of interleaved repeats)."""
    rows = []
    for name, case in train.get("cases", {}).items():
        tj, plain = case["train_job"], case["plain_loop"]
        rows.append(
            _row(
                "training",
                f"{name}: time to mean return ≥ {case['target_return']}",
                f"{fmt_spread(tj['wall_s'], 1, ' s')} (train_job)",
                f"{fmt_spread(plain['wall_s'], 1, ' s')} (plain RLlib loop)",
                f"{case['ratio']:.2f}x",
                f"≤ {case['ratio_target']}x",
                bool(case["ratio_met"] and case["all_solved"]),
            )
        )
        if "solve_target_s" in case:
            rows.append(
                _row(
                    "training",
                    f"{name} solved through train_job",
                    fmt_spread(tj["wall_s"], 1, " s"),
                    "",
                    "",
                    f"< {case['solve_target_s']} s",
                    bool(case["solve_target_met"]),
                )
            )
    return rows


# ---------------------------------------------------------------------------------------------- serving
SERVING_OTHERS = (
    ("rlops_default_proxy", "this app, default Serve proxy"),
    ("rllib_example", "RLlib's Serve example pattern"),
    ("empty_serve", "empty Serve handler (Serve's floor)"),
    ("empty_fastapi", "empty FastAPI ingress in Serve"),
)


def serving_rows(serve: dict[str, Any]) -> list[dict[str, Any]]:
    """This app against bare uvicorn + FastAPI (RLlib's inference pattern) and the other servers."""
    summary = serve.get("summary", {})
    bare, ours = summary.get("bare_fastapi"), summary.get("rlops_fast_ingress")
    if not bare or not ours:
        return []
    targets = serve.get("targets", {})
    example = summary.get("rllib_example")
    rows = [
        _row(
            "serving",
            "req/s at 16 connections (this app, direct ingress + HAProxy)",
            fmt_spread(ours["c16"]["rps"], 0),
            f"{fmt_spread(bare['c16']['rps'], 0)} (bare uvicorn + FastAPI)",
            f"{_ratio(ours['c16']['rps'], bare['c16']['rps']):.2f}x",
            "≥ 0.8x bare",
            targets.get("c16_vs_bare"),
        ),
    ]
    if example:
        rows.append(
            _row(
                "serving",
                "req/s at 16 connections vs RLlib's Serve example pattern",
                fmt_spread(ours["c16"]["rps"], 0),
                f"{fmt_spread(example['c16']['rps'], 0)} (RLlib example)",
                f"{_ratio(ours['c16']['rps'], example['c16']['rps']):.2f}x",
                "≥ 1.2x",
                targets.get("c16_vs_rllib_example"),
            )
        )
    rows += [
        _row(
            "serving",
            "p99 at 16 connections",
            fmt_spread(ours["c16"]["p99_ms"], 1, " ms"),
            fmt_spread(bare["c16"]["p99_ms"], 1, " ms"),
            "",
            "≤ 30 ms",
            targets.get("c16_p99"),
        ),
        _row(
            "serving",
            "p50 at 1 connection",
            fmt_spread(ours["c1"]["p50_ms"], 2, " ms"),
            fmt_spread(bare["c1"]["p50_ms"], 2, " ms"),
            "",
            "≤ 1.5 ms",
            targets.get("c1_p50"),
        ),
    ]
    for key, label in SERVING_OTHERS:
        other = summary.get(key)
        if other:
            rows.append(
                _row(
                    "serving",
                    f"req/s at 16 connections: {label}",
                    fmt_spread(other["c16"]["rps"], 0),
                    fmt_spread(bare["c16"]["rps"], 0),
                    f"{_ratio(other['c16']['rps'], bare['c16']['rps']):.2f}x",
                    "",
                    None,
                )
            )
    swaps = serve.get("swaps", {}).get("seconds")
    if swaps:
        rows.append(
            _row(
                "serving",
                "hot-swap until /metadata names the new checkpoint",
                fmt_spread(swaps, 2, " s"),
                "",
                "",
                "",
                None,
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------- rollout
def rollout_rows(rollout: dict[str, Any]) -> list[dict[str, Any]]:
    """Pointer write to the endpoint answering from the new checkpoint, under load."""
    summary = rollout.get("summary")
    if not summary:
        return []
    engine, direct = summary["engine"]["latency_s"], summary["direct_put"]["latency_s"]
    return [
        _row(
            "rollout",
            f"pointer → live, {engine['n']} promotions (poll {rollout['poll_interval_s']} s)",
            fmt_spread(engine, 2, " s"),
            f"{fmt_spread(direct, 2, ' s')} (direct PUT, no poll)",
            f"{_ratio(engine, direct):.2f}x",
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


# ---------------------------------------------------------------------------------------------- autoscale
def autoscale_rows(autoscale: dict[str, Any]) -> list[dict[str, Any]]:
    """Serve autoscaling (bench/autoscale_bench.py): how fast replicas follow a step in load, the p99
    meanwhile, and failed requests while scaling up and down. Baseline: the autoscaler's own decision
    time in the same run (what is left is the replica's cold start)."""
    summary = (autoscale.get("summary") or {}).get("step") or {}
    step = summary.get(f"1 -> {autoscale.get('step_clients')} clients")
    if not step:
        return []
    clients, target = autoscale["step_clients"], autoscale["target_replicas"]
    delays = autoscale["autoscaling_config"]
    first, decision = step["seconds_to_first_new_replica"], step["seconds_to_scale_up_decision"]
    failed = int(step["failed"]["max"])  # the worst repeat: "0" only when every repeat lost nothing
    rows = [
        _row(
            "autoscale",
            f"load step 1 → {clients} clients: first new replica RUNNING",
            fmt_spread(first, 1, " s"),
            f"{fmt_spread(decision, 1, ' s')} (scale-up decision)",
            f"{_ratio(first, decision):.2f}x",
            "",
            None,
        ),
        _row(
            "autoscale",
            f"load step 1 → {clients} clients: {target} replicas RUNNING",
            fmt_spread(step["seconds_to_target_replicas"], 1, " s"),
            f"upscale_delay_s {delays.get('upscale_delay_s')}",
            "",
            "",
            None,
        ),
        _row(
            "autoscale",
            "p99 from the load step until 5 s after the target count",
            fmt_spread(step["ramp_p99_ms"], 1, " ms"),
            f"{fmt_spread(step['ramp_p50_ms'], 1, ' ms')} (p50)",
            "",
            "",
            None,
        ),
        _row(
            "autoscale",
            "failed requests while scaling up and back down",
            str(failed),
            f"{fmt_spread(step['requests'], 0)} requests per repeat",
            "",
            "0",
            failed == 0,
        ),
    ]
    cold = (autoscale["summary"].get("cold start") or {}).get("1 -> 2 replicas") or {}
    if "seconds_to_running" in cold and "checkpoint_load_seconds" in cold:
        rows.append(
            _row(
                "autoscale",
                "replica cold start: config change → new replica RUNNING",
                fmt_spread(cold["seconds_to_running"], 1, " s"),
                f"{fmt_spread(cold['checkpoint_load_seconds'], 2, ' s')} (checkpoint fetch + verify + load)",
                "",
                "",
                None,
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------- progressive
def progressive_rows(progressive: dict[str, Any]) -> list[dict[str, Any]]:
    """A challenger slot's serving cost against champion only (same run, one replica), and the time from a
    pointer write to the new champion at 100% through the strategy's steps (bench/progressive_bench.py)."""
    summary = progressive.get("summary") or {}
    base = (summary.get("champion_only") or {}).get("c16")
    if not base:
        return []
    target = (progressive.get("targets") or {}).get("canary_ratio_target", 0.9)
    rows = []
    for variant, label, goal in (
        ("canary_50", "challenger in canary mode at 50%", f"≥ {target}x"),
        ("shadow", "challenger in shadow mode", ""),
    ):
        point = (summary.get(variant) or {}).get("c16")
        if not point:
            continue
        ratio = _ratio(point["rps"], base["rps"])
        rows.append(
            _row(
                "progressive",
                f"req/s at 16 connections, {label}",
                fmt_spread(point["rps"], 0),
                f"{fmt_spread(base['rps'], 0)} (champion only)",
                f"{ratio:.2f}x",
                goal,
                ratio >= target if goal else None,
            )
        )
        rows.append(
            _row(
                "progressive",
                f"p99 at 16 connections, {label}",
                fmt_spread(point["p99_ms"], 1, " ms"),
                f"{fmt_spread(base['p99_ms'], 1, ' ms')} (champion only)",
                "",
                "",
                None,
            )
        )
    rollout = progressive.get("rollout") or {}
    timed = (summary.get("progressive") or {}).get("pointer_to_100", {}).get("pointer_to_100_s")
    steps = ((rollout.get("strategy") or {}).get("steps")) or []
    if timed:
        plan = ", ".join(
            f"{step['weight']:.0%} hold {step['holdSeconds']} s min {step['minEpisodes']} ep."
            for step in steps
        )
        rows.append(
            _row(
                "progressive",
                f"pointer → new champion at 100% ({plan}; poll {rollout.get('poll_interval_s')} s)",
                fmt_spread(timed, 1, " s"),
                "",
                "",
                "",
                None,
            )
        )
        failed = int(rollout.get("requests_failed", 0))
        rows.append(
            _row(
                "progressive",
                "failed requests during the progressive rollouts",
                str(failed),
                f"{rollout.get('requests_ok', 0)} answered",
                "",
                "0",
                failed == 0,
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class Section:
    """One benchmark in the report: its results file, how to run it, and its rows.

    ``required=False``: a benchmark added after the committed results; until its first run its missing
    results file leaves it out of the table instead of refusing the README (present, it must be quiet).
    """

    name: str
    module: str
    rows: Callable[[dict[str, Any]], list[dict[str, Any]]]
    required: bool = True


SECTIONS: list[Section] = [
    Section("train", "bench.train_bench", training_rows),
    Section("serve", "bench.serve_bench", serving_rows),
    Section("rollout", "bench.rollout_bench", rollout_rows),
    Section("progressive", "bench.progressive_bench", progressive_rows, required=False),
    Section("autoscale", "bench.autoscale_bench", autoscale_rows, required=False),
]


def load_results(results_dir: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """Every section's results file that exists, by section name."""
    out = {}
    for section in SECTIONS:
        path = results_dir / f"{section.name}.json"
        if path.exists():
            out[section.name] = json.loads(path.read_text())
    return out


def status(data: dict[str, Any]) -> str:
    """``quiet``, ``loaded`` (measured while the machine was busy) or ``legacy`` (before the method)."""
    if data.get("schema") != SCHEMA:
        return "legacy"
    return "quiet" if data.get("quiet") is True else "loaded"


def problems(results: dict[str, dict[str, Any]]) -> list[str]:
    """Why these results cannot go in the README (empty when they can)."""
    out = []
    for section in SECTIONS:
        data = results.get(section.name)
        if data is None:
            if section.required:
                out.append(f"bench/results/{section.name}.json is missing: run `python -m {section.module}`")
            continue
        state = status(data)
        if state == "legacy":
            out.append(
                f"bench/results/{section.name}.json predates the method of issue 12 (no repeats, no load "
                f"record): re-run `python -m {section.module}` on an idle machine"
            )
        elif state == "loaded":
            out.append(
                f"bench/results/{section.name}.json was measured on a loaded machine (1-min load average "
                f"{(data.get('load_at_start') or ['?'])[0]} at the start, quiet below "
                f"{data['method']['quiet_threshold']}; up to {data.get('max_cpu_busy_before')} cores busy "
                f"before a point, quiet below {data['method'].get('busy_threshold_cores')}; or fewer than "
                f"3 repeats): re-run `python -m {section.module}` when the machine is idle"
            )
    return out


def render(results: dict[str, dict[str, Any]] | None = None) -> tuple[dict[str, Any], str]:
    """The report (rows, sources) and its Markdown table; rows of non-quiet runs are marked loaded."""
    results = load_results() if results is None else results
    rows: list[dict[str, Any]] = []
    sources: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        data = results.get(section.name)
        if data is None or status(data) == "legacy":
            continue
        state = status(data)
        load = f"{data['load_at_start'][0]} / {data['max_cpu_busy_before']}"
        for row in section.rows(data):
            row["load"] = load
            row["loaded"] = state != "quiet"
            rows.append(row)
        sources[section.name] = {
            "started_at": data["started_at"],
            "git_commit": data["git"]["commit"][:10],
            "status": state,
            "load_at_start": data["load_at_start"][0],
            "max_cpu_busy_before": data["max_cpu_busy_before"],
            "quiet_threshold": data["method"]["quiet_threshold"],
            "repeats": data["method"]["repeats"],
            "cores": data["machine"]["cores"],
            "pinned": data["pinning"]["enabled"],
        }
    return {"rows": rows, "sources": sources}, to_markdown(rows, sources)


def to_markdown(rows: list[dict[str, Any]], sources: dict[str, dict[str, Any]]) -> str:
    """The table: medians with the min-max of the repeats; each baseline measured in the same run."""
    mark = {True: "yes", False: "**no**", None: ""}
    lines = [
        "| area | measure | median (min-max) | baseline, same run | ratio of medians | target | met | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        load = f"{r['load']} **loaded**" if r["loaded"] else r["load"]
        lines.append(
            f"| {r['area']} | {r['measure']} | {r['value']} | {r['baseline']} | {r['ratio']} | {r['target']} "
            f"| {mark[r['met']]} | {load} |"
        )
    lines.append("")
    runs = "; ".join(
        f"{name} at {s['started_at']} (commit {s['git_commit']}, {s['repeats']} interleaved repeats, "
        f"{'pinned' if s['pinned'] else 'not pinned'}, {s['status']})"
        for name, s in sources.items()
    )
    lines.append(
        f"Runs: {runs}. *load*: the 1-minute load average when the run started / the most CPU (in cores) "
        "anything used in the idle moment before a point; a run is quiet below 0.5 x cores at the start "
        "and 0.5 cores before every point. "
        "Method and details: `docs/benchmarks.md`, `bench/results/*.md`. Regenerate with `make bench`."
    )
    return "\n".join(lines) + "\n"


def readme_table(text: str) -> str | None:
    """The table between the README's bench markers, or None when the markers are missing."""
    match = re.search(f"{re.escape(BEGIN)}\n(.*?){re.escape(END)}", text, flags=re.S)
    return match.group(1) if match else None


def build(
    results_dir: Path = RESULTS, readme: Path = ROOT / "README.md", allow_loaded: bool = False
) -> tuple[str, list[str]]:
    """Write report.json, report.md and, only for quiet results, the README table.

    Returns the table and the reasons the README was left alone (empty when it was updated).
    Raises :class:`ReportRefused` when a results file is loaded, old or missing, unless
    ``allow_loaded``: then report.md is written with the loaded rows marked, the README is not.
    """
    results = load_results(results_dir)
    issues = problems(results)
    if issues and not allow_loaded:
        raise ReportRefused(
            "refusing to build the report (pass --allow-loaded for report.md only):\n- " + "\n- ".join(issues)
        )
    report, table = render(results)
    report["readme_updated"] = not issues
    report["not_in_readme_because"] = issues
    (results_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (results_dir / "report.md").write_text("# Benchmark report\n\n" + table)
    if not issues:
        text = readme.read_text()
        if readme_table(text) is not None:
            new = re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}", f"{BEGIN}\n{table}{END}", text, flags=re.S)
            readme.write_text(new)
    return table, issues


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--from-results", action="store_true", help="do not run the benchmarks")
    parser.add_argument(
        "--only", choices=[s.name for s in SECTIONS], action="append", help="run only these benchmarks"
    )
    parser.add_argument(
        "--allow-loaded",
        action="store_true",
        help="write report.md from loaded runs (rows marked loaded); the README is still refused",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.from_results:
        for section in SECTIONS:
            if args.only and section.name not in args.only:
                continue
            print(f"== running {section.module}", flush=True)
            subprocess.run([sys.executable, "-m", section.module], cwd=ROOT, check=True)
    try:
        table, issues = build(args.results, args.readme, allow_loaded=args.allow_loaded)
    except ReportRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(table)
    if issues:
        print(
            "warning: report.md has the loaded rows marked; the README table is unchanged because:\n- "
            + "\n- ".join(issues),
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
