"""Time to solve through ``train_job`` beside a plain RLlib loop with the same config, in the same run.

Cases: the corridor (mean return >= 9.3, tutorial preset) and CartPole-v1 (>= 450, cartpole preset).
The method is ``bench/method.py``'s: a warm-up (one plain-loop iteration, so the first timed point
pays no first-use costs), then ``--repeats`` rounds of plain loop and ``run_training`` interleaved
(plain, train_job, plain, train_job, ...), each round with its own seed shared by both modes, the
load average before every point, medians and min-max. Wall times exclude starting Ray and importing
RLlib in the driver, which both pay alike; ``train_job`` attempts also record where their time went
(``workloads.training.runner.phase_timings``).

    python -m bench.train_bench [--repeats 3] [--cases corridor,cartpole] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import method

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RATIO_TARGET = 1.25
SOLVE_TARGET_S = {"cartpole": 60.0}
MODES = ("plain_loop", "train_job")
METRICS = ("wall_s", "iterations", "env_steps", "final_return")
PHASES = ("setup_s", "trial_start_s", "training_s", "tune_shutdown_s", "commit_s", "curves_s")
# trial_start_s split by when the processes began (local head only, from /proc; see ProcessStarts)
TRIAL_START_PARTS = ("trial_spawn_s", "trial_boot_s", "runner_boot_s")
BREAKDOWN = (*PHASES, *TRIAL_START_PARTS, "per_iter_overhead_s")


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


def _settings(case: Case, storage: str, name: str, seed: int, max_iters: int | None = None) -> Any:
    from workloads.training.settings import build_settings

    return build_settings(
        preset=case.preset,
        overrides={
            "storage": storage,
            "name": name,
            "seed": seed,
            "stop": {
                "return": case.target,
                "iters": max_iters or case.max_iters,
                "timesteps": case.max_timesteps,
            },
        },
    )


def plain_loop(case: Case, seed: int, max_iters: int | None = None) -> dict[str, Any]:
    """``algo = config.build_algo()``; ``algo.train()`` until the target (same config as train_job)."""
    from workloads.training.tune_setup import build_algo_config

    limit = max_iters or case.max_iters
    settings = _settings(case, tempfile.mkdtemp(prefix="bench-plain-"), f"plain-{seed}", seed, limit)
    start = time.perf_counter()
    algo = build_algo_config(settings).build_algo()
    value, steps, iters = None, 0, 0
    try:
        while iters < limit and steps < case.max_timesteps:
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
    return _attempt(case, wall, iters, steps, value)


def _uptime() -> float:
    """Seconds since boot: the clock of ``/proc/<pid>/stat`` start times (``btime`` is whole seconds)."""
    with open("/proc/uptime") as fh:
        return float(fh.read().split()[0])


def _proc_starts() -> dict[int, tuple[int, str, float]]:
    """``{pid: (parent pid, Ray proctitle, start in seconds since boot)}`` of the ``ray::`` processes."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                title = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if title.startswith("ray::"):
            out[int(entry)] = (int(fields[1]), title, int(fields[19]) / tick)
    return out


def _process_starts_callback() -> Any:
    """A Tune callback splitting the first trial's start by when its processes began (local head only).

    ``trial_spawn_s``: from the experiment's start until the trial actor's process exists (Tune's
    placement group, scheduling, the worker's fork). ``trial_boot_s``: from there until the trial's
    first env-runner process exists (Python and Ray start, importing RLlib and torch, the algorithm's
    setup up to creating its env runners). ``runner_boot_s``: from there until Tune reports the trial
    started (the env runner's own start and imports, then the rest of the build). Processes are found
    in ``/proc`` by Ray's ``ray::<class>`` titles: the trial actor by the ``pid`` in its first result,
    its env runners as siblings (same raylet parent) started after it.
    """
    from ray.tune import Callback

    class ProcessStarts(Callback):
        def __init__(self) -> None:
            self.times: dict[str, float] = {}

        def setup(self, **info: Any) -> None:
            if sys.platform.startswith("linux"):
                self.times["experiment_start"] = _uptime()

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if sys.platform.startswith("linux"):
                self.times.setdefault("trial_started", _uptime())

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **_: Any) -> None:
            if "trial_process" in self.times or not sys.platform.startswith("linux"):
                return
            procs = _proc_starts()
            own = procs.get(int(result.get("pid") or -1))
            if own is None:  # the trial runs on another node
                return
            parent, _, began = own
            self.times["trial_process"] = began
            runners = [
                start
                for ppid, title, start in procs.values()
                if ppid == parent and "EnvRunner" in title and start >= began
            ]
            if runners:
                self.times["env_runner_process"] = min(runners)

        def parts(self) -> dict[str, float | None]:
            t = self.times
            keys = ("experiment_start", "trial_process", "env_runner_process", "trial_started")
            if not all(k in t for k in keys):
                return dict.fromkeys(TRIAL_START_PARTS)
            return {
                "trial_spawn_s": round(t["trial_process"] - t["experiment_start"], 3),
                "trial_boot_s": round(t["env_runner_process"] - t["trial_process"], 3),
                "runner_boot_s": round(t["trial_started"] - t["env_runner_process"], 3),
            }

    return ProcessStarts()


def via_train_job(case: Case, seed: int) -> dict[str, Any]:
    """``run_training`` with the same settings: Tune, checkpoints, manifest, pointer and curves PNG."""
    from workloads.training.runner import run_training

    settings = _settings(case, tempfile.mkdtemp(prefix="bench-tune-"), f"bench-{case.name}-{seed}", seed)
    phases: dict[str, float] = {}
    probe = _process_starts_callback()
    start = time.perf_counter()
    outcome = run_training(settings, timings=phases, callbacks=[probe])
    wall = time.perf_counter() - start
    row = outcome.trials[0] if outcome.trials else {}
    final = None if row.get("last_return") is None else float(row["last_return"])
    attempt = _attempt(case, wall, int(row.get("iters", 0)), int(row.get("steps", 0)), final)
    attempt.update({k: phases.get(k) for k in PHASES})
    attempt.update(probe.parts())
    attempt["per_iter_overhead_s"] = phases.get("per_iter_overhead_s")
    return attempt


def _attempt(case: Case, wall: float, iters: int, steps: int, final: float | None) -> dict[str, Any]:
    return {
        "wall_s": round(wall, 3),
        "iterations": iters,
        "env_steps": steps,
        "final_return": final,
        "solved": bool(final is not None and final >= case.target),
    }


def _attempt_fn(mode: str, case: Case, seed: int) -> Any:
    """One timed attempt of ``mode`` on ``case`` with ``seed`` (both modes of a round share the seed)."""
    if mode == "plain_loop":
        return lambda: plain_loop(case, seed)
    return lambda: via_train_job(case, seed)


def summarize_case(case: Case, run: method.Run) -> dict[str, Any]:
    """Medians and spreads per mode, the ratio of the medians and the targets, for one case."""
    points = [p for p in run.points if p["point"] == case.name]
    stats = run.summary([*METRICS, *BREAKDOWN])
    out: dict[str, Any] = {"target_return": case.target, "preset": case.preset}
    for mode in MODES:
        out[mode] = stats[mode][case.name]
    out["all_solved"] = all(p["values"]["solved"] for p in points)
    out["ratio"] = round(out["train_job"]["wall_s"]["median"] / out["plain_loop"]["wall_s"]["median"], 3)
    out["ratio_target"] = RATIO_TARGET
    out["ratio_met"] = out["ratio"] <= RATIO_TARGET
    if case.name in SOLVE_TARGET_S:
        out["solve_target_s"] = SOLVE_TARGET_S[case.name]
        out["solve_target_met"] = bool(
            out["all_solved"] and out["train_job"]["wall_s"]["median"] < SOLVE_TARGET_S[case.name]
        )
    return out


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Training benchmark: time to solve",
        "",
        f"Run at {report['started_at']} (commit {report['git']['commit'][:10]}) on "
        f"{report['machine']['cores']} cores ({report['machine']['model']}); {report['method']['repeats']} "
        f"interleaved repeats per mode; {method.load_sentence(report)}.",
        "",
        "| case | target return | plain RLlib loop s | train_job s | ratio of medians | target | solved |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in report["cases"].items():
        lines.append(
            f"| {name} | {s['target_return']} | {method.fmt_spread(s['plain_loop']['wall_s'], 1)} | "
            f"{method.fmt_spread(s['train_job']['wall_s'], 1)} | {s['ratio']:.2f} | <= {s['ratio_target']} "
            f"({'met' if s['ratio_met'] else 'NOT met'}) | {'yes' if s['all_solved'] else 'NO'} |"
        )
    lines += ["", "Where train_job's time goes (median s, min-max):", ""]
    lines += ["| case | " + " | ".join(p[:-2].replace("_", " ") for p in BREAKDOWN) + " |"]
    lines += ["|---|" + "---|" * len(BREAKDOWN)]
    for name, s in report["cases"].items():
        cells = [method.fmt_spread(s["train_job"][p], 2) if p in s["train_job"] else "-" for p in BREAKDOWN]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "trial spawn + trial boot + runner boot = trial start (local head only); per iter overhead is the "
        "wall time per iteration outside the algorithm's train() (checkpoint save, reporting, Tune).",
    ]
    lines += ["", "Points (load before each):", ""]
    for p in report["points"]:
        v = p["values"]
        lines.append(
            f"- {p['point']} round {p['repeat']} {p['variant']}: {v['wall_s']:.1f} s, "
            f"{v['iterations']} iters, solved={v['solved']}, load {p['load_before'][0]}, "
            f"busy {p['cpu_busy_before']}"
        )
    lines += ["", "Notes:", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)


def _write(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "train.md").write_text(_markdown(report))


NOTES = [
    "train_job wall time covers Tune's trial actor start (a fresh process importing RLlib and torch, "
    "then building the algorithm and its env runner), per-iteration checkpoints to storage, Tune's "
    "shutdown, the manifest (sha256 of every file), the pointer and the training-curves PNG; the plain "
    "loop builds the algorithm in the already-warm driver.",
    "train_job draws the training-curves PNG in a background thread while Tune shuts its actors down "
    "(curves = the wait for it after the commit).",
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write ``train.json`` and ``train.md``, and return the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.train_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=method.MIN_REPEATS, help="rounds per case (>= 3)")
    parser.add_argument("--quick", action="store_true", help="allow fewer repeats (a smoke run, never quiet)")
    parser.add_argument("--cases", default="corridor,cartpole")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS_DIR))
    parser.add_argument("--note", action="append", default=[], help="a note to record with the results")
    args = parser.parse_args(argv)
    try:
        repeats = method.check_repeats(args.repeats, allow_fewer=args.quick)
    except ValueError as exc:
        parser.error(str(exc))

    if not os.environ.get("RAY_ADDRESS"):  # a local head comes: its token must be set before Ray loads
        import secrets

        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    cases = [CASES[c.strip()] for c in args.cases.split(",") if c.strip()]
    run = method.Run("train", repeats=repeats, notes=[*args.note, *NOTES])
    head = None
    if not ray.is_initialized():
        if not os.environ.get("RAY_ADDRESS"):
            head = _local_head()
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, logging_level="WARNING", log_to_driver=False)
    try:
        return _run_cases(args, cases, run)
    finally:
        if head is not None:
            ray.shutdown()
            head.stop()


def _local_head() -> Any:
    """A local head with one CPU per core (what ``ray.init()`` would give), token auth, in this env."""
    from bench.heads import start_head
    from rlops_demo.cluster import LocalRayCluster

    log = Path(tempfile.gettempdir()) / f"rlops-train-bench-{os.getpid()}.log"
    head = start_head(lambda: LocalRayCluster(num_cpus=method.cores(), log_path=log))
    os.environ.update(head.client_env())
    return head


def _run_cases(args: argparse.Namespace, cases: list[Case], run: method.Run) -> dict[str, Any]:
    """Warm up, then the interleaved rounds of every case; write the results after each case."""
    from workloads.envs import register_with_ray

    register_with_ray()
    print("[bench] warm-up: one plain-loop iteration", flush=True)
    plain_loop(cases[0], args.seed, max_iters=1)

    report: dict[str, Any] = {}
    for case in cases:
        for rep, mode in method.interleaved(MODES, run.repeats):
            values = run.measure(mode, case.name, rep, _attempt_fn(mode, case, args.seed + rep))
            print(
                f"[bench] {case.name} round {rep} {mode}: {values['wall_s']:.1f}s solved={values['solved']} "
                f"iters={values['iterations']} load_before={run.points[-1]['load_before'][0]}",
                flush=True,
            )
        done = cases[: cases.index(case) + 1]
        report = {
            **run.header(),
            "cases": {c.name: summarize_case(c, run) for c in done},
            "points": run.points,
        }
        _write(Path(args.out), report)  # keep what is measured even if a later case fails
    print(_markdown(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
