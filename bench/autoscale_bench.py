"""Serve autoscaling: per-replica capacity, replica cold start, and how fast replicas follow a load step.

Against a local Ray cluster started here (token auth, Serve's default proxy on a loopback port): trains
one tiny corridor PPO checkpoint, then

1. **capacity**: one fixed replica, closed-loop clients at 1, 2, 4, 8 and 16 connections (req/s, p50,
   p99): the cost per request and where a replica stops gaining throughput;
2. **cold start**: a second replica added by config; seconds until it is RUNNING, and the checkpoint
   fetch + verify + load time it reports in ``/metadata.load_seconds``;
3. **step**: the deployment with the ``autoscaling_config`` shipped in ``workloads/serve_config.yaml``
   (replica CPUs lowered so ``max_replicas`` fit here), one client, then a step to ``--step-clients``;
   seconds to the autoscaler's decision, to the first new replica and to the target count (both
   RUNNING), p50/p99 during the ramp,
   then back to one client: seconds until the count is back at ``min_replicas``. Failed requests
   are counted throughout.

Every point is repeated (``--repeats``, at least 3 unless ``--quick``) and recorded with the load
average before it, the way ``bench/method.py`` says; the run is "quiet" only if every point started on
an idle machine. Only loopback is used. Takes about 10 minutes with 3 repeats (scale-down waits for
``downscale_delay_s``).

    python -m bench.autoscale_bench [--out bench/results] [--step-clients 12] [--repeats 3]
    python -m bench.autoscale_bench --quick --repeats 1 --out /tmp/autoscale   # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import method
from rlops_core.serve_client import ServeClient

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SERVE_CONFIG = REPO / "workloads" / "serve_config.yaml"
APP, DEPLOYMENT = "bench-autoscale", "PolicyServer"
# Ray CPUs per replica here: low, so that max_replicas fit a 4-CPU local cluster on a small machine.
REPLICA_CPUS = 0.25


# ---------------------------------------------------------------- load
@dataclass(frozen=True)
class Sample:
    """One request: start (monotonic, seconds since the load began), latency, outcome, checkpoint."""

    started: float
    latency: float
    ok: bool
    error: str = ""
    checkpoint: str = ""


@dataclass
class StepLoad:
    """Closed-loop HTTP clients against the policy route; the number of clients can change at any time.

    Each client thread sends ``{"state": [x]}`` and, every ``batch_every`` requests (0: never), one
    ``observations`` request of ``batch_size`` observations (a longer request, so that some are in
    flight when a replica stops). Every answer is recorded with its ``x-rlops-checkpoint`` header.
    """

    endpoint: str
    batch_every: int = 0
    batch_size: int = 256
    timeout_s: float = 30.0
    samples: list[Sample] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[tuple[threading.Thread, threading.Event]] = field(default_factory=list)

    @property
    def clients(self) -> int:
        return len(self._workers)

    def set_clients(self, n: int) -> None:
        """Start or stop client threads until ``n`` run (a stopped client finishes its request first)."""
        while len(self._workers) < n:
            stop = threading.Event()
            thread = threading.Thread(
                target=self._client, args=(len(self._workers), stop), daemon=True, name="step-load"
            )
            self._workers.append((thread, stop))
            thread.start()
        while len(self._workers) > n:
            thread, stop = self._workers.pop()
            stop.set()
            thread.join(timeout=self.timeout_s + 5)

    def stop(self) -> list[Sample]:
        self.set_clients(0)
        return self.snapshot()

    def snapshot(self, since: float = 0.0, until: float = math.inf) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if since <= s.started < until]

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _client(self, index: int, stop: threading.Event) -> None:
        url = self.endpoint.rstrip("/") + "/"
        n = 0
        with httpx.Client(timeout=self.timeout_s) as client:
            while not stop.is_set():
                n += 1
                if self.batch_every and n % self.batch_every == 0:
                    body: dict[str, Any] = {"observations": [[float(i % 7)] for i in range(self.batch_size)]}
                else:
                    body = {"state": [float((index + n) % 7)]}
                started = time.monotonic()
                try:
                    resp = client.post(url, json=body)
                    ok = resp.status_code == 200
                    error = "" if ok else f"HTTP {resp.status_code}: {resp.text[:200]}"
                    checkpoint = resp.headers.get("x-rlops-checkpoint", "")
                except httpx.HTTPError as exc:
                    ok, error, checkpoint = False, f"{type(exc).__name__}: {exc}", ""
                sample = Sample(started - self.t0, time.monotonic() - started, ok, error, checkpoint)
                with self._lock:
                    self.samples.append(sample)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """Count, failures, throughput over the samples' span, and latency quantiles (ms) of the successes."""
    if not samples:
        return {"requests": 0, "failed": 0, "rps": 0.0, "p50_ms": None, "p99_ms": None}
    lat = sorted(s.latency for s in samples if s.ok)
    span = max(s.started + s.latency for s in samples) - min(s.started for s in samples)

    def q(p: float) -> float | None:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None

    return {
        "requests": len(samples),
        "failed": sum(1 for s in samples if not s.ok),
        "rps": round(len(samples) / span, 1) if span > 0 else 0.0,
        "p50_ms": q(0.50),
        "p99_ms": q(0.99),
    }


# ---------------------------------------------------------------- Serve through the dashboard REST API
@dataclass
class ServeRest:
    """Replica counts and app updates through the dashboard's Serve REST API (the shared ServeClient)."""

    client: ServeClient

    def put_app(self, app: dict[str, Any]) -> None:
        """Deploy ``app`` declaratively, keeping every other declaratively deployed application."""
        self.client.upsert(app)

    def delete_app(self, name: str) -> None:
        details = self.client.details()
        if name not in details.applications:
            return
        http = details.http_options or {}
        options = {k: http[k] for k in ("host", "port") if http.get(k) is not None}
        self.client.deploy(details.declarative_configs(skip={name}), http_options=options)

    def replica_states(self, app: str, deployment: str = DEPLOYMENT) -> list[str]:
        """The state of every replica Serve knows (STARTING, RUNNING, STOPPING, ...)."""
        found = self.client.application(app)
        dep = found.deployments.get(deployment) if found is not None else None
        replicas = (dep.model_extra or {}).get("replicas") if dep is not None else None
        return [str(r.get("state")) for r in replicas or []]

    def target_replicas(self, app: str, deployment: str = DEPLOYMENT) -> int:
        """The replica count Serve currently aims for (the autoscaler's latest decision)."""
        found = self.client.application(app)
        dep = found.deployments.get(deployment) if found is not None else None
        return int((dep.model_extra or {}).get("target_num_replicas") or 0) if dep is not None else 0

    def running(self, app: str, deployment: str = DEPLOYMENT) -> int:
        return self.replica_states(app, deployment).count("RUNNING")

    def app_status(self, app: str) -> str:
        found = self.client.application(app)
        return found.status if found is not None else ""


def shipped_autoscaling_config() -> dict[str, Any]:
    """The policy deployment's ``autoscaling_config`` in workloads/serve_config.yaml."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    for app in config["applications"]:
        for dep in app.get("deployments") or []:
            if dep.get("name") == DEPLOYMENT and dep.get("autoscaling_config"):
                return dict(dep["autoscaling_config"])
    raise SystemExit(f"{SERVE_CONFIG} has no autoscaling_config for {DEPLOYMENT}")


def policy_app(
    checkpoint_uri: str,
    *,
    name: str = APP,
    num_replicas: int | None = None,
    autoscaling: dict[str, Any] | None = None,
    replica_cpus: float = REPLICA_CPUS,
) -> dict[str, Any]:
    """A declarative app config for the policy server (fixed replicas or autoscaled, not both)."""
    dep: dict[str, Any] = {
        "name": DEPLOYMENT,
        "ray_actor_options": {"num_cpus": replica_cpus},
        "graceful_shutdown_wait_loop_s": 1.0,
        "graceful_shutdown_timeout_s": 10.0,
        "user_config": {"checkpoint_uri": checkpoint_uri},
    }
    if autoscaling is not None:
        dep["autoscaling_config"] = autoscaling
    else:
        dep["num_replicas"] = num_replicas or 1
    return {
        "name": name,
        "route_prefix": f"/{name}",
        "import_path": "workloads.serve_app:app",
        "deployments": [dep],
    }


def wait_until(fn: Any, timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll ``fn`` until truthy; return the seconds it took, or raise naming ``what``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if fn():
            return time.monotonic() - start
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def load_now() -> float:
    return method.load_average()[0]


# ---------------------------------------------------------------- the three measurements
CAPACITY_METRICS = ("rps", "p50_ms", "p99_ms", "failed")
COLD_METRICS = ("seconds_to_running", "checkpoint_load_seconds")
STEP_METRICS = (
    "seconds_to_scale_up_decision",
    "seconds_to_first_new_replica",
    "seconds_to_target_replicas",
    "ramp_p50_ms",
    "ramp_p99_ms",
    "ramp_rps",
    "seconds_back_to_min",
    "requests",
    "failed",
)


def measure_capacity(run: method.Run, rest: ServeRest, url: str, levels: list[int], seconds: float) -> None:
    """One fixed replica; each repeat walks every client count (warm-up 1 s before each point)."""
    load = StepLoad(url)
    try:
        for repeat in range(run.repeats):
            for clients in levels:

                def point(clients: int = clients) -> dict[str, Any]:
                    load.set_clients(clients)
                    time.sleep(1.0)  # warm-up, not measured
                    since = load.now()
                    time.sleep(seconds)
                    return summarize(load.snapshot(since, load.now()))

                run.measure("capacity", f"{clients} clients", repeat, point)
    finally:
        load.stop()


def measure_cold_start(run: method.Run, rest: ServeRest, url: str, checkpoint: str) -> None:
    """A second replica by config (1 -> 2), then back to 1; per repeat."""
    for repeat in range(run.repeats):

        def point() -> dict[str, Any]:
            start = time.monotonic()
            rest.put_app(policy_app(checkpoint, num_replicas=2))
            wait_until(lambda: rest.running(APP) == 2, 300, "the second replica to be RUNNING")
            running_s = time.monotonic() - start  # from the PUT (config change) to RUNNING
            seen: dict[str, dict[str, Any]] = {}

            def both_seen() -> bool:
                try:
                    meta = httpx.get(f"{url}/metadata", timeout=10).json()
                    seen[meta["replica"]] = meta
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                return len(seen) >= 2

            wait_until(both_seen, 120, "answers from both replicas", interval=0.05)
            newest = max(seen.values(), key=lambda m: m["loaded_at"])
            return {
                "seconds_to_running": round(running_s, 2),
                "checkpoint_load_seconds": newest["load_seconds"],
            }

        run.measure("cold start", "1 -> 2 replicas", repeat, point)
        rest.put_app(policy_app(checkpoint, num_replicas=1))
        wait_until(lambda: rest.replica_states(APP) == ["RUNNING"], 300, "back to one replica")


def measure_step(
    run: method.Run,
    rest: ServeRest,
    url: str,
    checkpoint: str,
    step_clients: int,
    autoscaling: dict[str, Any],
) -> int:
    """Per repeat: one client until the count settles at min, a step to ``step_clients``, back to one."""
    lo, hi = int(autoscaling.get("min_replicas", 1)), int(autoscaling["max_replicas"])
    target = min(hi, max(lo, math.ceil(step_clients / float(autoscaling.get("target_ongoing_requests", 2)))))
    rest.put_app(policy_app(checkpoint, autoscaling=autoscaling))
    wait_until(lambda: rest.app_status(APP) == "RUNNING", 300, "the autoscaled app")
    settle_s = float(autoscaling.get("look_back_period_s", 30)) + 2
    down_timeout = float(autoscaling.get("downscale_delay_s", 600)) + 300
    for repeat in range(run.repeats):
        load = StepLoad(url)
        load.set_clients(1)
        wait_until(
            lambda: rest.replica_states(APP) == ["RUNNING"] * lo, down_timeout, f"{lo} replicas at rest"
        )
        time.sleep(settle_s)

        def point(load: StepLoad = load) -> dict[str, Any]:
            baseline = rest.running(APP)
            step_at = load.now()
            load.set_clients(step_clients)
            decided = wait_until(lambda: rest.target_replicas(APP) > baseline, 300, "a scale-up decision")
            first = decided + wait_until(lambda: rest.running(APP) > baseline, 300, "a new replica")
            reached = first + wait_until(lambda: rest.running(APP) >= target, 300, f"{target} replicas")
            time.sleep(5)
            ramp = summarize(load.snapshot(step_at, load.now()))
            load.set_clients(1)
            down = wait_until(
                lambda: rest.replica_states(APP) == ["RUNNING"] * lo, down_timeout, "scale down"
            )
            time.sleep(2)
            samples = load.stop()
            failed = [s for s in samples if not s.ok]
            return {
                "seconds_to_scale_up_decision": round(decided, 2),
                "seconds_to_first_new_replica": round(first, 2),
                "seconds_to_target_replicas": round(reached, 2),
                "ramp_p50_ms": ramp["p50_ms"],
                "ramp_p99_ms": ramp["p99_ms"],
                "ramp_rps": ramp["rps"],
                "seconds_back_to_min": round(down, 2),
                "requests": len(samples),
                "failed": len(failed),
                "errors": sorted({s.error for s in failed})[:5],
            }

        try:
            run.measure("step", f"1 -> {step_clients} clients", repeat, point)
        finally:
            load.stop()
    return target


# ---------------------------------------------------------------- report
def to_markdown(r: dict[str, Any]) -> str:
    cap = r["summary"]["capacity"]
    cold = r["summary"]["cold start"]["1 -> 2 replicas"]
    step = r["summary"]["step"][f"1 -> {r['step_clients']} clients"]
    quiet = "quiet" if r["quiet"] else "LOADED"
    lines = [
        f"# Serve autoscaling benchmark ({r['started_at']}, {quiet})",
        "",
        f"{r['machine'].get('cores')} CPUs; Serve's default proxy on loopback; closed-loop httpx clients "
        f"(one request in flight per client). Median (min-max) of {r['method']['repeats']} repeats; "
        f"{method.load_sentence(r)}. The load before each point is in autoscale.json.",
        "",
        "## Capacity of one replica",
        "",
        "| clients | req/s | p50 ms | p99 ms | failed |",
        "|---:|---:|---:|---:|---:|",
    ]
    for clients in r["levels"]:
        p = cap[f"{clients} clients"]
        lines.append(
            f"| {clients} | {method.fmt_spread(p['rps'])} | {method.fmt_spread(p['p50_ms'])} "
            f"| {method.fmt_spread(p['p99_ms'])} | {int(p['failed']['max'])} |"
        )
    load_s = method.fmt_spread(cold["checkpoint_load_seconds"], 2, " s")
    running_s = method.fmt_spread(cold["seconds_to_running"], 2, " s")
    lines += [
        "",
        "## Cold start of a replica",
        "",
        f"Config change to the new replica RUNNING: {running_s}; its checkpoint fetch + verify + load: "
        f"{load_s}.",
        "",
        "## Step in load (the autoscaling_config of workloads/serve_config.yaml)",
        "",
        f"`{json.dumps(r['autoscaling_config'])}`, replica CPUs {r['replica_cpus']}",
        "",
        "| measure | value |",
        "|---|---:|",
    ]
    rows = [
        ("seconds to the autoscaler's scale-up decision", "seconds_to_scale_up_decision", 2),
        ("seconds to the first new replica RUNNING", "seconds_to_first_new_replica", 2),
        (f"seconds to {r['target_replicas']} replicas RUNNING", "seconds_to_target_replicas", 2),
        ("p50 ms from the step to 5 s after the target", "ramp_p50_ms", 1),
        ("p99 ms from the step to 5 s after the target", "ramp_p99_ms", 1),
        ("seconds back to min_replicas after the drop to 1 client", "seconds_back_to_min", 2),
        ("requests per repeat", "requests", 0),
        ("failed requests per repeat", "failed", 0),
    ]
    lines += [f"| {label} | {method.fmt_spread(step[key], digits)} |" for label, key, digits in rows]
    lines.append("")
    return "\n".join(lines)


def assemble(
    record: method.Run,
    levels: list[int],
    seconds: float,
    step_clients: int,
    target: int,
    autoscaling: dict[str, Any],
) -> dict[str, Any]:
    """The results file: the method's header (load record, ``quiet`` verdict), the settings, the
    median and min-max of every point over its repeats, and every repeat's raw values."""
    return {
        **record.header(),
        "levels": levels,
        "seconds_per_capacity_point": seconds,
        "step_clients": step_clients,
        "target_replicas": target,
        "replica_cpus": REPLICA_CPUS,
        "autoscaling_config": autoscaling,
        "summary": {
            "capacity": record.summary(CAPACITY_METRICS)["capacity"],
            "cold start": record.summary(COLD_METRICS)["cold start"],
            "step": record.summary(STEP_METRICS)["step"],
        },
        "points": record.points,
    }


def run(out_dir: Path, step_clients: int, seconds: float, levels: list[int], repeats: int) -> dict[str, Any]:
    from rlops_demo.cluster import LocalRayCluster, free_port

    record = method.Run("autoscale", repeats=repeats)
    workdir = Path(tempfile.mkdtemp(prefix="rlops-autoscale-bench-"))
    cluster = LocalRayCluster(num_cpus=4, log_path=workdir / "head.log")
    # Ray reads its token settings when first imported: the client settings go in before that.
    os.environ.update(cluster.client_env())
    import ray
    from ray import serve

    from bench.rollout_bench import build_ppo_checkpoints

    autoscaling = shipped_autoscaling_config()
    try:
        cluster.start()
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}/{APP}"
        rest = ServeRest(ServeClient(cluster.dashboard_url, cluster.token, timeout=30))
        (checkpoint,) = build_ppo_checkpoints(str(workdir / "ckpt"), 1, experiment="autoscale-bench")
        rest.put_app(policy_app(checkpoint, num_replicas=1))
        wait_until(lambda: rest.replica_states(APP) == ["RUNNING"], 300, "one replica")
        httpx.post(f"{url}/", json={"state": [0.0]}, timeout=30).raise_for_status()  # warm-up
        measure_capacity(record, rest, url, levels, seconds)
        measure_cold_start(record, rest, url, checkpoint)
        target = measure_step(record, rest, url, checkpoint, step_clients, autoscaling)
        rest.delete_app(APP)
    finally:
        with contextlib.suppress(Exception):  # the cluster goes away next anyway
            serve.shutdown()
        with contextlib.suppress(Exception):
            ray.shutdown()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    result = assemble(record, levels, seconds, step_clients, target, autoscaling)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "autoscale.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "autoscale.md").write_text(to_markdown(result))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for autoscale.json and .md")
    parser.add_argument("--step-clients", type=int, default=12, help="clients after the step")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per capacity point")
    parser.add_argument("--levels", default="1,2,4,8,16", help="capacity points (clients)")
    parser.add_argument("--repeats", type=int, default=method.MIN_REPEATS, help="repeats of every point")
    parser.add_argument("--quick", action="store_true", help="allow fewer repeats (a smoke run, never quiet)")
    args = parser.parse_args(argv)
    repeats = method.check_repeats(args.repeats, allow_fewer=args.quick)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    result = run(args.out, args.step_clients, args.seconds, levels, repeats)
    print(to_markdown(result))
    return result


if __name__ == "__main__":
    main()
