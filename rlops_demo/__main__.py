"""``python -m rlops_demo``: the README's main job on one machine, with embedded defaults.

1. start a local Ray cluster (token auth on), train a first corridor round and promote it;
2. serve it through the dashboard's Serve REST API (what KubeRay does) and start the promotion
   engine (``rlops-rollout watch``) against that cluster;
3. train a second, longer round while a load generator plays episodes against the endpoint;
4. the engine sees the new pointer, checks the checkpoint and rolls the endpoint to it;
5. print a summary and write a report (training curves, rollout timeline).

Every run starts in a fresh folder ``<out>/runs/<UTC time>/`` (``<out>/latest`` points at it), so
running it again always starts from nothing and keeps the previous reports; ``--resume`` continues
the newest unfinished run instead (see rlops_demo/rundir.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from rlops_core import checkpoints
from rlops_demo import rundir
from rlops_demo.cluster import LocalRayCluster, free_port
from rlops_demo.console import print_summary, relay_line, say
from rlops_demo.load import LoadGenerator, LoadStats
from rlops_demo.report import RoundSummary, plot_timeline, write_html
from rlops_demo.serve_deploy import deploy, serve_config, wait_running

console = Console()
app = typer.Typer(add_completion=False, help=__doc__)

APP_NAME = "corridor"
DEPLOYMENT = "PolicyServer"
STAGES = 5


class DemoFailed(Exception):
    """The demo ran but did not show what it should; the message says what to try."""


@dataclass(frozen=True)
class DemoSettings:
    """What a run does (the command-line options)."""

    first_iters: int = 1
    second_iters: int = 10
    poll_interval: float = 2.0
    load_workers: int = 4
    rollout_timeout: float = 120.0
    seed: int = 0


@dataclass
class Demo:
    """One run: owns the Ray cluster, the engine process and the load generator; ``close()`` ends them."""

    settings: DemoSettings
    run: rundir.RunDir
    out: Console = field(default_factory=lambda: console)
    cluster: LocalRayCluster | None = None
    engine: subprocess.Popen[str] | None = None
    engine_lines: list[str] = field(default_factory=list)
    load: LoadGenerator | None = None
    endpoint: str = ""

    @property
    def storage(self) -> str:
        return str(self.run.storage)

    @property
    def pointer(self) -> Path:
        return self.run.storage / APP_NAME / "best_checkpoint.txt"

    def stage(self, n: int, title: str) -> None:
        self.out.rule(f"[bold]{n}/{STAGES} {title}")

    def start_cluster(self) -> None:
        """A local Ray head (token auth on) and this process attached to it."""
        self.cluster = LocalRayCluster(num_cpus=4, log_path=self.run.path / "ray-head.log")
        self.cluster.start()
        os.environ.update(self.cluster.client_env())
        say(
            self.out,
            f"Ray head at {self.cluster.address}, dashboard {self.cluster.dashboard_url} (token auth)",
        )
        self._attach()

    def _attach(self) -> None:
        """``ray.init`` to the head; a busy machine can make the first connection time out, so retry."""
        import ray
        from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_fixed

        assert self.cluster is not None
        address = self.cluster.address

        @retry(
            retry=retry_if_exception_type(ConnectionError),
            stop=stop_after_attempt(3),
            wait=wait_fixed(2),
            reraise=True,
            before_sleep=lambda state: say(
                self.out, f"Ray at {address} did not answer yet; retrying", "yellow"
            ),
        )
        def connect() -> None:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)

        connect()

    def train_round(self, name: str, iters: int, seed: int) -> RoundSummary:
        """One training round through the training job's Python API; promote its best checkpoint."""
        from workloads.train_job import run_training
        from workloads.training.settings import build_settings

        started = time.monotonic()
        overrides = {
            "storage": self.storage,
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
            promoted=outcome.promoted or self._pointer_names(outcome.best_checkpoint_uri),
            seconds=time.monotonic() - started,
            curves_png=outcome.curves_uri,
        )
        say(self.out, f"{name} best return {summary.metric:.3f}; promoted: {summary.promoted}")
        say(self.out, f"{name} checkpoint: {summary.checkpoint_uri}")
        return summary

    def _pointer_names(self, checkpoint_uri: str) -> bool:
        """The channel already names this checkpoint (a resumed run promoted it before it stopped)."""
        try:
            return checkpoints.read_pointer(str(self.pointer)) == checkpoint_uri
        except Exception:  # no pointer or unreadable: not promoted
            return False

    def serve(self, live: RoundSummary) -> None:
        """Deploy the Serve app with ``live``'s checkpoint and wait until it answers."""
        assert self.cluster is not None
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        headers = self.cluster.auth_headers
        deploy(self.cluster.dashboard_url, headers, serve_config(live.checkpoint_uri, port, APP_NAME))
        meta = wait_running(self.cluster.dashboard_url, headers, APP_NAME, self.endpoint)
        say(self.out, f"Serve app {APP_NAME!r} RUNNING at {self.endpoint}")
        say(self.out, f"live checkpoint: {meta.get('checkpoint_uri')}")

    def start_engine(self) -> None:
        """``rlops-rollout watch`` on the channel pointer, its output relayed with an ``[engine]`` prefix."""
        assert self.cluster is not None
        s = self.settings
        cmd = [
            str(Path(sys.executable).with_name("rlops-rollout")),
            "watch",
            "--pointer", str(self.pointer),
            "--dashboard-url", self.cluster.dashboard_url,
            "--app", APP_NAME,
            "--deployment", DEPLOYMENT,
            "--endpoint-url", self.endpoint,
            "--poll-interval", str(s.poll_interval),
            "--allowed-prefix", self.storage,
            "--timeout", str(s.rollout_timeout),
        ]  # fmt: skip
        self.engine = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ},
            start_new_session=True,
        )
        threading.Thread(target=self._relay, args=(self.engine,), daemon=True).start()

    def _relay(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.engine_lines.append(line.rstrip())
            relay_line(self.out, "[engine]", line)

    def start_load(self) -> LoadGenerator:
        self.load = LoadGenerator(self.endpoint, workers=self.settings.load_workers, max_seconds=1800).start()
        return self.load

    def pointer_moment(self) -> float:
        """When the channel pointer was last written, in seconds on the load generator's clock."""
        assert self.load is not None
        written = self.pointer.stat().st_mtime
        return time.monotonic() - (time.time() - written) - self.load.t0

    def wait_live(self, checkpoint_uri: str) -> float:
        """Seconds (on the load's clock) at which ``/metadata`` first named ``checkpoint_uri``."""
        assert self.load is not None
        timeout = self.settings.rollout_timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.load.stats.lock:
                for t, uri in self.load.stats.live_checkpoints:
                    if uri == checkpoint_uri:
                        return t
            time.sleep(0.2)
        raise DemoFailed(
            f"the endpoint did not roll to {checkpoint_uri} within {timeout:.0f} s; "
            f"see the [engine] lines above and {self.run.path / 'ray-head.log'}"
        )

    def stop_load(self) -> LoadStats:
        assert self.load is not None
        stats = self.load.stop()
        self.load = None
        return stats

    def close(self) -> None:
        """End everything this run started: the load, the engine, the driver, the Ray cluster."""
        if self.load is not None:
            self.load.stop()
            self.load = None
        if self.engine is not None and self.engine.poll() is None:
            os.killpg(self.engine.pid, signal.SIGTERM)
            try:
                self.engine.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.engine.pid, signal.SIGKILL)
        try:
            import ray

            ray.shutdown()
        finally:
            if self.cluster is not None:
                self.cluster.stop()


def summarize(
    rounds: list[RoundSummary], stats: LoadStats, pointer_at: float, live_at: float
) -> dict[str, Any]:
    """The run's numbers (written to summary.json and shown in the report)."""
    after = [e for e in stats.episodes if e.finished > live_at]
    return {
        "rounds": [r.__dict__ for r in rounds],
        "pointer_to_live_seconds": round(live_at - pointer_at, 2),
        "requests_served": len(stats.requests) - stats.failed,
        "requests_failed": stats.failed,
        "latency_p50_ms": round(1000 * stats.latency_quantile(0.5), 2),
        "latency_p99_ms": round(1000 * stats.latency_quantile(0.99), 2),
        "episodes": len(stats.episodes),
        "goal_rate_after_rollout": round(sum(e.reached_goal for e in after) / max(1, len(after)), 3),
        "live_checkpoints": stats.live_checkpoints,
    }


def write_outputs(demo: Demo, rounds: list[RoundSummary], stats: LoadStats, marks: dict[str, float]) -> dict:
    """Timeline, report and summary.json (written last: it marks the run finished)."""
    summary = summarize(rounds, stats, marks["pointer written"], marks["live"])
    timeline = plot_timeline(stats, marks, demo.run.path / "images" / "rollout.png")
    report = write_html(summary, rounds, timeline, demo.run.report)
    print_summary(demo.out, summary, rounds, demo.storage, report)
    demo.run.summary.write_text(json.dumps(summary, indent=2))
    return summary


def run_demo(demo: Demo) -> dict[str, Any]:
    """The stages in order; raises DemoFailed when the run does not show a clean rollout."""
    s = demo.settings
    demo.stage(1, "local Ray cluster")
    demo.start_cluster()

    demo.stage(2, "first training round")
    first = demo.train_round("round-1", s.first_iters, s.seed)

    demo.stage(3, "serve it and start the promotion engine")
    demo.serve(first)
    demo.start_engine()

    demo.stage(4, "second round under load")
    demo.start_load()
    second = demo.train_round("round-2", s.second_iters, s.seed + 1)
    pointer_at = demo.pointer_moment()
    if not second.promoted:
        raise DemoFailed(
            "round-2 did not beat round-1, so nothing was promoted: rerun with more --second-iters"
        )

    demo.stage(5, "automatic rollout")
    live_at = demo.wait_live(second.checkpoint_uri)
    time.sleep(3.0)  # keep the load on a little after the swap
    stats = demo.stop_load()
    summary = write_outputs(demo, [first, second], stats, {"pointer written": pointer_at, "live": live_at})
    if stats.failed:
        raise DemoFailed(f"{stats.failed} requests failed during the rollout")
    return summary


def choose_run(out: Path, resume: bool, keep: int) -> rundir.RunDir:
    """A fresh run folder (older finished runs beyond ``keep`` removed), or the one to resume."""
    run = rundir.resume_run(out) if resume else rundir.new_run(out)
    rundir.mark_latest(out, run)
    for removed in rundir.prune(out, keep, run):
        say(console, f"removed an old run: {removed}", style="dim")
    leftovers = rundir.legacy_leftovers(out)
    if leftovers:
        names = ", ".join(p.name for p in leftovers)
        say(console, f"note: {names} in {out} are from an older demo and no longer used; delete them at will")
    return run


@app.command()
def main(
    out: Path = typer.Option(Path("results/demo"), help="Folder of the run folders (runs/<time>, latest)."),
    resume: bool = typer.Option(False, help="Continue the newest unfinished run instead of a fresh one."),
    keep: int = typer.Option(5, help="Finished runs to keep besides this one (-1: keep all)."),
    first_iters: int = typer.Option(1, min=1, help="Training iterations of the first (weak) round."),
    second_iters: int = typer.Option(10, min=1, help="Training iterations of the second round."),
    poll_interval: float = typer.Option(
        2.0, min=0.1, help="The promotion engine's poll interval in seconds."
    ),
    load_workers: int = typer.Option(4, min=1, help="Concurrent episode players against the endpoint."),
    rollout_timeout: float = typer.Option(120.0, min=1, help="Seconds to wait for the endpoint to roll."),
    seed: int = typer.Option(0, help="Seed of the first round (the second uses seed + 1)."),
) -> None:
    """Train → best checkpoint → serve → automatic rollout, on one machine."""
    out = out.absolute()
    try:
        run = choose_run(out, resume, keep)
    except rundir.RunDirError as exc:
        raise SystemExit(f"rlops demo: {exc}") from None
    say(console, f"{'resuming' if resume else 'new'} run: {run.path}")
    settings = DemoSettings(first_iters, second_iters, poll_interval, load_workers, rollout_timeout, seed)
    demo = Demo(settings, run)
    # Ctrl-C or SIGTERM: close() ends the engine, the load and the whole Ray process group.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_demo(demo)
    except DemoFailed as exc:
        raise SystemExit(f"rlops demo: {exc}") from None
    except KeyboardInterrupt:
        say(console, "interrupted: stopping the engine, the load and the Ray cluster", style="yellow")
        say(console, f"continue this run with: python -m rlops_demo --out {out} --resume")
        raise SystemExit(130) from None
    finally:
        demo.close()


def _interrupt(signum: int, frame: object) -> None:
    """Treat SIGTERM like Ctrl-C so the same clean-up runs."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    app()
