"""Serving benchmark: this app against bare uvicorn + FastAPI, RLlib's Serve example and Serve's own floor.

``python -m bench.serve_bench`` trains the corridor fixture (``bench/serve_fixture.py``), starts two local
Ray heads (direct ingress + HAProxy, and Serve's default proxy) and the bare server
(``bench/serve_servers.py``), warms every server up, then measures req/s and p50/p99 at 1 and 16
connections with ``wrk`` (``bench/serve_load.py``) by ``bench/method.py``'s rules: ``--repeats`` rounds
interleaved over the servers, the load average before every point, medians and min-max, optional CPU
pinning (on by default: wrk on CPU 0, every server on the others). It also times hot-swaps, and writes
``serve.json`` and ``serve.md`` (``bench/serve_report.py``) to ``--out``.

    python -m bench.serve_bench [--repeats 3] [--duration 8] [--no-pin] [--checkpoint DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench import method, serve_report
from bench.heads import start_head
from bench.serve_fixture import train_corridor_checkpoints
from bench.serve_load import run_wrk, warm_up

__all__ = ["main", "train_corridor_checkpoints"]  # the serving tests' fixture is imported from here

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST_INGRESS_ENV = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
POINTS = {"c1": 1, "c16": 16}
METRICS = ("rps", "p50_ms", "p99_ms", "errors")

# variant -> (label, where it runs: "fast" / "default" cluster or "bare", Serve app name)
VARIANTS: dict[str, tuple[str, str, str | None]] = {
    "rlops_fast_ingress": ("this app, direct ingress + HAProxy", "fast", "rlops"),
    "rlops_default_proxy": ("this app, default Serve proxy", "default", "rlops"),
    "rllib_example": ("RLlib's Serve example pattern, direct ingress + HAProxy", "fast", "rllib_example"),
    "empty_serve": ("empty Serve handler, direct ingress + HAProxy", "fast", "empty"),
    "empty_fastapi": ("empty FastAPI ingress in Serve, direct ingress + HAProxy", "fast", "empty_fastapi"),
    "bare_fastapi": ("bare uvicorn + FastAPI, RLlib's inference pattern", "bare", None),
    "tutorial": ("tutorial pattern (Algorithm per replica), direct ingress + HAProxy", "fast", "tutorial"),
}
DEFAULT_VARIANTS = [v for v in VARIANTS if v != "tutorial"]


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
    """The shared local Ray head (``rlops_demo.cluster``) with extra env vars.

    Apps are deployed through the shared Serve REST client (``rlops_core.serve_client``); the driver
    attaches with ``ray.init`` only when asked (to train the fixture), since two heads run at once.
    """

    def __init__(self, extra_env: dict[str, str], num_cpus: int = 4) -> None:
        import uuid

        from rlops_demo.cluster import LocalRayCluster, free_port

        name = f"rlops-bench-{uuid.uuid4().hex[:6]}"
        env, extra_dirs = _fast_ingress_env(extra_env)
        self.head = start_head(
            lambda: LocalRayCluster(
                num_cpus=num_cpus,
                env=env,
                cwd=REPO_ROOT,
                log_path=Path("/tmp") / f"{name}.log",
                temp_dir=Path("/tmp") / f"{name}-{uuid.uuid4().hex[:4]}",
                cleanup_dirs=extra_dirs,
            )
        )
        self.token = self.head.token
        self.http_port = free_port()
        self.client = self.head.serve_client()
        self.apps: list[dict[str, Any]] = []

    @contextmanager
    def attached(self) -> Iterator[None]:
        """``ray.init`` on this head for the block (the token goes in this process's environment)."""
        os.environ.update(RAY_AUTH_TOKEN=self.token, RAY_AUTH_MODE="token")
        import ray

        ray.init(address=self.head.address, logging_level="WARNING", log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()

    def deploy(self, app: dict[str, Any], timeout: float = 300.0) -> float:
        """Add or replace one app (a declarative PUT, as KubeRay does); wait until RUNNING; return seconds."""
        self.apps = [a for a in self.apps if a["name"] != app["name"]] + [app]
        started = time.perf_counter()
        self._put()
        self.client.wait_running(
            app["name"], timeout=timeout, interval=0.2, fail_on=("DEPLOY_FAILED", "UNHEALTHY")
        )
        return time.perf_counter() - started

    def _put(self, attempts: int = 4) -> None:
        """The declarative PUT, retried on a 5xx (a busy dashboard times out starting Serve's controller)."""
        from rlops_core.serve_client import ServeRefused

        for attempt in range(1, attempts + 1):
            try:
                self.client.deploy(self.apps, http_options={"host": "127.0.0.1", "port": self.http_port})
                return
            except ServeRefused as exc:
                if exc.status_code < 500 or attempt == attempts:
                    raise
                print(
                    f"[bench] Serve PUT answered {exc.status_code}; retrying ({attempt}/{attempts})",
                    flush=True,
                )
                time.sleep(5.0)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.http_port}/{name}"

    def pin(self, cpus: tuple[int, ...]) -> int:
        """Pin the head's whole process tree (later workers inherit it); return how many processes."""
        assert self.head.process is not None
        return len(method.pin_process_tree(self.head.process.pid, cpus))

    def stop(self) -> None:
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


def app_config(name: str, checkpoint: str) -> dict[str, Any]:
    """The Serve app config of one Serve-based server."""
    if name == "rlops":
        return {
            "name": "rlops",
            "route_prefix": "/rlops",
            "import_path": "workloads.serve_app:app",
            "deployments": [{"name": "PolicyServer", "user_config": {"checkpoint_uri": checkpoint}}],
        }
    builders = {
        "rllib_example": "build_rllib_example",
        "empty": "build_empty",
        "empty_fastapi": "build_empty_fastapi",
        "tutorial": "build_tutorial",
    }
    return {
        "name": name,
        "route_prefix": f"/{name}",
        "import_path": f"bench.serve_servers:{builders[name]}",
        "args": {"checkpoint": checkpoint},
        "runtime_env": {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
    }


@contextmanager
def bare_server(checkpoint: str, prefix: list[str]) -> Iterator[tuple[str, float]]:
    """The bare uvicorn process (pinned with ``prefix``); yields its URL and cold start in seconds."""
    from rlops_demo.cluster import free_port

    port = free_port()
    env = dict(os.environ, RLOPS_BENCH_CHECKPOINT=checkpoint, PYTHONPATH=str(REPO_ROOT))
    cmd = [*prefix, sys.executable, "-m", "uvicorn", "--factory", "bench.serve_servers:make_bare_app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/openapi.json", timeout=180)
        yield f"http://127.0.0.1:{port}", time.perf_counter() - started
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def swap_times(cluster: Cluster, checkpoints: list[str], rounds: int) -> list[dict[str, float]]:
    """Reconfigure the rlops app between checkpoints; time until /metadata names the new one."""
    from rlops_core.serve_client import get_json

    out = []
    for i in range(rounds):
        target = checkpoints[i % len(checkpoints)]
        started = time.perf_counter()
        cluster.deploy(app_config("rlops", target))
        deadline = time.monotonic() + 120
        while True:
            meta = get_json(cluster.url("rlops") + "/metadata", timeout=30)
            if meta["checkpoint_uri"] == target:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"/metadata did not name {target} within 120 s (last: {meta})")
            time.sleep(0.05)
        out.append({"seconds": round(time.perf_counter() - started, 3), "load_seconds": meta["load_seconds"]})
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; write ``serve.json`` and ``serve.md`` to ``--out``; return the results."""
    parser = argparse.ArgumentParser(prog="python -m bench.serve_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk measurement")
    parser.add_argument("--repeats", type=int, default=method.MIN_REPEATS, help="rounds (>= 3)")
    parser.add_argument("--quick", action="store_true", help="allow fewer repeats (a smoke run, never quiet)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin wrk and the servers to CPU sets")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument(
        "--checkpoint", help="an existing manifested corridor checkpoint (default: train one)"
    )
    parser.add_argument("--other-checkpoint", help="a second checkpoint for swap timing")
    parser.add_argument("--swaps", type=int, default=4, help="hot-swaps to time")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    try:
        repeats = method.check_repeats(args.repeats, allow_fewer=args.quick)
    except ValueError as exc:
        parser.error(str(exc))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "bare_fastapi" not in variants or "rlops_fast_ingress" not in variants:
        parser.error(f"--variants needs rlops_fast_ingress and bare_fastapi, from {', '.join(VARIANTS)}")
    pinning = method.plan_pinning(not args.no_pin)
    run = method.Run("serve", repeats=repeats, pinning=pinning)
    # One token for both heads, in the environment before Ray is imported (Ray reads it once).
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"

    with ExitStack() as stack:
        fast = Cluster(FAST_INGRESS_ENV)
        stack.callback(fast.stop)
        default = None
        if any(VARIANTS[v][1] == "default" for v in variants):
            default = Cluster({})
            stack.callback(default.stop)
        checkpoint, other = args.checkpoint, args.other_checkpoint
        if checkpoint is None:
            import tempfile

            with fast.attached():
                trained = train_corridor_checkpoints(Path(tempfile.mkdtemp(prefix="rlops-bench-ck-")))
            checkpoint, other = trained["final"], trained["early"]
        urls: dict[str, str] = {}
        cold: dict[str, float] = {}
        for variant in variants:
            _, where, app = VARIANTS[variant]
            if where == "bare":
                urls[variant], cold[variant] = stack.enter_context(
                    bare_server(checkpoint, pinning.prefix("server"))
                )
                continue
            cluster = fast if where == "fast" else default
            assert cluster is not None and app is not None
            cold[variant] = cluster.deploy(app_config(app, checkpoint))
            urls[variant] = cluster.url(app)
        if pinning.enabled:  # after the deploys: a head pinned while it boots can starve its own daemons
            for cluster in (c for c in (fast, default) if c is not None):
                cluster.pin(pinning.server_cpus or ())
            os.sched_setaffinity(0, set(pinning.load_cpus or ()))
        for variant in variants:  # warm-up, not recorded
            print(f"[bench] warm-up {variant}", flush=True)
            warm_up(urls[variant], prefix=pinning.prefix("load"))
        for rep, variant in method.interleaved(variants, repeats):
            for point, connections in POINTS.items():
                values = run.measure(
                    variant,
                    point,
                    rep,
                    lambda u=urls[variant], c=connections: run_wrk(
                        u, c, args.duration, pinning.prefix("load")
                    ),
                )
                print(
                    f"[bench] round {rep} {variant} {point}: {values['rps']} req/s p50 {values['p50_ms']} ms "
                    f"p99 {values['p99_ms']} ms errors {values['errors']} "
                    f"(load before {run.points[-1]['load_before'][0]})",
                    flush=True,
                )
        swaps = swap_times(fast, [other or checkpoint, checkpoint], args.swaps)

    results = serve_report.assemble(
        run,
        summary=run.summary(METRICS),
        labels={v: VARIANTS[v][0] for v in variants},
        duration_s=args.duration,
        checkpoint=checkpoint,
        cold_start_s={k: round(v, 2) for k, v in cold.items()},
        swaps=swaps,
    )
    serve_report.write(Path(args.out), results)
    print(serve_report.to_markdown(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
