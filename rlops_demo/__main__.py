"""``python -m rlops_demo``: the README's main job on one machine, with embedded defaults.

1. start a local Ray cluster (token auth on), train a first corridor round and promote it;
2. serve it through the dashboard's Serve REST API (what KubeRay does) and start the promotion
   engine (``rlops-rollout watch``) against that cluster;
3. train a second, longer round while a load generator plays production episodes against the endpoint;
4. the engine sees the new pointer, checks the checkpoint and rolls the endpoint to it;
5. print a summary and write a report (training curves, rollout timeline, rollouts).

With progressive delivery (``--progressive``, the default; ``--replace`` for the all-at-once flow),
step 4 goes through shadow, the off-policy gate and canary steps to 100% (rlops_demo/strategy.py), and
a third round trained on a simulator with a deliberate modelling error (``corridor-sim``: its training
metric beats round 2's, its production return is far worse) must be stopped on live evidence while
traffic stays with round 2.

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
from rlops_demo.report import RoundSummary, plot_progressive, plot_timeline, write_html
from rlops_demo.rollouts import progressive_entry, progressive_estimates, progressive_events, replace_entry
from rlops_demo.serve_deploy import deploy, serve_config, wait_running
from rlops_demo.strategy import PROGRESSIVE_READY, engine_args, read_progressive, write_strategy

console = Console()
app = typer.Typer(add_completion=False, help=__doc__)

APP_NAME = "corridor"
DEPLOYMENT = "PolicyServer"
SIM_PRESET = "corridor-sim"  # round 3: the simulator with a deliberate modelling error


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
    progressive: bool = PROGRESSIVE_READY
    third_iters: int = 15
    progressive_timeout: float = 300.0

    @property
    def stages(self) -> int:
        return 8 if self.progressive else 5


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
    load_wall0: float = 0.0
    endpoint: str = ""
    progressive_states: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def storage(self) -> str:
        return str(self.run.storage)

    @property
    def pointer(self) -> Path:
        return self.run.storage / APP_NAME / "best_checkpoint.txt"

    @property
    def strategy_file(self) -> Path:
        return self.run.path / "strategy.yaml"

    @property
    def status_file(self) -> Path:
        return self.run.path / "engine-status.json"

    def stage(self, n: int, title: str) -> None:
        self.out.rule(f"[bold]{n}/{self.settings.stages} {title}")

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

    def train_round(self, name: str, iters: int, seed: int, preset: str = "tutorial") -> RoundSummary:
        """One training round through the training job's Python API; promote its best checkpoint.

        Promotion is the training job's metric gate (the channel pointer moves when the new best
        return beats the live one); what reaches traffic after that is the engine's job.
        """
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
        outcome = run_training(build_settings(preset=preset, overrides=overrides))
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
        log_root = self.storage if self.settings.progressive else None  # the engine reads the logs there
        config = serve_config(live.checkpoint_uri, port, APP_NAME, decision_log_root=log_root)
        deploy(self.cluster.dashboard_url, headers, config)
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
        if s.progressive:
            write_strategy(self.strategy_file)
            cmd += engine_args(self.strategy_file, self.status_file, log_root=self.storage)
            say(self.out, f"progressive strategy: {self.strategy_file}")
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
        """Production episodes from ``load_workers`` threads (episode ids and feedback if progressive)."""
        self.load = LoadGenerator(
            self.endpoint,
            workers=self.settings.load_workers,
            max_seconds=1800,
            episodes=self.settings.progressive,
        ).start()
        self.load_wall0 = time.time() - self.load.now()
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

    def wait_progressive(self, challenger_uri: str) -> dict[str, Any]:
        """The engine's final progressive state for ``challenger_uri`` (promoted or aborted); stages shown."""
        timeout = self.settings.progressive_timeout
        deadline = time.monotonic() + timeout
        shown: set[str] = set()
        state: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            current = read_progressive(self.status_file)
            if current is not None and current.get("challengerUri") == challenger_uri:
                state = current
                self.progressive_states[challenger_uri] = state
                stage = str(state.get("stage"))
                if stage not in shown:
                    shown.add(stage)
                    say(self.out, f"stage {stage}, challenger weight {state.get('weight')}")
                if state.get("outcome"):
                    return state
            if self.engine is not None and self.engine.poll() is not None:
                raise DemoFailed(
                    f"the engine exited (code {self.engine.returncode}) during the progressive rollout of "
                    f"{challenger_uri}; see the [engine] lines above"
                )
            time.sleep(0.5)
        where = f"stage {state.get('stage')}" if state else f"no progressive status in {self.status_file}"
        raise DemoFailed(
            f"the progressive rollout of {challenger_uri} did not finish within {timeout:.0f} s ({where}); "
            f"see the [engine] lines above, or rerun with a larger --progressive-timeout"
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
    rounds: list[RoundSummary],
    stats: LoadStats,
    pointer_at: float,
    live_at: float,
    rollouts: list[dict[str, Any]],
    strategy: str,
) -> dict[str, Any]:
    """The run's numbers (written to summary.json and shown in the report)."""
    after = [e for e in stats.episodes if e.finished > live_at]
    return {
        "strategy": strategy,
        "rounds": [r.__dict__ for r in rounds],
        "rollouts": rollouts,
        "pointer_to_live_seconds": round(live_at - pointer_at, 2),
        "requests_served": len(stats.requests) - stats.failed,
        "requests_failed": stats.failed,
        "feedback_requests": sum(1 for r in stats.requests if r.kind == "feedback"),
        "latency_p50_ms": round(1000 * stats.latency_quantile(0.5), 2),
        "latency_p99_ms": round(1000 * stats.latency_quantile(0.99), 2),
        "episodes": len(stats.episodes),
        "episodes_per_slot": stats.slot_returns(),
        "goal_rate_after_rollout": round(sum(e.reached_goal for e in after) / max(1, len(after)), 3),
        "live_checkpoints": stats.live_checkpoints,
    }


def write_outputs(
    demo: Demo,
    rounds: list[RoundSummary],
    stats: LoadStats,
    marks: dict[str, float],
    rollouts: list[dict[str, Any]],
    events: list[tuple[float, str, str]],
    estimates: list[tuple[float, float, float, str]] | None = None,
) -> dict:
    """Timeline, report and summary.json (written last: it marks the run finished)."""
    strategy = "Progressive" if demo.settings.progressive else "Replace"
    summary = summarize(rounds, stats, marks["pointer written"], marks["live"], rollouts, strategy)
    images = demo.run.path / "images"
    timeline = plot_timeline(stats, marks, images / "rollout.png")
    progressive = plot_progressive(stats, events, images / "progressive.png", estimates=estimates)
    report = write_html(summary, rounds, timeline, demo.run.report, progressive)
    print_summary(demo.out, summary, rounds, demo.storage, report)
    demo.run.summary.write_text(json.dumps(summary, indent=2))
    return summary


def run_demo(demo: Demo) -> dict[str, Any]:
    """The stages in order; raises DemoFailed when the run does not show what it should."""
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
    if s.progressive:
        return _progressive_story(demo, first, second, pointer_at)

    demo.stage(5, "automatic rollout")
    live_at = demo.wait_live(second.checkpoint_uri)
    time.sleep(3.0)  # keep the load on a little after the swap
    stats = demo.stop_load()
    rollouts = [replace_entry(stats, first.checkpoint_uri, second.checkpoint_uri, second.metric, live_at)]
    events = [(live_at, f"Replace: {second.name} live", "promote")]
    marks = {"pointer written": pointer_at, "live": live_at}
    summary = write_outputs(demo, [first, second], stats, marks, rollouts, events)
    if stats.failed:
        raise DemoFailed(f"{stats.failed} requests failed during the rollout")
    return summary


def _progressive_story(
    demo: Demo, first: RoundSummary, second: RoundSummary, pointer_at: float
) -> dict[str, Any]:
    """Stages 5-8: round 2 through shadow, gate and canary to 100%; round 3 (simulator) stopped; outputs."""
    s = demo.settings
    demo.stage(5, "progressive rollout of round 2: shadow, off-policy gate, canary steps")
    states: list[tuple[RoundSummary, dict[str, Any]]] = [
        (second, demo.wait_progressive(second.checkpoint_uri))
    ]
    rounds = [first, second]
    third: RoundSummary | None = None
    live_at = pointer_at
    if states[0][1].get("outcome") == "promoted":
        live_at = demo.wait_live(second.checkpoint_uri)

        demo.stage(6, "third round, trained on a simulator with a modelling error")
        third = demo.train_round("round-3", s.third_iters, s.seed + 2, preset=SIM_PRESET)
        rounds.append(third)
        say(
            demo.out,
            f"round-3 simulator return {third.metric:.3f} vs round-2 {second.metric:.3f}: "
            f"the metric gate {'promoted it' if third.promoted else 'did not promote it'}",
        )
        if third.promoted:
            demo.stage(7, "progressive rollout of round 3: must be stopped on live evidence")
            states.append((third, demo.wait_progressive(third.checkpoint_uri)))
            time.sleep(3.0)  # keep the load on after the abort: traffic must stay with round 2
    stats = demo.stop_load()

    demo.stage(8, "summary")
    rollouts = [progressive_entry(st, r.metric, stats, demo.load_wall0) for r, st in states]
    events = [e for r, st in states for e in progressive_events(st, demo.load_wall0, r.name)]
    estimates = [e for r, st in states for e in progressive_estimates(st, demo.load_wall0, r.name)]
    marks = {"pointer written": pointer_at, "live": live_at}
    summary = write_outputs(demo, rounds, stats, marks, rollouts, events, estimates)
    problems = story_problems(summary, second.checkpoint_uri, third)
    if problems:
        raise DemoFailed("; ".join(problems))
    return summary


def story_problems(summary: dict[str, Any], champion_uri: str, third: RoundSummary | None) -> list[str]:
    """What the progressive run failed to show (empty: the story holds)."""
    problems = []
    if summary["requests_failed"]:
        problems.append(f"{summary['requests_failed']} requests failed")
    rollouts = summary["rollouts"]
    if not rollouts or rollouts[0]["outcome"] != "promoted":
        reason = rollouts[0]["reason"] if rollouts else "no rollout recorded"
        problems.append(f"round-2 was not promoted ({reason}); see the [engine] lines above")
    if third is None:
        return problems  # round 2 was not promoted: round 3 never ran
    if not third.promoted:
        problems.append(
            f"round-3's simulator metric {third.metric:.3f} did not beat round-2's, so the story's "
            "challenger never reached the engine: rerun with more --third-iters"
        )
    elif len(rollouts) < 2 or rollouts[1]["outcome"] != "aborted":
        problems.append("round-3 (the simulator's policy) was not stopped: its rollout was not aborted")
    live = [uri for _, uri in summary["live_checkpoints"]]
    if not live or live[-1] != champion_uri:
        problems.append(
            f"the endpoint ended on {live[-1] if live else 'nothing'}, not round-2 ({champion_uri})"
        )
    return problems


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
    seed: int = typer.Option(0, help="Seed of the first round (the second uses seed + 1, the third + 2)."),
    progressive: bool = typer.Option(
        PROGRESSIVE_READY,
        "--progressive/--replace",
        help="Progressive delivery (shadow, off-policy gate, canary; round 3 on a wrong simulator) "
        "or today's all-at-once Replace with two rounds.",
    ),
    third_iters: int = typer.Option(15, min=1, help="Training iterations of round 3 (progressive only)."),
    progressive_timeout: float = typer.Option(
        300.0, min=1, help="Seconds to wait for one progressive rollout to be promoted or aborted."
    ),
) -> None:
    """Train → best checkpoint → serve → automatic rollout, on one machine."""
    out = out.absolute()
    try:
        run = choose_run(out, resume, keep)
    except rundir.RunDirError as exc:
        raise SystemExit(f"rlops demo: {exc}") from None
    say(console, f"{'resuming' if resume else 'new'} run: {run.path}")
    settings = DemoSettings(
        first_iters,
        second_iters,
        poll_interval,
        load_workers,
        rollout_timeout,
        seed,
        progressive,
        third_iters,
        progressive_timeout,
    )
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
