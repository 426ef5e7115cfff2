"""``python -m rlops_demo``: the README's main job on one machine, with embedded defaults.

1. start a local Ray cluster (token auth on), train a first corridor round and promote it;
2. serve it through the dashboard's Serve REST API (what KubeRay does) and start the promotion
   engine (``rlops-rollout watch``) against that cluster;
3. train a second, longer round while a load generator plays episodes against the endpoint;
4. the engine sees the new pointer, checks the checkpoint and rolls the endpoint to it;
5. print a summary and write a report (training curves, rollout timeline).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rlops_demo.cluster import LocalRayCluster, free_port
from rlops_demo.load import LoadGenerator
from rlops_demo.report import RoundSummary, plot_timeline, write_html
from rlops_demo.serve_deploy import deploy, serve_config, wait_running

console = Console()
app = typer.Typer(add_completion=False, help=__doc__)

APP_NAME = "corridor"
DEPLOYMENT = "PolicyServer"


def _train(storage: str, name: str, iters: int, seed: int) -> tuple[RoundSummary, object]:
    """Run one training round through the training job's Python API and promote its best checkpoint."""
    from workloads.train_job import run_training
    from workloads.training.settings import build_settings

    started = time.monotonic()
    overrides = {
        "storage": storage,
        "name": name,
        "stop": {"iters": iters},
        "promote": True,
        "channel": APP_NAME,
        "seed": seed,
    }
    outcome = run_training(build_settings(preset="tutorial", overrides=overrides))
    summary = RoundSummary(
        name=name,
        checkpoint_uri=outcome.best_checkpoint_uri,
        metric=outcome.metric_value,
        promoted=outcome.promoted,
        seconds=time.monotonic() - started,
        curves_png=outcome.curves_uri,
    )
    return summary, outcome


def _relay(proc: subprocess.Popen[str], prefix: str, lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        console.print(Text(prefix, style="dim") + Text(f" {line.rstrip()}"), highlight=False)


@app.command()
def main(
    out: Path = typer.Option(Path("results/demo"), help="Where the storage folder and the report go."),
    first_iters: int = typer.Option(1, help="Training iterations of the first (weak) round."),
    second_iters: int = typer.Option(10, help="Training iterations of the second round."),
    poll_interval: float = typer.Option(2.0, help="The promotion engine's poll interval in seconds."),
    load_workers: int = typer.Option(4, help="Concurrent episode players against the endpoint."),
    rollout_timeout: float = typer.Option(120.0, help="Seconds to wait for the endpoint to roll."),
    seed: int = typer.Option(0, help="Seed of the first round (the second uses seed + 1)."),
) -> None:
    """Train → best checkpoint → serve → automatic rollout, on one machine."""
    out = out.absolute()
    storage = str(out / "storage")
    out.mkdir(parents=True, exist_ok=True)
    cluster = LocalRayCluster(num_cpus=4, log_path=out / "ray-head.log")
    engine: subprocess.Popen[str] | None = None
    load: LoadGenerator | None = None
    # Ctrl-C: the finally blocks end the engine, the load and the whole Ray process group.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        console.rule("[bold]1/5 local Ray cluster")
        cluster.start()
        os.environ.update(cluster.client_env())
        console.print(f"Ray head at {cluster.address}, dashboard {cluster.dashboard_url} (token auth on)")
        import ray

        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)

        console.rule("[bold]2/5 first training round")
        first, _ = _train(storage, "round-1", first_iters, seed)
        console.print(f"round-1 best return {first.metric:.3f} → {first.checkpoint_uri}")

        console.rule("[bold]3/5 serve it and start the promotion engine")
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        deploy(
            cluster.dashboard_url, cluster.auth_headers, serve_config(first.checkpoint_uri, port, APP_NAME)
        )
        meta = wait_running(cluster.dashboard_url, cluster.auth_headers, APP_NAME, endpoint)
        console.print(f"Serve app {APP_NAME!r} RUNNING at {endpoint}; live: {meta.get('checkpoint_uri')}")
        pointer = str(Path(storage, APP_NAME, "best_checkpoint.txt"))
        engine_lines: list[str] = []
        engine = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("rlops-rollout")),
                "watch",
                "--pointer",
                pointer,
                "--dashboard-url",
                cluster.dashboard_url,
                "--app",
                APP_NAME,
                "--deployment",
                DEPLOYMENT,
                "--endpoint-url",
                endpoint,
                "--poll-interval",
                str(poll_interval),
                "--allowed-prefix",
                storage,
                "--timeout",
                str(rollout_timeout),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ},
            start_new_session=True,
        )
        threading.Thread(target=_relay, args=(engine, "[engine]", engine_lines), daemon=True).start()

        console.rule("[bold]4/5 second round under load")
        load = LoadGenerator(endpoint, workers=load_workers, max_seconds=1800).start()
        second, _ = _train(storage, "round-2", second_iters, seed + 1)
        pointer_written = Path(pointer).stat().st_mtime
        pointer_at = time.monotonic() - (time.time() - pointer_written) - load.t0
        console.print(f"round-2 best return {second.metric:.3f}; promoted: {second.promoted}")
        if not second.promoted:
            raise SystemExit(
                "round-2 did not beat round-1, so nothing was promoted: rerun with more iterations"
            )

        console.rule("[bold]5/5 automatic rollout")
        live_at = _wait_live(load, second.checkpoint_uri, rollout_timeout)
        time.sleep(3.0)  # keep the load on a little after the swap
        stats = load.stop()
        load = None

        rollout_s = live_at - pointer_at
        after = [e for e in stats.episodes if e.finished > live_at]
        summary = {
            "rounds": [r.__dict__ for r in (first, second)],
            "pointer_to_live_seconds": round(rollout_s, 2),
            "requests_served": len(stats.requests) - stats.failed,
            "requests_failed": stats.failed,
            "latency_p50_ms": round(1000 * stats.latency_quantile(0.5), 2),
            "latency_p99_ms": round(1000 * stats.latency_quantile(0.99), 2),
            "episodes": len(stats.episodes),
            "goal_rate_after_rollout": round(sum(e.reached_goal for e in after) / max(1, len(after)), 3),
            "live_checkpoints": stats.live_checkpoints,
        }
        timeline = plot_timeline(stats, {"pointer written": pointer_at, "live": live_at}, out / "rollout.png")
        report = write_html(summary, [first, second], timeline, out / "report.html")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        _print_summary(summary, first, second, report)
        if stats.failed:
            raise SystemExit(f"{stats.failed} requests failed during the rollout")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping the engine, the load and the Ray cluster[/]")
        raise SystemExit(130) from None
    finally:
        if load is not None:
            load.stop()
        if engine is not None and engine.poll() is None:
            os.killpg(engine.pid, signal.SIGTERM)
            try:
                engine.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(engine.pid, signal.SIGKILL)
        try:
            import ray

            ray.shutdown()
        finally:
            cluster.stop()


def _interrupt(signum: int, frame: object) -> None:
    """Treat SIGTERM like Ctrl-C so the same clean-up runs."""
    raise KeyboardInterrupt


def _wait_live(load: LoadGenerator, checkpoint_uri: str, timeout: float) -> float:
    """Seconds (on the load's clock) at which ``/metadata`` first named ``checkpoint_uri``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with load.stats.lock:
            for t, uri in load.stats.live_checkpoints:
                if uri == checkpoint_uri:
                    return t
        time.sleep(0.2)
    raise SystemExit(f"the endpoint did not roll to {checkpoint_uri} within {timeout:.0f} s")


def _print_summary(summary: dict, first: RoundSummary, second: RoundSummary, report: Path) -> None:
    table = Table(title="rlops demo summary")
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for r in (first, second):
        table.add_row(f"{r.name} best return", f"{r.metric:.3f}")
        table.add_row(f"{r.name} checkpoint", r.checkpoint_uri)
    table.add_row("pointer → live", f"{summary['pointer_to_live_seconds']:.2f} s")
    table.add_row("requests served", str(summary["requests_served"]))
    table.add_row("failed requests", str(summary["requests_failed"]))
    table.add_row("latency p50 / p99", f"{summary['latency_p50_ms']} / {summary['latency_p99_ms']} ms")
    table.add_row(
        "episodes (goal rate after rollout)", f"{summary['episodes']} ({summary['goal_rate_after_rollout']})"
    )
    table.add_row("report", str(report))
    console.print(table)


if __name__ == "__main__":
    app()
