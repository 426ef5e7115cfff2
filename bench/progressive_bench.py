"""Progressive delivery benchmark: a challenger slot's serving cost, and pointer → 100% through canary steps.

``python -m bench.progressive_bench`` starts one local Ray head with direct ingress + HAProxy (as
``bench/serve_bench.py`` does), trains three tiny corridor PPO checkpoints (``bench/rollout_bench.py``) and
measures, by ``bench/method.py``'s rules (warm-up, repeats interleaved across the variants, the load before
every point, medians with min-max, CPU pinning on by default):

1. **Serving cost of a challenger** (one replica each, same run): ``champion_only``, ``canary_50`` (challenger
   in canary mode at weight 0.5) and ``shadow`` (challenger in shadow mode), with ``wrk`` at 16 and 1
   connections. Every request carries an ``episode_id`` (10 steps per episode, ids unique per wrk thread) so
   routing really splits; every variant has the decision log on (progressive delivery needs it), so the
   only difference is the challenger slot. The canary split is verified twice per canary point: from the
   decision log (the ``slot`` of every decision written during the point) and from 200 direct requests'
   ``policy`` field. Replica memory (RSS) is read from ``/proc`` for each variant's replica after warm-up.
2. **Pointer → 100%**: the operator's promotion engine (``rlops_operator.engine.Engine`` with the
   ``STRATEGY`` below, the way ``rlops-rollout watch --strategy-file`` runs it) against the same cluster,
   while ``rlops_demo.load.LoadGenerator`` plays corridor episodes with ``episode_id`` and ``POST /feedback``
   so evidence accumulates. Measured: pointer written → ``/metadata`` names the new checkpoint with no
   challenger slot (100%), with the time spent in each stage (from the engine's stage summaries). The
   analysis tolerances are wide on purpose: this times the machinery (polls, settle, evidence reading,
   reconfigures), not the statistics (the demo and the e2e tests exercise the judgement). Rollouts run one
   after another (one variant: nothing to interleave), each promoting the next checkpoint.

Expected time of a full run (defaults: 3 repeats, 8 s per wrk point, 3 rollouts) on an idle 2-core machine:
about 8-10 minutes (head start and 3 tiny training iterations ~1 min, serving points ~4 min, three rollouts
of ~40-60 s each). ``--quick`` (1 repeat, 3 s points, 1 rollout; never quiet, never in the README): about
4 minutes idle; 8.5 minutes were measured at a load average of 10-33 (other work on the machine), the
rollout itself taking 68 s there.

    python -m bench.progressive_bench [--repeats 3] [--duration 8] [--rollouts 3] [--no-pin] [--out DIR]
    python -m bench.progressive_bench --quick --out /tmp/progressive-quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import method
from bench.serve_load import parse_wrk

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results"
DEPLOYMENT = "PolicyServer"
POINTS = {"c16": 16, "c1": 1}
METRICS = ("rps", "p50_ms", "p99_ms", "errors")
STEPS_PER_EPISODE = 10
SPLIT_CHECK_REQUESTS = 200
CANARY_WEIGHT = 0.5
CANARY_RATIO_TARGET = 0.9
DECISION_FLUSH_S = 1.0

# variant -> (label, the challenger block of user_config, or None)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "champion_only": ("champion only", None),
    "canary_50": (f"challenger in canary mode at weight {CANARY_WEIGHT}", "canary"),
    "shadow": ("challenger in shadow mode", "shadow"),
}

# spec.strategy of the timed rollouts (docs/progressive.md). Short shadow, no off-policy gate (its cost is
# statistics, not machinery), three steps ending at 100%, wide tolerances (see the module docstring).
STRATEGY: dict[str, Any] = {
    "type": "Progressive",
    "settleSeconds": DECISION_FLUSH_S + 2.0,
    "shadow": {"enabled": True, "minEpisodes": 20, "maxDurationSeconds": 120},
    "offPolicyGate": {"enabled": False},
    "steps": [
        {"weight": 0.25, "holdSeconds": 5, "minEpisodes": 10},
        {"weight": 0.5, "holdSeconds": 5, "minEpisodes": 10},
        {"weight": 1.0, "holdSeconds": 5, "minEpisodes": 10},
    ],
    "analysis": {
        "confidence": 0.9,
        "tolerance": 100.0,
        "minEpisodes": 10,
        "maxErrorRate": 0.05,
        "minRequests": 30,
        "maxStepSeconds": 120,
    },
    "abort": {"onUntrustworthy": "continue", "onInconclusive": "continue"},
}

WRK_LUA = """\
-- every request is one step of an episode; ids are unique per wrk thread (set in setup)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
tid = 0
local n = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function request()
  local ep = math.floor(n / STEPS)
  local step = n % STEPS
  n = n + 1
  local body = string.format('{"state": [1], "episode_id": "PREFIX.t%d.e%d", "step": %d}', tid, ep, step)
  return wrk.format(nil, nil, nil, body)
end
"""


# ---------------------------------------------------------------------------------------------- routing
def wrk_script(prefix: str, steps: int = STEPS_PER_EPISODE) -> str:
    """The wrk Lua script whose episode ids start with ``prefix`` (``[A-Za-z0-9._:-]`` only)."""
    if not prefix or any(not (c.isalnum() or c in "._:-") for c in prefix):
        raise ValueError(f"episode id prefix {prefix!r}: use characters from A-Z a-z 0-9 . _ : -")
    return WRK_LUA.replace("PREFIX", prefix).replace("STEPS", str(int(steps)))


def episode_ids(prefix: str, threads: int, requests: int, steps: int = STEPS_PER_EPISODE) -> list[str]:
    """The episode id of each request wrk sent (``requests`` split evenly over ``threads``)."""
    per_thread = math.ceil(requests / max(threads, 1))
    return [f"{prefix}.t{t}.e{n // steps}" for t in range(1, threads + 1) for n in range(per_thread)]


def expected_share(ids: list[str], weight: float) -> float:
    """The share of these requests the routing function sends to a canary challenger at ``weight``."""
    from workloads.serving.routing import ChallengerSettings, route

    settings = ChallengerSettings(checkpoint_uri="any", mode="canary", weight=weight)
    return sum(route(i, settings) == "challenger" for i in ids) / len(ids) if ids else float("nan")


# ---------------------------------------------------------------------------------------------- serving
def app_config(name: str, champion: str, challenger: str, mode: str | None, log_root: str) -> dict[str, Any]:
    """One replica of the policy server; the challenger slot per variant; the decision log always on."""
    user_config: dict[str, Any] = {
        "checkpoint_uri": champion,
        "challenger": None
        if mode is None
        else {
            "checkpoint_uri": challenger,
            "mode": mode,
            "weight": CANARY_WEIGHT if mode == "canary" else 0.0,
        },
        "decision_log": {"root": log_root, "flush_seconds": DECISION_FLUSH_S},
    }
    return {
        "name": name,
        "route_prefix": f"/{name}",
        "import_path": "workloads.serve_app:app",
        "deployments": [{"name": DEPLOYMENT, "num_replicas": 1, "user_config": user_config}],
    }


def replica_rss_mib(head_pid: int, app: str) -> float | None:
    """Resident memory of ``app``'s replica process (``ServeReplica:<app>:...``); None if not found."""
    for pid in method.process_tree(head_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if f"ServeReplica:{app}:{DEPLOYMENT}" not in cmdline:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            continue
    return None


def run_wrk_episodes(
    url: str, connections: int, duration: float, prefix: str, load_prefix: list[str]
) -> dict[str, Any]:
    """One wrk run whose requests carry episode ids starting with ``prefix``; wrk's numbers, its threads."""
    import shutil
    import subprocess

    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk (make bench does it)")
    threads = 1 if connections == 1 else 2
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "episodes.lua"
        script.write_text(wrk_script(prefix))
        cmd = [*load_prefix, wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s"]
        cmd += ["--latency", "-s", str(script), url.rstrip("/") + "/"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return {**parse_wrk(done.stdout), "threads": threads}


def answered_share(url: str, prefix: str, n: int = SPLIT_CHECK_REQUESTS) -> dict[str, Any]:
    """POST ``n`` one-step episodes directly; the share whose answer says ``"policy": "challenger"``."""
    import httpx

    ids = [f"{prefix}.check.e{i}" for i in range(n)]
    policies: list[str] = []
    with httpx.Client(timeout=30) as client:
        for episode_id in ids:
            resp = client.post(
                url.rstrip("/") + "/", json={"state": [1], "episode_id": episode_id, "step": 0}
            )
            resp.raise_for_status()
            policies.append(resp.json().get("policy", ""))
    return {
        "requests": n,
        "challenger_share": round(policies.count("challenger") / n, 4),
        "expected_share": round(expected_share(ids, CANARY_WEIGHT), 4),
    }


class LogSplit:
    """Counts the slots of the decisions one app logged in a time window (incremental reads)."""

    def __init__(self, root: str, app: str) -> None:
        from rlops_core.decision_log import DecisionLogReader, LogCursor

        self.reader = DecisionLogReader(root, app, LogCursor.starting_at(time.time() - 3600))

    def window(self, start: float, end: float) -> dict[str, Any]:
        from rlops_core.decision_log import DecisionRecord

        counts = {"champion": 0, "challenger": 0}
        read = self.reader.poll(time.time())
        for record in read.records:
            if isinstance(record, DecisionRecord) and start <= record.time <= end and record.slot in counts:
                counts[record.slot] += 1
        total = sum(counts.values())
        return {
            "decisions": total,
            "challenger_share": round(counts["challenger"] / total, 4) if total else None,
            "read_errors": read.errors[:3],
        }


def measure_serving(
    cluster: Any,
    run: method.Run,
    checkpoints: list[str],
    log_root: str,
    repeats: int,
    duration: float,
    pinning: method.Pinning,
) -> dict[str, Any]:
    """Part 1: the three variants, interleaved, at 16 and 1 connections; memory and split checks."""
    from bench.serve_load import warm_up

    champion, challenger = checkpoints[-1], checkpoints[0]
    for variant, (_, mode) in VARIANTS.items():
        cluster.deploy(app_config(variant, champion, challenger, mode, log_root))
    urls = {v: cluster.url(v) for v in VARIANTS}
    head_pid = cluster.head.process.pid
    load_prefix = pinning.prefix("load")
    if pinning.enabled:  # after the deploys: a head pinned while it boots can starve its own daemons
        cluster.pin(pinning.server_cpus or ())
        os.sched_setaffinity(0, set(pinning.load_cpus or ()))
    for variant in VARIANTS:
        print(f"[bench] warm-up {variant}", flush=True)
        warm_up(urls[variant], prefix=load_prefix)
        run_wrk_episodes(urls[variant], 16, 2.0, f"warm.{variant}", load_prefix)
    memory = {v: replica_rss_mib(head_pid, v) for v in VARIANTS}
    splits = LogSplit(log_root, "canary_50")
    checks: list[dict[str, Any]] = []
    tag = secrets.token_hex(3)
    for rep, variant in method.interleaved(list(VARIANTS), repeats):
        for point, connections in POINTS.items():
            prefix = f"b{tag}.r{rep}.{point}.{variant}"
            started = time.time()
            values = run.measure(
                variant,
                point,
                rep,
                lambda u=urls[variant], c=connections, p=prefix: run_wrk_episodes(
                    u, c, duration, p, load_prefix
                ),
            )
            ended = time.time()
            if variant == "canary_50":
                ids = episode_ids(prefix, values["threads"], values["requests"])
                time.sleep(DECISION_FLUSH_S + 1.5)  # the replica's writer flushes every second
                check = {
                    "repeat": rep,
                    "point": point,
                    "expected_share_of_sent_ids": round(expected_share(ids, CANARY_WEIGHT), 4),
                    "decision_log": splits.window(started, ended),
                }
                checks.append(check)
                values["challenger_share_logged"] = check["decision_log"]["challenger_share"]
            print(
                f"[bench] round {rep} {variant} {point}: {values['rps']} req/s p50 {values['p50_ms']} ms "
                f"p99 {values['p99_ms']} ms errors {values['errors']} "
                f"(load before {run.points[-1]['load_before'][0]})",
                flush=True,
            )
    direct = answered_share(urls["canary_50"], f"b{tag}")
    metas = {v: _metadata(urls[v]) for v in VARIANTS}
    for variant in VARIANTS:
        cluster.apps = [a for a in cluster.apps if a["name"] != variant]
    cluster._put()
    return {
        "labels": {v: label for v, (label, _) in VARIANTS.items()},
        "champion": champion,
        "challenger": challenger,
        "canary_weight": CANARY_WEIGHT,
        "steps_per_episode": STEPS_PER_EPISODE,
        "replica_rss_mib": memory,
        "split_checks": checks,
        "split_direct": direct,
        "decision_log": {v: (metas[v] or {}).get("decision_log") for v in VARIANTS},
        "challenger_loaded": {v: ((metas[v] or {}).get("challenger") or {}).get("loaded") for v in VARIANTS},
    }


def _metadata(url: str) -> dict[str, Any] | None:
    from rlops_core.serve_client import ServeError, get_json

    try:
        body = get_json(url.rstrip("/") + "/metadata", timeout=10)
    except ServeError:
        return None
    return body if isinstance(body, dict) else None


def serving_targets(summary: dict[str, Any]) -> dict[str, Any]:
    """Ratios of medians to champion-only (req/s at 16 and 1 connections) and the canary target."""
    base = summary["champion_only"]
    ratios: dict[str, dict[str, float]] = {}
    for variant in ("canary_50", "shadow"):
        ratios[variant] = {
            point: round(summary[variant][point]["rps"]["median"] / base[point]["rps"]["median"], 3)
            for point in POINTS
            if base[point]["rps"]["median"]
        }
    return {
        "ratios_to_champion_only": ratios,
        "canary_ratio_target": CANARY_RATIO_TARGET,
        "canary_c16_met": ratios["canary_50"].get("c16", 0.0) >= CANARY_RATIO_TARGET,
    }


# ---------------------------------------------------------------------------------------------- rollout
class LiveWatcher:
    """Polls ``/metadata``; remembers when the champion first was ``uri`` with no challenger slot."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            meta = _metadata(self.endpoint)
            if meta and meta.get("challenger") is None and meta.get("checkpoint_uri"):
                self.seen.setdefault(meta["checkpoint_uri"], time.monotonic())
            self._stop.wait(0.1)

    def start(self) -> LiveWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def wait_for(self, uri: str, since: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.seen.get(uri)
            if seen is not None and seen >= since:
                return seen - since
            time.sleep(0.05)
        raise TimeoutError(f"{self.endpoint}/metadata did not name {uri} at 100% within {timeout:g} s")


def stage_seconds(progressive: dict[str, Any]) -> list[dict[str, Any]]:
    """Each stage's name, weight, seconds and episodes per slot, from ``status.progressive.stages``."""
    out = []
    for stage in progressive.get("stages") or []:
        ended = stage.get("endedAt")
        out.append(
            {
                "stage": stage.get("stage"),
                "weight": stage.get("weight"),
                "seconds": round(ended - stage["startedAt"], 2) if ended is not None else None,
                "outcome": stage.get("outcome"),
                "episodes": stage.get("episodes"),
            }
        )
    return out


def measure_rollouts(
    cluster: Any, run: method.Run, checkpoints: list[str], root: str, rollouts: int, poll_interval: float
) -> dict[str, Any]:
    """Part 2: ``rollouts`` progressive rollouts, each from a pointer write to the new champion at 100%."""
    from rlops_operator import loop
    from rlops_operator.dashboard import DashboardTarget
    from rlops_operator.engine import Engine
    from rlops_operator.progressive import ProgressiveSpec
    from rlops_operator.spec import RolloutSpec, TargetSpec

    from rlops_core import checkpoints as ck
    from rlops_demo.load import LoadGenerator

    app, log_root = "progressive", f"{root}/logs"
    current = checkpoints[0]
    config = app_config(app, current, current, None, log_root)
    config["deployments"][0]["user_config"]["challenger"] = None
    cluster.deploy(config)
    endpoint = cluster.url(app)
    pointer = ck.pointer_uri(root, "corridor")
    ck.write_pointer(pointer, current)
    strategy = ProgressiveSpec.from_resource(STRATEGY)
    dashboard = cluster.head.dashboard_url
    spec = RolloutSpec(
        pointer=pointer,
        target=TargetSpec(application=app, dashboard_url=dashboard, endpoint_url=endpoint),
        poll_interval_s=poll_interval,
        rollout_timeout_s=300,
        name="progressive-bench",
        strategy=strategy,
        log_root_uri=log_root,
    )
    statuses: list[dict[str, Any]] = []
    decisions: list[tuple[float, Any]] = []
    stop = threading.Event()
    engine = Engine(spec, DashboardTarget(dashboard, app, DEPLOYMENT, token=cluster.token))

    def on_decision(decision: Any, status: dict[str, Any]) -> None:
        decisions.append((time.monotonic(), decision))
        statuses.append(status)

    thread = threading.Thread(
        target=loop.run, args=(engine,), kwargs={"on_decision": on_decision, "stop": stop}, daemon=True
    )
    load = LoadGenerator(endpoint, workers=4, max_seconds=3600, episodes=True).start()
    watcher = LiveWatcher(endpoint).start()
    thread.start()
    time.sleep(poll_interval + 1)  # the engine has seen the pointer in sync with what is live
    rows: list[dict[str, Any]] = []
    try:
        for rep in range(rollouts):
            target = checkpoints[(checkpoints.index(current) + 1) % len(checkpoints)]

            def promote(uri: str = target) -> dict[str, Any]:
                t0 = time.monotonic()
                ck.write_pointer(pointer, uri)
                seconds = watcher.wait_for(uri, t0, timeout=400)
                deadline = time.monotonic() + 60
                while not any(d.transition == "Promoted" and t >= t0 for t, d in decisions):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the engine did not report {uri} promoted within 60 s")
                    time.sleep(0.1)
                progressive = next(
                    (s.get("progressive") for s in reversed(statuses) if s.get("progressive")), {}
                )
                first = next((t for t, d in decisions if t >= t0 and d.transition == "Started"), None)
                return {
                    "pointer_to_100_s": round(seconds, 2),
                    "pointer_to_started_s": round(first - t0, 2) if first is not None else None,
                    "outcome": progressive.get("outcome"),
                    "stages": stage_seconds(progressive),
                }

            values = run.measure("progressive", "pointer_to_100", rep, promote)
            rows.append(values)
            print(
                f"[bench] rollout {rep}: pointer → 100% in {values['pointer_to_100_s']} s; stages "
                + ", ".join(f"{s['stage']} {s['seconds']} s" for s in values["stages"]),
                flush=True,
            )
            current = target
            time.sleep(poll_interval + 1)
    finally:
        stop.set()
        thread.join(timeout=30)
        stats = load.stop()
        watcher.stop()
    return {
        "strategy": STRATEGY,
        "poll_interval_s": poll_interval,
        "load_workers": 4,
        "requests_ok": sum(1 for r in stats.requests if r.ok),
        "requests_failed": stats.failed,
        "episodes_played": len(stats.episodes),
        "rollouts": rows,
    }


# ---------------------------------------------------------------------------------------------- report
def stage_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Median and min-max seconds per stage over the rollouts."""
    per: dict[str, list[float]] = {}
    for row in rows:
        for stage in row["stages"]:
            if stage["seconds"] is not None:
                per.setdefault(stage["stage"], []).append(stage["seconds"])
    return {name: method.spread(values) for name, values in per.items()}


def to_markdown(r: dict[str, Any]) -> str:
    s, serving, rollout = r["summary"], r["serving"], r["rollout"]
    ratios = r["targets"]["ratios_to_champion_only"]
    lines = [
        "# Progressive delivery: serving cost of a challenger, and pointer → 100% through canary steps",
        "",
        f"{r['started_at']} (commit {r['git']['commit'][:10]}), {r['machine']['cores']} cores "
        f"({r['machine']['model']}), one replica per variant, direct ingress + HAProxy, wrk "
        f"{r['duration_s']} s per point, {r['method']['repeats']} interleaved rounds after a warm-up, "
        f"{'pinned' if r['pinning']['enabled'] else 'not pinned'}; {method.load_sentence(r)}.",
        "",
        "## Serving cost (req/s, p50, p99; ratio of req/s medians to champion only)",
        "",
        "| variant | c16 req/s | c16 p50 ms | c16 p99 ms | c16 ratio | c1 req/s | c1 p50 ms | c1 ratio "
        "| RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, label in serving["labels"].items():
        v = s[variant]
        ratio = ratios.get(variant, {"c16": 1.0, "c1": 1.0})
        lines.append(
            f"| {label} | {method.fmt_spread(v['c16']['rps'], 0)} "
            f"| {method.fmt_spread(v['c16']['p50_ms'], 2)} "
            f"| {method.fmt_spread(v['c16']['p99_ms'], 1)} | {ratio.get('c16', float('nan')):.2f}x "
            f"| {method.fmt_spread(v['c1']['rps'], 0)} | {method.fmt_spread(v['c1']['p50_ms'], 2)} "
            f"| {ratio.get('c1', float('nan')):.2f}x | {serving['replica_rss_mib'].get(variant)} |"
        )
    direct = serving["split_direct"]
    logged = [c["decision_log"]["challenger_share"] for c in serving["split_checks"]]
    lines += [
        "",
        f"Target: canary at 50% ≥ {r['targets']['canary_ratio_target']}x champion only at 16 connections: "
        f"**{'met' if r['targets']['canary_c16_met'] else 'not met'}**. "
        "Shadow's cost is reported, no target. RSS: each variant's replica after warm-up; the benchmark's "
        "policies are tiny (one 16-unit layer), so a second slot's weights are kilobytes and any RSS "
        "difference is the loaded code paths and allocator noise.",
        f"Split: the challenger answered {direct['challenger_share']:.1%} of {direct['requests']} direct "
        f"requests (routing predicts {direct['expected_share']:.1%}); share of the wrk decisions logged as "
        f"challenger per canary point: {', '.join(f'{x:.1%}' if x is not None else '?' for x in logged)}.",
        "",
        "## Pointer → 100% (operator engine, three steps)",
        "",
        f"Poll {rollout['poll_interval_s']} s; settle {STRATEGY['settleSeconds']} s; shadow min "
        f"{STRATEGY['shadow']['minEpisodes']} episodes; off-policy gate off; steps: "
        + "; ".join(
            f"{st['weight']:.0%} hold {st['holdSeconds']} s, min {st['minEpisodes']} episodes per slot"
            for st in STRATEGY["steps"]
        )
        + f". Load: {rollout['load_workers']} workers playing corridor episodes with feedback; "
        f"{rollout['requests_ok']} requests answered, **{rollout['requests_failed']} failed**.",
        "",
        "| measure | median (min-max) |",
        "|---|---|",
        f"| pointer written → new champion at 100% ({len(rollout['rollouts'])} rollouts) "
        f"| **{method.fmt_spread(s['progressive']['pointer_to_100']['pointer_to_100_s'], 1, ' s')}** |",
        *[
            f"| stage {name} | {method.fmt_spread(stat, 1, ' s')} |"
            for name, stat in r["stage_summary"].items()
        ],
        "",
        "Every point (load before it):",
        "",
        *[
            f"- {p['variant']} {p['point']} round {p['repeat']}: "
            + (
                f"{p['values']['pointer_to_100_s']} s"
                if "pointer_to_100_s" in p["values"]
                else f"{p['values']['rps']} req/s, p99 {p['values']['p99_ms']} ms"
            )
            + f"; load {p['load_before'][0]}, busy {p['cpu_busy_before']}"
            for p in r["points"]
        ],
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.progressive_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk point")
    parser.add_argument("--repeats", type=int, default=method.MIN_REPEATS, help="rounds (>= 3)")
    parser.add_argument("--rollouts", type=int, default=method.MIN_REPEATS, help="timed rollouts (>= 3)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="the engine's poll interval")
    parser.add_argument("--quick", action="store_true", help="1 round, 3 s points, 1 rollout; never quiet")
    parser.add_argument("--no-pin", action="store_true", help="do not pin wrk and the servers to CPU sets")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.rollouts, args.duration = min(args.repeats, 1), min(args.rollouts, 1), 3.0
    try:
        repeats = method.check_repeats(min(args.repeats, args.rollouts), allow_fewer=args.quick)
    except ValueError as exc:
        parser.error(str(exc).replace("--repeats", "--repeats/--rollouts"))
    pinning = method.plan_pinning(not args.no_pin)
    run = method.Run("progressive", repeats=repeats, pinning=pinning)
    if args.quick:
        run.notes.append("--quick: a smoke run (fewer repeats, shorter points); never quiet")
    if args.rollouts < method.MIN_REPEATS:
        run.notes.append(f"only {args.rollouts} timed rollout(s): fewer than {method.MIN_REPEATS}")
    run.notes.append("rollouts run one after another (a single variant): nothing to interleave")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"
    from bench.rollout_bench import build_ppo_checkpoints
    from bench.serve_bench import FAST_INGRESS_ENV, Cluster

    workdir = Path(tempfile.mkdtemp(prefix="rlops-progressive-bench-"))
    with ExitStack() as stack:
        cluster = Cluster(FAST_INGRESS_ENV)
        stack.callback(cluster.stop)
        root = str(workdir / "store")
        with cluster.attached():
            uris = build_ppo_checkpoints(root, 3, experiment="progressive-bench")
        serving = measure_serving(cluster, run, uris, f"{root}/serving-logs", repeats, args.duration, pinning)
        rollout = measure_rollouts(cluster, run, uris, root, args.rollouts, args.poll_interval)
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    summary = run.summary([*METRICS, "pointer_to_100_s"])
    results = {
        **run.header(),
        "duration_s": args.duration,
        "quick": args.quick,
        "summary": summary,
        "targets": serving_targets(summary),
        "serving": serving,
        "rollout": rollout,
        "stage_summary": stage_summary(rollout["rollouts"]),
        "points": run.points,
    }
    write(args.out, results)
    print(to_markdown(results))
    return results


def write(out: Path, results: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "progressive.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "progressive.md").write_text(to_markdown(results))


if __name__ == "__main__":
    main(sys.argv[1:])
