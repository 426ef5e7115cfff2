"""The serving benchmark's results: ratios and targets from the medians, ``serve.json`` and ``serve.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import method

# Issue 12's targets for this app with one replica, direct ingress + HAProxy.
TARGETS = {
    "c16_vs_bare": "req/s at 16 connections >= 0.8x bare",
    "c16_vs_rllib_example": "req/s at 16 connections >= 1.2x RLlib's Serve example pattern",
    "c16_p99": "p99 at 16 connections <= 30 ms",
    "c1_p50": "p50 at 1 connection <= 1.5 ms",
}
OURS, BARE, EXAMPLE = "rlops_fast_ingress", "bare_fastapi", "rllib_example"


def round_ratios(run: method.Run, variant: str, baseline: str, point: str) -> dict[str, Any] | None:
    """The spread of ``variant``/``baseline`` req/s within each round (both measured back to back)."""
    by_round: dict[int, dict[str, float]] = {}
    for p in run.points:
        if p["point"] == point and p["variant"] in (variant, baseline):
            by_round.setdefault(p["repeat"], {})[p["variant"]] = p["values"]["rps"]
    ratios = [r[variant] / r[baseline] for r in by_round.values() if len(r) == 2 and r[baseline]]
    return method.spread(ratios) if ratios else None


def targets(summary: dict[str, Any]) -> dict[str, bool | None]:
    """Each target judged on the medians (None when a compared server was not measured)."""
    ours, bare, example = summary[OURS], summary[BARE], summary.get(EXAMPLE)
    med = {
        k: ours[p][m]["median"] for k, (p, m) in {"rps16": ("c16", "rps"), "p99": ("c16", "p99_ms")}.items()
    }
    return {
        "c16_vs_bare": med["rps16"] >= 0.8 * bare["c16"]["rps"]["median"],
        "c16_vs_rllib_example": (med["rps16"] >= 1.2 * example["c16"]["rps"]["median"]) if example else None,
        "c16_p99": med["p99"] <= 30.0,
        "c1_p50": ours["c1"]["p50_ms"]["median"] <= 1.5,
    }


def assemble(
    run: method.Run,
    *,
    summary: dict[str, Any],
    labels: dict[str, str],
    duration_s: float,
    checkpoint: str,
    cold_start_s: dict[str, float],
    swaps: list[dict[str, float]],
) -> dict[str, Any]:
    """The results document: the run's context and points, the summaries, ratios, targets and swaps."""
    ratios = {
        f"{point}_{variant}_vs_bare": round_ratios(run, variant, BARE, point)
        for variant in labels
        if variant != BARE
        for point in ("c1", "c16")
    }
    if EXAMPLE in labels:
        ratios["c16_rlops_fast_ingress_vs_rllib_example"] = round_ratios(run, OURS, EXAMPLE, "c16")
    errors = sum(int(p["values"]["errors"]) for p in run.points)
    notes = list(run.notes)
    if errors:
        notes.append(f"{errors} requests failed (non-2xx or socket errors) across all points")
    return {
        **run.header(),
        "notes": notes,
        "duration_s": duration_s,
        "load_generator": 'wrk, POST {"state": [1]}, loopback only; 1 thread at 1 connection, 2 at 16',
        "checkpoint": checkpoint,
        "labels": labels,
        "summary": summary,
        "round_ratios": ratios,
        "targets": targets(summary),
        "target_texts": TARGETS,
        "cold_start_s": cold_start_s,
        "swaps": {
            "seconds": method.spread(s["seconds"] for s in swaps) if swaps else None,
            "values": swaps,
        },
        "points": run.points,
    }


def to_markdown(r: dict[str, Any]) -> str:
    """serve.md: one row per server, medians with min-max, then targets, ratios and every point."""
    s, bare16 = r["summary"], r["summary"][BARE]["c16"]["rps"]["median"]
    pin = r["pinning"]
    pinned = (
        f"wrk on CPU {pin['load_generator_cpus']}, servers on CPUs {pin['server_cpus']}"
        if pin["enabled"]
        else "not pinned"
    )
    lines = [
        "# Serving benchmark",
        "",
        f"Run at {r['started_at']} (commit {r['git']['commit'][:10]}) on {r['machine']['cores']} cores "
        f"({r['machine']['model']}, {r['machine']['mem_gb']} GB). {r['method']['repeats']} interleaved "
        f"rounds of {r['duration_s']} s per point after a warm-up; {pinned}; "
        f"{method.load_sentence(r)}. Load generator: {r['load_generator']}.",
        "",
        "| server | req/s @1 | p50 ms @1 | req/s @16 | p50 ms @16 | p99 ms @16 | x bare @16 | cold start s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in r["labels"].items():
        c1, c16 = s[key]["c1"], s[key]["c16"]
        lines.append(
            f"| {label} | {method.fmt_spread(c1['rps'], 0)} | {method.fmt_spread(c1['p50_ms'], 2)} | "
            f"{method.fmt_spread(c16['rps'], 0)} | {method.fmt_spread(c16['p50_ms'], 1)} | "
            f"{method.fmt_spread(c16['p99_ms'], 1)} | {c16['rps']['median'] / bare16:.2f} | "
            f"{r['cold_start_s'].get(key, '')} |"
        )
    lines += ["", "Targets (this app, direct ingress + HAProxy; judged on the medians):", ""]
    for key, text in r["target_texts"].items():
        met = r["targets"].get(key)
        lines.append(f"- {text}: {'not measured' if met is None else 'met' if met else 'NOT met'}")
    lines += ["", "Ratios within each round (min-max over the rounds):", ""]
    for key, spread in r["round_ratios"].items():
        if spread:
            lines.append(f"- {key}: {method.fmt_spread(spread, 2)}")
    swaps = r["swaps"]
    if swaps["seconds"]:
        lines += [
            "",
            f"Hot-swap (config PUT until /metadata names the new checkpoint): "
            f"{method.fmt_spread(swaps['seconds'], 2, ' s')}; checkpoint load in the replica "
            + ", ".join(f"{v['load_seconds']} s" for v in swaps["values"]),
        ]
    lines += ["", "Every point (load average before it):", ""]
    for p in r["points"]:
        v = p["values"]
        lines.append(
            f"- round {p['repeat']} {p['variant']} {p['point']}: {v['rps']} req/s, p50 {v['p50_ms']} ms, "
            f"p99 {v['p99_ms']} ms, {v['errors']} errors; load {p['load_before'][0]}, "
            f"busy {p['cpu_busy_before']}"
        )
    if r["notes"]:
        lines += ["", "Notes:", *[f"- {n}" for n in r["notes"]]]
    return "\n".join(lines) + "\n"


def write(out: Path, results: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "serve.md").write_text(to_markdown(results))
