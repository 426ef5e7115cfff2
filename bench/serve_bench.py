"""Serving benchmark: this app against a bare FastAPI process, RLlib's Serve example and the tutorial pattern.

``python -m bench.serve_bench`` (or ``main()``) trains a corridor policy with the tutorial settings, then
measures req/s and p50/p99 latency at 1 and 16 concurrent connections for each server in one run, plus
replica cold start and hot-swap time, and writes ``bench/results/serve.json`` and ``serve.md``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

TUTORIAL = {"lr": 0.01, "fcnet_hiddens": [20, 20], "rollout_fragment_length": 10, "train_batch": 400}


def corridor_config(seed: int = 0, num_env_runners: int = 1) -> Any:
    """PPOConfig for the corridor with the reference tutorial's settings (new API stack, torch)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    return (
        PPOConfig()
        .environment("corridor")
        .framework("torch")
        .env_runners(
            num_env_runners=num_env_runners, rollout_fragment_length=TUTORIAL["rollout_fragment_length"]
        )
        .training(lr=TUTORIAL["lr"], train_batch_size_per_learner=TUTORIAL["train_batch"])
        .rl_module(model_config={"fcnet_hiddens": TUTORIAL["fcnet_hiddens"], "vf_share_layers": True})
        .debugging(seed=seed)
    )


def evaluate_corridor(checkpoint: str, episodes: int = 400, seed: int = 0) -> dict[str, float]:
    """Play ``episodes`` corridor episodes with sampled actions from the served policy code (no HTTP)."""
    from workloads.envs.corridor import CorridorEnv
    from workloads.serving.policy import load_policy

    policy = load_policy(checkpoint)
    envs = [CorridorEnv() for _ in range(episodes)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    returns, reached, active = [0.0] * episodes, [False] * episodes, list(range(episodes))
    while active:
        actions = policy.act([obs[i] for i in active], explore=True)
        still = []
        for i, result in zip(active, actions, strict=True):
            obs[i], reward, terminated, truncated, _ = envs[i].step(result.action)
            returns[i] += reward
            reached[i] = reached[i] or terminated
            if not (terminated or truncated):
                still.append(i)
        active = still
    return {"success_rate": sum(reached) / episodes, "mean_return": sum(returns) / episodes}


def _save(algo: Any, path: Path, name: str, iteration: int, metric: float) -> str:
    import shutil

    from rlops_core.checkpoints import build_manifest, write_manifest

    shutil.rmtree(path, ignore_errors=True)
    algo.save_to_path(str(path))
    manifest = build_manifest(
        str(path),
        metric_name="env_runners/episode_return_mean",
        metric_value=metric,
        env_id="corridor",
        trial_id=f"bench-{name}",
        experiment="serve-fixture",
        extra={"iterations": iteration},
    )
    write_manifest(manifest)
    return str(path)


def train_corridor_checkpoints(
    root: Path,
    *,
    iterations: int = 10,
    early_at: int = 2,
    num_env_runners: int = 1,
    max_iterations: int = 30,
    min_success: float = 0.997,
    min_return: float = 9.4,
) -> dict[str, str]:
    """Train PPO on the corridor (Ray must be initialised) and save two manifested checkpoints.

    Returns ``{"early": uri, "final": uri}``: the policy after ``early_at`` iterations and the final one,
    each an ``Algorithm.save_to_path()`` directory with its ``rlops.json``. The final policy is trained
    for ``iterations`` and then, up to ``max_iterations``, until 1000 locally played episodes reach the
    goal at ``min_success`` with mean return ``min_return`` (PPO's outcome varies from run to run; the
    serving tests need a policy that has learned the aliased state).
    """
    from ray.rllib.algorithms.ppo import PPO

    from workloads.envs import register_with_ray

    register_with_ray()
    algo = PPO(config=corridor_config(num_env_runners=num_env_runners))
    out: dict[str, str] = {}
    try:
        for i in range(1, max_iterations + 1):
            result = algo.train()
            metric = float(result["env_runners"]["episode_return_mean"])
            if i == early_at:
                out["early"] = _save(algo, root / "corridor-early", "early", i, metric)
            if i >= iterations:
                out["final"] = _save(algo, root / "corridor-final", "final", i, metric)
                score = evaluate_corridor(out["final"], episodes=1000)
                if score["success_rate"] >= min_success and score["mean_return"] >= min_return:
                    break
    finally:
        algo.stop()
    return out


# --------------------------------------------------------------------------------------------------
# The compared servers. Each is a Serve app builder (import path + args) or, for the bare baseline, a
# uvicorn factory; all serve `{"state": [x]}` -> `{"action": a}` with the same trained RLModule.
# --------------------------------------------------------------------------------------------------


def build_rllib_example(args: dict[str, str]) -> Any:
    """RLlib's own pattern (rllib/examples/ray_serve): RLModule from its checkpoint, one request at a time."""
    import json

    import numpy as np
    import torch
    from ray import serve
    from ray.rllib.core import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule
    from starlette.requests import Request

    @serve.deployment(name="RLlibExample", ray_actor_options={"num_cpus": 0.5})
    class RLlibExample:
        def __init__(self, rl_module_checkpoint: str) -> None:
            self.rl_module = RLModule.from_checkpoint(rl_module_checkpoint)

        async def __call__(self, request: Request) -> dict[str, int]:
            body = json.loads((await request.body()).decode("utf-8"))
            obs = body["state"] if "state" in body else body["observation"]
            out = self.rl_module.forward_inference(
                batch={"obs": torch.from_numpy(np.array([obs], np.float32))}
            )
            return {"action": int(np.argmax(out[Columns.ACTION_DIST_INPUTS][0]))}

    module_dir = str(Path(args["checkpoint"], "learner_group", "learner", "rl_module", "default_policy"))
    return RLlibExample.bind(module_dir)


def build_tutorial(args: dict[str, str]) -> Any:
    """The reference tutorial's pattern: a full Algorithm restored in every replica, no batching."""
    import torch
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(name="TutorialPolicy", ray_actor_options={"num_cpus": 0.5})
    class TutorialPolicy:
        def __init__(self, checkpoint: str) -> None:
            from ray.rllib.algorithms.algorithm import Algorithm

            from workloads.envs import register_with_ray

            register_with_ray()
            started = time.perf_counter()
            self.algo = Algorithm.from_checkpoint(checkpoint)
            self.load_seconds = time.perf_counter() - started
            self.count = 0

        async def __call__(self, request: Request) -> dict[str, Any]:
            body = await request.json()
            self.count += 1
            module = self.algo.get_module()
            with torch.no_grad():
                out = module.forward_inference({"obs": torch.tensor([body["state"]], dtype=torch.float32)})
            logits = out["action_dist_inputs"]
            action = int(torch.distributions.Categorical(logits=logits).sample()[0])
            return {"action": action, "count": self.count, "load_seconds": self.load_seconds}

    return TutorialPolicy.bind(args["checkpoint"])


def make_bare_app() -> Any:
    """A bare uvicorn + FastAPI process with the same policy code (``uvicorn --factory``)."""
    import os

    import torch
    from fastapi import FastAPI

    from workloads.serving.api import ActRequest, parse_observation
    from workloads.serving.policy import load_policy

    torch.set_num_threads(1)
    policy = load_policy(os.environ["RLOPS_BENCH_CHECKPOINT"])
    app = FastAPI()
    state = {"count": 0}

    async def act(body: ActRequest) -> dict[str, Any]:
        obs = parse_observation(body.single, policy.observation_space, "state")
        result = policy.act([obs], explore=not body.deterministic)[0]
        state["count"] += 1
        return {"action": result.action, "count": state["count"]}

    act.__annotations__ = {"body": ActRequest, "return": dict}  # this module postpones annotations
    app.api_route("/", methods=["GET", "POST"])(act)
    return app


# --------------------------------------------------------------------------------------------------
# Cluster, deployment and load generation.
# --------------------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST_INGRESS_ENV = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}


def _fast_ingress_env(extra_env: dict[str, str]) -> tuple[dict[str, str], list[Path]]:
    """HAProxy needs short socket paths: its files go to a fresh ``/tmp/rhp*`` folder (removed on stop)."""
    import uuid

    from rlops_demo.cluster import free_port

    if extra_env.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        return dict(extra_env), []
    ha_dir = Path(f"/tmp/rhp{uuid.uuid4().hex[:6]}")
    env = dict(
        extra_env,
        RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=str(ha_dir / "haproxy.cfg"),
        RAY_SERVE_HAPROXY_SOCKET_PATH=str(ha_dir / "admin.sock"),
        RAY_SERVE_HAPROXY_SERVER_STATE_BASE=str(ha_dir),
        RAY_SERVE_HAPROXY_SERVER_STATE_FILE=str(ha_dir / "server-state"),
        RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()),
        RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()),
    )
    return env, [ha_dir]


class Cluster:
    """The shared local Ray head (``rlops_demo.cluster``) with extra env vars, attached with ``ray.init``.

    Apps are deployed through the shared Serve REST client (``rlops_core.serve_client``).
    """

    def __init__(self, extra_env: dict[str, str], num_cpus: int = 4) -> None:
        import os
        import uuid

        import ray

        from rlops_demo.cluster import LocalRayCluster, free_port

        env, extra_dirs = _fast_ingress_env(extra_env)
        name = f"rlops-bench-{uuid.uuid4().hex[:6]}"
        self.head = LocalRayCluster(
            num_cpus=num_cpus,
            env=env,
            cwd=REPO_ROOT,
            log_path=Path("/tmp") / f"{name}.log",
            temp_dir=Path("/tmp") / name,
            cleanup_dirs=extra_dirs,
        ).start()
        os.environ.update(RAY_AUTH_TOKEN=self.head.token, RAY_AUTH_MODE="token")
        self.token = self.head.token
        self.http_port = free_port()
        self.client = self.head.serve_client()
        ray.init(address=self.head.address, logging_level="WARNING", log_to_driver=False)
        self.apps: list[dict[str, Any]] = []

    def deploy(self, app: dict[str, Any], timeout: float = 300.0) -> float:
        """Add or replace one app (a declarative PUT, as KubeRay does); wait until RUNNING; return seconds."""
        self.apps = [a for a in self.apps if a["name"] != app["name"]] + [app]
        started = time.perf_counter()
        self.client.deploy(self.apps, http_options={"host": "127.0.0.1", "port": self.http_port})
        self.client.wait_running(
            app["name"], timeout=timeout, interval=0.2, fail_on=("DEPLOY_FAILED", "UNHEALTHY")
        )
        return time.perf_counter() - started

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.http_port}/{name}"

    def stop(self) -> None:
        import ray

        ray.shutdown()
        self.client.close()
        self.head.stop()


def _wait_http(url: str, timeout: float) -> None:
    """Wait until ``url`` answers 2xx (a server process coming up); fail naming the last error."""
    from rlops_core.serve_client import ServeError, ServeTimeout, get_json

    deadline = time.monotonic() + timeout
    while True:
        try:
            get_json(url, timeout=5, max_bytes=16 * 1024 * 1024)
            return
        except ServeError as exc:
            if time.monotonic() > deadline:
                raise ServeTimeout(f"{url} did not answer within {timeout:g} s: {exc.message}") from None
        time.sleep(0.5)


def app_configs(checkpoint: str) -> dict[str, dict[str, Any]]:
    """Serve app configs for the three Serve-based servers."""
    bench_env = {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}
    return {
        "rlops": {
            "name": "rlops",
            "route_prefix": "/rlops",
            "import_path": "workloads.serve_app:app",
            "deployments": [{"name": "PolicyServer", "user_config": {"checkpoint_uri": checkpoint}}],
        },
        "rllib_example": {
            "name": "rllib_example",
            "route_prefix": "/rllib_example",
            "import_path": "bench.serve_bench:build_rllib_example",
            "args": {"checkpoint": checkpoint},
            "runtime_env": bench_env,
        },
        "tutorial": {
            "name": "tutorial",
            "route_prefix": "/tutorial",
            "import_path": "bench.serve_bench:build_tutorial",
            "args": {"checkpoint": checkpoint},
            "runtime_env": bench_env,
        },
    }


WRK_SCRIPT = (
    'wrk.method = "POST"\nwrk.body = \'{"state": [1]}\'\nwrk.headers["Content-Type"] = "application/json"\n'
)


def _ms(text: str) -> float:
    import re

    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(url: str, connections: int, duration: float) -> dict[str, Any]:
    """One wrk run (loopback only); req/s, p50/p99 in ms, errors."""
    import re
    import shutil
    import subprocess
    import tempfile

    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("the benchmark only loads loopback servers")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT)
        script = fh.name
    threads = 1 if connections == 1 else 2
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        script,
        url + "/",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {
        "rps": round(rps, 1),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "requests": total,
        "errors": errors,
    }


def measure(url: str, duration: float) -> dict[str, Any]:
    """Warm up, then c=1 and c=16."""
    import httpx

    for _ in range(20):
        httpx.post(url + "/", json={"state": [1]}, timeout=60).raise_for_status()
    run_wrk(url, 16, 2)
    return {"c1": run_wrk(url, 1, duration), "c16": run_wrk(url, 16, duration)}


def swap_times(cluster: Cluster, checkpoints: list[str], rounds: int = 3) -> list[dict[str, float]]:
    """Reconfigure the rlops app between checkpoints; time until /metadata names the new one."""
    import httpx

    out = []
    for i in range(rounds):
        target = checkpoints[i % len(checkpoints)]
        app = app_configs(target)["rlops"]
        started = time.perf_counter()
        cluster.deploy(app)
        deadline = time.monotonic() + 120
        while (meta := httpx.get(cluster.url("rlops") + "/metadata", timeout=30).json())[
            "checkpoint_uri"
        ] != target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"/metadata did not name {target} within 120 s (last: {meta})")
            time.sleep(0.05)
        out.append({"seconds": round(time.perf_counter() - started, 3), "load_seconds": meta["load_seconds"]})
    return out


def bench_serve_mode(mode: str, checkpoint: str, other: str, duration: float) -> dict[str, Any]:
    """Start a cluster in ``mode`` (default proxy or fast ingress), deploy the three apps and measure."""
    import httpx

    cluster = Cluster(FAST_INGRESS_ENV if mode == "fast_ingress" else {})
    try:
        results: dict[str, Any] = {}
        for name, app in app_configs(checkpoint).items():
            cold = cluster.deploy(app)
            results[name] = {"cold_start_s": round(cold, 2), **measure(cluster.url(name), duration)}
            if name == "rlops":
                meta = httpx.get(cluster.url(name) + "/metadata", timeout=30).json()
                results[name]["checkpoint_load_s"] = meta["load_seconds"]
            if name == "tutorial":
                body = httpx.post(cluster.url(name) + "/", json={"state": [1]}, timeout=30).json()
                results[name]["checkpoint_load_s"] = round(body["load_seconds"], 3)
        results["rlops"]["swaps"] = swap_times(cluster, [other, checkpoint])
        return results
    finally:
        cluster.stop()


def bench_bare(checkpoint: str, duration: float) -> dict[str, Any]:
    import os
    import subprocess
    import sys

    from rlops_demo.cluster import free_port

    port = free_port()
    env = dict(os.environ, RLOPS_BENCH_CHECKPOINT=checkpoint, PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "bench.serve_bench:make_bare_app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/openapi.json", timeout=180)
        cold = time.perf_counter() - started
        return {"cold_start_s": round(cold, 2), **measure(f"http://127.0.0.1:{port}", duration)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --------------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------------

LABELS = {
    "rlops_fast_ingress": "this app, direct ingress + HAProxy",
    "rlops_default_proxy": "this app, default Serve proxy",
    "bare_fastapi": "bare uvicorn + FastAPI (same RLModule + connectors)",
    "rllib_example_fast_ingress": "RLlib Serve example pattern, direct ingress + HAProxy",
    "rllib_example_default_proxy": "RLlib Serve example pattern, default proxy",
    "tutorial_fast_ingress": "tutorial pattern (Algorithm per replica), direct ingress + HAProxy",
    "tutorial_default_proxy": "tutorial pattern (Algorithm per replica), default proxy",
}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios and target checks against the bare FastAPI baseline of the same run."""
    bare = results["servers"]["bare_fastapi"]
    ours = results["servers"]["rlops_fast_ingress"]
    return {
        "c16_throughput_vs_bare": round(ours["c16"]["rps"] / bare["c16"]["rps"], 2),
        "c1_throughput_vs_bare": round(ours["c1"]["rps"] / bare["c1"]["rps"], 2),
        "targets": {
            "c16_at_least_1.5x_bare": ours["c16"]["rps"] >= 1.5 * bare["c16"]["rps"],
            "c16_p99_at_most_30ms": ours["c16"]["p99_ms"] <= 30.0,
            "c1_p50_at_most_6ms": ours["c1"]["p50_ms"] <= 6.0,
        },
    }


def to_markdown(results: dict[str, Any]) -> str:
    bare = results["servers"]["bare_fastapi"]
    lines = [
        "# Serving benchmark",
        "",
        f"Run at {results['started_at']} on {results['machine']['cpus']} CPUs; load average before/after: "
        f"{results['machine']['loadavg_before']} / {results['machine']['loadavg_after']} "
        "(other work on the machine shares the CPUs; re-run `python -m bench.serve_bench` when it is idle).",
        f'Load generator: wrk, {results["duration_s"]} s per point, body `{{"state": [1]}}`, loopback only.',
        "",
        "| server | req/s @1 | p50 ms @1 | p99 ms @1 | req/s @16 | p50 ms @16 | p99 ms @16 | x bare @16 "
        "| errors | cold start s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in LABELS.items():
        row = results["servers"].get(key)
        if row is None:
            continue
        c1, c16 = row["c1"], row["c16"]
        ratio = c16["rps"] / bare["c16"]["rps"]
        lines.append(
            f"| {label} | {c1['rps']} | {c1['p50_ms']} | {c1['p99_ms']} | {c16['rps']} | {c16['p50_ms']} | "
            f"{c16['p99_ms']} | {ratio:.2f} | {c1['errors'] + c16['errors']} | {row['cold_start_s']} |"
        )
    summary = results["summary"]
    lines += ["", "Targets (this app with direct ingress + HAProxy):", ""]
    for name, ok in summary["targets"].items():
        lines.append(f"- {name}: {'met' if ok else 'NOT met'}")
    lines += ["", "Checkpoint load and hot-swap (this app):", ""]
    for mode in ("fast_ingress", "default_proxy"):
        row = results["servers"].get(f"rlops_{mode}")
        if row:
            swaps = ", ".join(f"{s['seconds']} s (load {s['load_seconds']} s)" for s in row["swaps"])
            lines.append(
                f"- {mode}: replica cold start {row['cold_start_s']} s (checkpoint fetch+verify+load "
                f"{row['checkpoint_load_s']} s); swaps until /metadata names the new checkpoint: {swaps}"
            )
    tut = results["servers"].get("tutorial_default_proxy")
    if tut:
        lines.append(
            f"- tutorial pattern: Algorithm.from_checkpoint per replica {tut['checkpoint_load_s']} s"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the whole benchmark; write ``bench/results/serve.json`` and ``serve.md``; return the results."""
    import argparse
    import json
    import os
    from datetime import UTC, datetime

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk measurement")
    parser.add_argument(
        "--checkpoint", help="an existing manifested corridor checkpoint (default: train one)"
    )
    parser.add_argument("--other-checkpoint", help="a second checkpoint for swap timing")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results"))
    args = parser.parse_args(argv)

    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": args.duration,
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()]},
        "servers": {},
    }
    checkpoint, other = args.checkpoint, args.other_checkpoint
    if checkpoint is None:
        import tempfile

        cluster = Cluster({})
        try:
            trained = train_corridor_checkpoints(Path(tempfile.mkdtemp(prefix="rlops-bench-ck-")))
        finally:
            cluster.stop()
        checkpoint, other = trained["final"], trained["early"]
    results["checkpoint"] = checkpoint
    results["servers"]["bare_fastapi"] = bench_bare(checkpoint, args.duration)
    for mode in ("fast_ingress", "default_proxy"):
        for name, row in bench_serve_mode(mode, checkpoint, other or checkpoint, args.duration).items():
            results["servers"][f"{name}_{mode}"] = row
    results["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    results["summary"] = summarize(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "serve.md").write_text(to_markdown(results))
    print(to_markdown(results))
    return results


if __name__ == "__main__":
    main()
