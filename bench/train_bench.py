"""Time-to-solve through ``train_job`` beside a plain RLlib loop with the same config, in the same run.

Cases: the corridor (mean return >= 9.3, tutorial preset) and CartPole-v1 (>= 450, cartpole preset).
For each repetition the plain loop (``config.build_algo()`` then ``algo.train()`` until the target)
and ``run_training`` (Tune trial, checkpoints, manifest, pointer, curves PNG) run back to back on the
same local Ray instance; the order alternates between repetitions. Wall times exclude starting Ray
and importing RLlib in the driver, which both pay alike.

    python -m bench.train_bench [--reps 2] [--cases corridor,cartpole] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RATIO_TARGET = 1.25
CARTPOLE_SOLVE_TARGET_S = 60.0


@dataclass(frozen=True)
class Case:
    name: str
    preset: str
    target: float
    max_iters: int
    max_timesteps: int


CASES = {
    "corridor": Case("corridor", "tutorial", 9.3, max_iters=40, max_timesteps=40 * 400),
    "cartpole": Case("cartpole", "cartpole", 450.0, max_iters=200, max_timesteps=400_000),
}


@dataclass
class Attempt:
    """One timed attempt to reach the target."""

    mode: str
    rep: int
    wall_s: float
    solved: bool
    iterations: int
    env_steps: int
    final_return: float | None
    extra: dict[str, Any] = field(default_factory=dict)


def _settings(case: Case, storage: str, name: str, seed: int) -> Any:
    from workloads.training.settings import build_settings

    return build_settings(
        preset=case.preset,
        overrides={
            "storage": storage,
            "name": name,
            "seed": seed,
            "stop": {"return": case.target, "iters": case.max_iters, "timesteps": case.max_timesteps},
        },
    )


def plain_loop(case: Case, rep: int, seed: int) -> Attempt:
    """``algo = config.build_algo()``; ``algo.train()`` until the target (same config as train_job)."""
    from workloads.training.tune_setup import build_algo_config

    settings = _settings(case, tempfile.mkdtemp(prefix="bench-plain-"), f"plain-{rep}", seed)
    start = time.perf_counter()
    algo = build_algo_config(settings).build_algo()
    value, steps, iters = None, 0, 0
    try:
        while iters < case.max_iters and steps < case.max_timesteps:
            result = algo.train()
            iters = int(result["training_iteration"])
            steps = int(result.get("num_env_steps_sampled_lifetime", 0))
            raw = result.get("env_runners", {}).get("episode_return_mean")
            value = None if raw is None else float(raw)
            if value is not None and value >= case.target:
                break
        wall = time.perf_counter() - start
    finally:
        algo.stop()
    solved = bool(value is not None and value >= case.target)
    return Attempt("plain_loop", rep, wall, solved, iters, steps, value)


def via_train_job(case: Case, rep: int, seed: int) -> Attempt:
    """``run_training`` with the same settings, Tune overhead and the end-of-run commit included."""
    from workloads.train_job import run_training

    root = tempfile.mkdtemp(prefix="bench-tune-")
    settings = _settings(case, root, f"bench-{case.name}-{rep}", seed)
    start = time.perf_counter()
    outcome = run_training(settings)
    wall = time.perf_counter() - start
    row = outcome.trials[0] if outcome.trials else {}
    final = None if row.get("last_return") is None else float(row["last_return"])
    return Attempt(
        "train_job",
        rep,
        wall,
        solved=bool(final is not None and final >= case.target),
        iterations=int(row.get("iters", 0)),
        env_steps=int(row.get("steps", 0)),
        final_return=final,
        extra={"best_checkpoint_uri": outcome.best_checkpoint_uri, "metric": float(outcome.metric_value)},
    )


def _summary(case: Case, attempts: list[Attempt]) -> dict[str, Any]:
    out: dict[str, Any] = {"target_return": case.target, "preset": case.preset}
    for mode in ("plain_loop", "train_job"):
        rows = [a for a in attempts if a.mode == mode]
        walls = [a.wall_s for a in rows]
        out[mode] = {
            "median_wall_s": round(statistics.median(walls), 2),
            "min_wall_s": round(min(walls), 2),
            "all_solved": all(a.solved for a in rows),
            "median_env_steps": int(statistics.median(a.env_steps for a in rows)),
            "median_iterations": int(statistics.median(a.iterations for a in rows)),
        }
    ratio = out["train_job"]["median_wall_s"] / out["plain_loop"]["median_wall_s"]
    out["ratio_train_job_to_plain"] = round(ratio, 3)
    out["ratio_target"] = RATIO_TARGET
    out["ratio_met"] = out["ratio_train_job_to_plain"] <= RATIO_TARGET
    return out


def _machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1_5_15": [round(x, 2) for x in load],
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Training benchmark: time to solve",
        "",
        f"Run at {report['started_at']} on {report['machine']['cpus']} CPUs; "
        f"{report['reps']} repetitions per mode, medians shown. Load average at start "
        f"{report['machine']['load_avg_1_5_15']}, at end {report['load_avg_at_end']}.",
        "",
        "| case | target return | plain RLlib loop (s) | train_job (s) | ratio | ratio target | "
        "env steps (plain / train_job) | solved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in report["cases"].items():
        lines.append(
            f"| {name} | {s['target_return']} | {s['plain_loop']['median_wall_s']} | "
            f"{s['train_job']['median_wall_s']} | {s['ratio_train_job_to_plain']} | <= {s['ratio_target']} "
            f"({'met' if s['ratio_met'] else 'NOT met'}) | {s['plain_loop']['median_env_steps']} / "
            f"{s['train_job']['median_env_steps']} | "
            f"{'yes' if s['plain_loop']['all_solved'] and s['train_job']['all_solved'] else 'NO'} |"
        )
    if "cartpole" in report["cases"]:
        c = report["cases"]["cartpole"]
        verdict = "met" if c["cartpole_solve_target_met"] else "NOT met"
        lines += [
            "",
            f"CartPole-v1 solved through train_job in {c['train_job']['median_wall_s']} s "
            f"(target < {CARTPOLE_SOLVE_TARGET_S:.0f} s: {verdict}).",
        ]
    lines += ["", "Notes:", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and other odd values in results."""
    return value.item() if hasattr(value, "item") else str(value)


def _write(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(report, indent=2, default=_plain) + "\n")
    (out / "train.md").write_text(_markdown(report))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write ``train.json`` and ``train.md``, and return the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.train_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--cases", default="corridor,cartpole")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS_DIR))
    parser.add_argument("--note", action="append", default=[], help="a note to record with the results")
    args = parser.parse_args(argv)

    import ray

    from workloads.envs import register_with_ray

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine = _machine()
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, logging_level="WARNING", log_to_driver=False)
    register_with_ray()
    from ray.rllib.algorithms.ppo import PPO  # noqa: F401 - imported once, outside the timings

    cases = [CASES[c.strip()] for c in args.cases.split(",") if c.strip()]
    report: dict[str, Any] = {"started_at": started, "machine": machine, "reps": args.reps, "cases": {}}
    attempts_by_case: dict[str, list[Attempt]] = {}
    for case in cases:
        attempts: list[Attempt] = []
        for rep in range(args.reps):
            order = (plain_loop, via_train_job) if rep % 2 == 0 else (via_train_job, plain_loop)
            for runner in order:
                attempt = runner(case, rep, args.seed + rep)
                print(
                    f"[bench] {case.name} rep {rep} {attempt.mode}: {attempt.wall_s:.1f}s "
                    f"solved={attempt.solved} iters={attempt.iterations} steps={attempt.env_steps}",
                    flush=True,
                )
                attempts.append(attempt)
        attempts_by_case[case.name] = attempts
        summary = _summary(case, attempts)
        if case.name == "cartpole":
            summary["cartpole_solve_target_s"] = CARTPOLE_SOLVE_TARGET_S
            tj = summary["train_job"]
            fast = tj["median_wall_s"] < CARTPOLE_SOLVE_TARGET_S
            summary["cartpole_solve_target_met"] = bool(tj["all_solved"] and fast)
        summary["attempts"] = [asdict(a) for a in attempts]
        report["cases"][case.name] = summary
        report["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        report["notes"] = [*args.note, "partial: written after each case"]
        _write(Path(args.out), report)  # keep what is measured even if a later case fails

    report["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    notes = list(args.note)
    busiest = max(machine["load_avg_1_5_15"][0], report["load_avg_at_end"][0])
    if busiest > (machine["cpus"] or 1):
        notes.append(
            f"The machine was loaded by other work during the run (1-minute load average up to "
            f"{busiest:.1f} on {machine['cpus']} CPUs): absolute times are inflated; the ratios compare "
            "runs made side by side."
        )
    notes.append(
        "train_job wall time covers Tune's trial actor start (a fresh process importing RLlib and torch), "
        "per-iteration checkpoints to storage, the manifest (sha256 of every file), the pointer and the "
        "training-curves PNG; the plain loop builds the algorithm in the already-warm driver."
    )
    report["notes"] = notes
    _write(Path(args.out), report)
    print(_markdown(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
