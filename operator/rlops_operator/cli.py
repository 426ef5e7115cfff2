"""``rlops-rollout``: see each PolicyRollout's live checkpoint, promote a pointer by hand, or watch one.

``watch`` and ``promote`` run the same engine as the operator against a bare Ray cluster's dashboard
(or a RayService with ``--rayservice``), printing one line per step a person can follow. With
``--strategy-file`` (the same camelCase mapping as a PolicyRollout's ``spec.strategy``) a new checkpoint
goes through shadow, the off-policy gate and canary steps. ``abort``, ``pause``, ``resume``, ``undo`` and
``promote --skip-analysis`` control a progressive rollout: a PolicyRollout's (by annotation) or a running
``watch --control-file``'s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from . import controls, loop
from .engine import Decision, Engine
from .progressive import PAUSED_ANNOTATION, TERMINAL, ProgressiveSpec, ProgressiveSpecError
from .settings import OperatorSettings
from .spec import RolloutSpec, SpecError, TargetSpec
from .status import DecisionKind, Reason, RolloutStatus
from .target_factory import build_target
from .targets import Target, TargetError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

Pointer = Annotated[str, typer.Option("--pointer", "-p", help="URI of the best_checkpoint.txt to watch")]
DashboardUrl = Annotated[
    str | None, typer.Option("--dashboard-url", help="Ray dashboard, e.g. http://127.0.0.1:8265 (bare Ray)")
]
RayService = Annotated[str | None, typer.Option("--rayservice", help="RayService name (KubeRay target)")]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the RayService / rollouts")]
App = Annotated[str, typer.Option("--app", help="Serve application name")]
Deployment = Annotated[str, typer.Option("--deployment", help="Serve deployment name")]
EndpointUrl = Annotated[
    str | None, typer.Option("--endpoint-url", help="Serve app base URL; its /metadata must show the new URI")
]
AllowedPrefix = Annotated[
    list[str] | None, typer.Option("--allowed-prefix", help="Allowed checkpoint prefix (repeatable)")
]
MinMetric = Annotated[float | None, typer.Option("--min-metric", help="Refuse checkpoints below this metric")]
RequireImprovement = Annotated[
    bool, typer.Option("--require-improvement/--no-require-improvement", help="Must beat the live metric")
]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to verify before rolling back")]
StrategyFile = Annotated[
    Path | None,
    typer.Option(
        "--strategy-file",
        help="YAML/JSON file holding spec.strategy (camelCase, e.g. type: Progressive); default Replace",
    ),
]
LogRoot = Annotated[
    str | None,
    typer.Option(
        "--log-root", help="Storage root of the Serve app's decision logs (default: above the pointer)"
    ),
]
ControlFile = Annotated[
    Path | None,
    typer.Option(
        "--control-file",
        help="JSON control file ({paused, command}) of a progressive rollout run by `watch`",
    ),
]
StatusFile = Annotated[
    Path | None,
    typer.Option(
        "--status-file",
        help="Write the status (the JSON a PolicyRollout's .status holds, status.progressive included) "
        "to this file after every step (atomically)",
    ),
]
RolloutName = Annotated[str | None, typer.Argument(help="PolicyRollout name (omit with --control-file)")]
Reason_ = Annotated[str, typer.Option("--reason", help="Why (recorded with the command)")]


def load_strategy(path: Path | None) -> ProgressiveSpec:
    """The strategy a ``--strategy-file`` holds (the same mapping as ``spec.strategy``; Replace without)."""
    if path is None:
        return ProgressiveSpec()
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe").load(path.read_text())
    except (OSError, YAMLError) as exc:
        raise typer.BadParameter(f"--strategy-file {path}: {exc}") from None
    if isinstance(data, dict) and set(data) == {"strategy"}:
        data = data["strategy"]  # a spec fragment is accepted too
    try:
        return ProgressiveSpec.from_resource(data)
    except ProgressiveSpecError as exc:
        raise typer.BadParameter(f"--strategy-file {path}: {exc}") from None


def _spec(
    pointer: str,
    dashboard_url: str | None,
    rayservice: str | None,
    namespace: str,
    app_name: str,
    deployment: str,
    endpoint_url: str | None,
    allowed_prefix: list[str] | None,
    min_metric: float | None,
    require_improvement: bool,
    timeout: float,
    poll_interval: float,
    strategy: ProgressiveSpec | None = None,
    log_root: str | None = None,
) -> RolloutSpec:
    try:
        return RolloutSpec(
            pointer=pointer,
            target=TargetSpec(
                application=app_name,
                deployment=deployment,
                ray_service=rayservice,
                namespace=namespace,
                dashboard_url=dashboard_url,
                endpoint_url=endpoint_url,
            ),
            allowed_prefixes=tuple(allowed_prefix or ()),
            poll_interval_s=poll_interval,
            min_metric=min_metric,
            require_improvement=require_improvement,
            rollout_timeout_s=timeout,
            name="cli",
            strategy=strategy or ProgressiveSpec(),
            log_root_uri=log_root,
        )
    except SpecError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _target(spec: RolloutSpec) -> Target:
    """The target the flags name; the dashboard token goes to the URL the user typed (and nowhere else)."""
    try:
        settings = OperatorSettings.from_env()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if spec.target.dashboard_url:
        settings = settings.allowing(spec.target.dashboard_url)
    try:
        return build_target(spec, settings)
    except TargetError as exc:
        raise typer.BadParameter(exc.message) from exc


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def _printer(started: dict[str, float]) -> Any:
    """Print one readable line per decision, with how long a rollout took."""

    def show(decision: Decision, status: dict[str, Any]) -> None:
        if decision.transition is not None:
            weight = f" [challenger {decision.weight:.0%}]" if decision.weight is not None else ""
            typer.echo(f"{_stamp()} {decision.transition} ({decision.reason}){weight}: {decision.message}")
        elif decision.kind == DecisionKind.APPLIED:
            started["t"] = time.monotonic()
            r = status.get("rollout") or {}
            metric = r.get("metric") or {}
            typer.echo(f"{_stamp()} pointer -> {decision.checkpoint_uri}")
            typer.echo(
                f"{_stamp()} checks passed: manifest complete, hashes match, "
                f"{metric.get('name', 'metric')}={metric.get('value')}"
            )
            typer.echo(f"{_stamp()} applied; waiting for the application and /metadata")
        elif decision.kind == DecisionKind.PROMOTED:
            typer.echo(
                f"{_stamp()} verified live in {decision.duration_s or 0:.1f} s: {decision.checkpoint_uri}"
            )
        elif decision.kind == DecisionKind.ROLLED_BACK:
            typer.echo(f"{_stamp()} ROLLED BACK: {decision.message}")
        elif decision.kind in (DecisionKind.REFUSED, DecisionKind.FAILED, DecisionKind.GATE_UNEVALUABLE):
            typer.echo(f"{_stamp()} refused ({decision.reason}): {decision.message}")
        elif decision.kind == DecisionKind.ERROR:
            typer.echo(f"{_stamp()} waiting ({decision.reason}): {decision.message}")
        else:
            typer.echo(f"{_stamp()} {decision.message}")

    return show


@app.command()
def watch(
    pointer: Pointer,
    dashboard_url: DashboardUrl = None,
    rayservice: RayService = None,
    namespace: Namespace = "default",
    app_name: App = "corridor",
    deployment: Deployment = "PolicyServer",
    endpoint_url: EndpointUrl = None,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="Seconds between pointer reads")
    ] = 2.0,
    allowed_prefix: AllowedPrefix = None,
    min_metric: MinMetric = None,
    require_improvement: RequireImprovement = False,
    timeout: Timeout = 120.0,
    duration: Annotated[
        float, typer.Option("--duration", help="Stop after this many seconds (0: run)")
    ] = 0.0,
    max_rollouts: Annotated[
        int, typer.Option("--max-rollouts", help="Stop after this many finished rollouts (0: run)")
    ] = 0,
    strategy_file: StrategyFile = None,
    log_root: LogRoot = None,
    control_file: ControlFile = None,
    status_file: StatusFile = None,
) -> None:
    """Watch a pointer and roll every new checkpoint out (Ctrl-C stops; a progressive rollout in
    progress is aborted: all traffic back to the champion)."""
    spec = _spec(
        pointer,
        dashboard_url,
        rayservice,
        namespace,
        app_name,
        deployment,
        endpoint_url,
        allowed_prefix,
        min_metric,
        require_improvement,
        timeout,
        poll_interval,
        load_strategy(strategy_file),
        log_root,
    )
    engine = Engine(spec, _target(spec))
    typer.echo(f"{_stamp()} watching {pointer} every {poll_interval:g} s -> {engine.target.describe()}")
    finished: list[str] = []

    last: dict[str, Any] = {}

    def enough(status: dict[str, Any], decisions: list[Decision]) -> bool:
        last["status"] = status
        _write_status_file(status_file, status)
        ends = (DecisionKind.PROMOTED, DecisionKind.ROLLED_BACK, DecisionKind.FAILED)
        finished.extend(d.kind for d in decisions if d.kind in ends)
        return bool(max_rollouts) and len(finished) >= max_rollouts

    notes = _control_reader(control_file)
    _stop_on_sigterm()
    try:
        final = loop.run(
            engine, on_decision=_printer({}), until=enough, deadline_s=duration or None, annotations=notes
        )
        last["status"] = final
    except KeyboardInterrupt:
        typer.echo("stopped")
        _undo(engine, last.get("status"), Reason.ABORTED, "watch stopped mid-rollout", status_file)
        return
    except Exception as exc:  # never a traceback, never an unverified candidate left applied
        typer.echo(f"{_stamp()} error: {type(exc).__name__}: {exc}", err=True)
        _undo(engine, last.get("status"), Reason.ABORTED, f"{type(exc).__name__}: {exc}", status_file)
        sys.exit(1)
    if _progressive_running(last.get("status")):  # --duration ended mid-rollout: champion only again
        why = "watch stopped mid-rollout (--duration)"
        _undo(engine, last.get("status"), Reason.ABORTED, why, status_file)


@app.command()
def promote(
    pointer: Annotated[
        str | None, typer.Option("--pointer", "-p", help="URI of the best_checkpoint.txt to promote")
    ] = None,
    dashboard_url: DashboardUrl = None,
    rayservice: RayService = None,
    namespace: Namespace = "default",
    app_name: App = "corridor",
    deployment: Deployment = "PolicyServer",
    endpoint_url: EndpointUrl = None,
    allowed_prefix: AllowedPrefix = None,
    min_metric: MinMetric = None,
    require_improvement: RequireImprovement = False,
    timeout: Timeout = 120.0,
    strategy_file: StrategyFile = None,
    log_root: LogRoot = None,
    control_file: ControlFile = None,
    status_file: StatusFile = None,
    skip_analysis: Annotated[
        bool,
        typer.Option(
            "--skip-analysis",
            help="Promote a progressive rollout in progress now (a recorded manual override): "
            "--rollout NAME or --control-file",
        ),
    ] = False,
    rollout: Annotated[
        str | None, typer.Option("--rollout", help="PolicyRollout to promote with --skip-analysis")
    ] = None,
    reason: Reason_ = "",
) -> None:
    """Promote what a pointer names once, verify it, roll back on failure; exit 0 only if it is live.

    With ``--strategy-file`` (Progressive) it runs the whole progressive rollout and exits 0 only when
    the challenger was promoted. ``--skip-analysis`` instead sends a manual promotion to a progressive
    rollout in progress (a PolicyRollout with ``--rollout``, or a ``watch`` with ``--control-file``).
    """
    if skip_analysis:
        _send(rollout, namespace, control_file, "promote", reason, skip_analysis=True)
        return
    if rollout is not None:
        raise typer.BadParameter("--rollout goes with --skip-analysis")
    if not pointer:
        raise typer.BadParameter("--pointer is required (or --skip-analysis with --rollout/--control-file)")
    strategy = load_strategy(strategy_file)
    spec = _spec(
        pointer,
        dashboard_url,
        rayservice,
        namespace,
        app_name,
        deployment,
        endpoint_url,
        allowed_prefix,
        min_metric,
        require_improvement,
        timeout,
        1.0,
        strategy,
        log_root,
    )
    engine = Engine(spec, _target(spec))
    final = {
        DecisionKind.ALREADY_LIVE,
        DecisionKind.PROMOTED,
        DecisionKind.ROLLED_BACK,
        DecisionKind.FAILED,
        DecisionKind.REFUSED,
        DecisionKind.GATE_UNEVALUABLE,
    }
    outcome: list[str] = []
    last: dict[str, Any] = {}
    show = _printer({})

    def keep(decision: Decision, status: dict[str, Any]) -> None:
        last["status"] = status
        show(decision, status)

    started = time.monotonic()

    def settled(status: dict[str, Any], decisions: list[Decision]) -> bool:
        last["status"] = status
        _write_status_file(status_file, status)
        outcome.extend(d.kind for d in decisions if d.kind in final)
        # settled once a final decision is made and nothing is left in flight (a rollback is finished)
        if outcome and not status.get("rollout"):
            return True
        # nothing applied and the same error for longer than the timeout: give up (exit 1)
        return (
            bool(status.get("lastError"))
            and not status.get("rollout")
            and not _progressive_running(status)
            and (time.monotonic() - started > timeout)
        )

    longest = timeout + 60
    if strategy.progressive:  # shadow, then every step at its limit
        longest += (
            strategy.shadow.max_duration_seconds + len(strategy.steps) * strategy.analysis.max_step_seconds
        )
    try:
        loop.run(
            engine,
            on_decision=keep,
            until=settled,
            deadline_s=longest,
            annotations=_control_reader(control_file),
        )
    except KeyboardInterrupt:
        typer.echo(f"{_stamp()} interrupted")
        _undo(engine, last.get("status"), Reason.ABORTED, "interrupted by the user")
        sys.exit(1)
    except Exception as exc:  # never a traceback, never a candidate left applied
        typer.echo(f"{_stamp()} error: {type(exc).__name__}: {exc}", err=True)
        _undo(engine, last.get("status"), Reason.ABORTED, f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    if last.get("status", {}).get("rollout") or _progressive_running(last.get("status")):
        _undo(engine, last["status"], Reason.TIMEOUT, "promote gave up waiting")
        sys.exit(1)
    if not outcome or outcome[-1] not in (DecisionKind.PROMOTED, DecisionKind.ALREADY_LIVE):
        error = (last.get("status") or {}).get("lastError")
        if not outcome and error:
            typer.echo(f"{_stamp()} gave up: {error.get('reason')}: {error.get('message')}", err=True)
        sys.exit(1)


def _write_status_file(path: Path | None, status: dict[str, Any]) -> None:
    """The status as JSON, replaced atomically (a reader never sees half a file); never fatal."""
    if path is None:
        return
    import json
    import os
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            json.dump(status, f, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except (OSError, ValueError) as exc:
        typer.echo(f"{_stamp()} status file {path} not written: {exc}", err=True)


def _progressive_running(status: dict[str, Any] | None) -> bool:
    prog = (status or {}).get("progressive")
    return isinstance(prog, dict) and prog.get("stage") not in TERMINAL


def _stop_on_sigterm() -> None:
    """SIGTERM stops like Ctrl-C (a rollout in flight is rolled back or aborted before exiting)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _control_reader(path: Path | None) -> Any:
    if path is None:
        return None
    return lambda: controls.read_control_file(path)


def _abort_progressive(engine: Engine, status: dict[str, Any], why: str) -> dict[str, Any]:
    """All traffic back to the champion (a few attempts), or say clearly what is left; the last status."""
    for _ in range(5):
        try:
            result = engine.abort_progressive(status, why)
        except Exception as exc:
            typer.echo(f"{_stamp()} abort error: {type(exc).__name__}: {exc}", err=True)
            break
        status = result.status
        for decision in result.decisions:
            typer.echo(f"{_stamp()} {decision.message}")
        if not _progressive_running(status):
            return status
        time.sleep(1.0)
    prog = status.get("progressive") or {}
    typer.echo(
        f"{_stamp()} COULD NOT ABORT: {prog.get('challengerUri')} may still have a share of the traffic on "
        f"{engine.target.describe()}; set user_config.challenger to null by hand",
        err=True,
    )
    return status


def _undo(
    engine: Engine, status: dict[str, Any] | None, reason: str, why: str, status_file: Path | None = None
) -> None:
    """Roll a candidate that ``promote`` applied back (a few attempts), or say clearly what is left."""
    if _progressive_running(status):
        assert status is not None
        _write_status_file(status_file, _abort_progressive(engine, status, why))
        return
    if not status or not status.get("rollout"):
        return
    state = engine.abort(RolloutStatus.parse(status), reason, why)
    uri = state.rollout.checkpoint_uri if state.rollout else "?"
    for _ in range(5):
        try:
            result = engine.step(state)
        except Exception as exc:
            typer.echo(f"{_stamp()} rollback error: {type(exc).__name__}: {exc}", err=True)
            break
        state = result.state
        for decision in result.decisions:
            typer.echo(f"{_stamp()} {decision.message}")
        if state.rollout is None:
            return
        time.sleep(1.0)
    prev = state.rollout.previous.checkpoint_uri if state.rollout and state.rollout.previous else None
    typer.echo(
        f"{_stamp()} COULD NOT ROLL BACK: {uri} may still be applied to {engine.target.describe()}; "
        + (f"restore {prev} by hand" if prev else "nothing to roll back to"),
        err=True,
    )


def _send(
    rollout: str | None,
    namespace: str,
    control_file: Path | None,
    action: str,
    reason: str = "",
    *,
    skip_analysis: bool = False,
    paused: bool | None = None,
) -> None:
    """Deliver a control to a PolicyRollout (annotation) or to a running ``watch`` (control file)."""
    if (rollout is None) == (control_file is None):
        raise typer.BadParameter("name a PolicyRollout or give --control-file (one of the two)")
    command = None
    if paused is None:
        command = controls.new_command(action, skip_analysis=skip_analysis, reason=reason)
    try:
        if control_file is not None:
            controls.write_control_file(control_file, paused=paused, command=command)
            where = f"control file {control_file}"
        else:
            assert rollout is not None
            notes: dict[str, str | None] = (
                {PAUSED_ANNOTATION: "true" if paused else None}
                if paused is not None
                else {controls.COMMAND_ANNOTATION: controls.command_json(command)}  # type: ignore[arg-type]
            )
            controls.annotate_rollout(rollout, namespace, notes)
            where = f"PolicyRollout {namespace}/{rollout}"
    except (controls.ControlError, OSError) as exc:
        typer.echo(f"{_stamp()} {action} not sent: {exc}", err=True)
        sys.exit(1)
    what = f"{action} (id {command.id})" if command is not None else action
    typer.echo(f"{_stamp()} {what} sent to {where}; the next poll applies it (see Events / the watch output)")


@app.command()
def abort(
    rollout: RolloutName = None,
    namespace: Namespace = "default",
    control_file: ControlFile = None,
    reason: Reason_ = "",
) -> None:
    """Abort a progressive rollout: all traffic back to the champion at once."""
    _send(rollout, namespace, control_file, "abort", reason)


@app.command()
def undo(
    rollout: RolloutName = None,
    namespace: Namespace = "default",
    control_file: ControlFile = None,
    reason: Reason_ = "",
) -> None:
    """Back to the previous champion (after a promotion); during a rollout the same as abort."""
    _send(rollout, namespace, control_file, "undo", reason)


@app.command()
def pause(
    rollout: RolloutName = None, namespace: Namespace = "default", control_file: ControlFile = None
) -> None:
    """Hold the current step of a progressive rollout (its clock stops; abort rules still apply)."""
    _send(rollout, namespace, control_file, "pause", paused=True)


@app.command()
def resume(
    rollout: RolloutName = None, namespace: Namespace = "default", control_file: ControlFile = None
) -> None:
    """Resume a paused step (removes the rlops.io/paused annotation; spec.strategy.paused stays as set)."""
    _send(rollout, namespace, control_file, "resume", paused=False)


def _metric_text(metric: Any) -> str:
    """``name=value`` for a stored metric; ``-`` when there is none or it is not a number."""
    if not isinstance(metric, dict) or not isinstance(metric.get("value"), int | float):
        return "-"
    return f"{metric.get('name')}={metric['value']:g}"


@app.command()
def status(
    namespace: Namespace = "default",
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
) -> None:
    """Show each PolicyRollout's phase and live checkpoint (needs a kubeconfig or in-cluster access)."""
    from kubernetes import client

    from .rayservice import api_client

    api = client.CustomObjectsApi(api_client())
    if all_namespaces:
        items = api.list_cluster_custom_object("rlops.io", "v1alpha1", "policyrollouts")["items"]
    else:
        items = api.list_namespaced_custom_object("rlops.io", "v1alpha1", namespace, "policyrollouts")[
            "items"
        ]
    if not items:
        typer.echo("no PolicyRollouts")
        return
    rows = [("NAMESPACE", "NAME", "PHASE", "LIVE CHECKPOINT", "METRIC", "MESSAGE")]
    for item in items:
        st = item.get("status") if isinstance(item.get("status"), dict) else {}
        live = st.get("live") if isinstance(st.get("live"), dict) else {}
        metric = live.get("metric")
        value = _metric_text(metric)
        rows.append(
            (
                item["metadata"].get("namespace", ""),
                item["metadata"]["name"],
                st.get("phase", "-"),
                live.get("checkpointUri", "-"),
                value,
                (st.get("message") or "")[:80],
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    app()
