"""``rlops-rollout``: see each PolicyRollout's live checkpoint, promote a pointer by hand, or watch one.

``watch`` and ``promote`` run the same engine as the operator against a bare Ray cluster's dashboard
(or a RayService with ``--rayservice``), printing one line per step a person can follow.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from . import loop
from .engine import Decision, Engine
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
        if decision.kind == DecisionKind.APPLIED:
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
) -> None:
    """Watch a pointer and roll every new checkpoint out (Ctrl-C stops)."""
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
    )
    engine = Engine(spec, _target(spec))
    typer.echo(f"{_stamp()} watching {pointer} every {poll_interval:g} s -> {engine.target.describe()}")
    finished: list[str] = []

    last: dict[str, Any] = {}

    def enough(status: dict[str, Any], decisions: list[Decision]) -> bool:
        last["status"] = status
        ends = (DecisionKind.PROMOTED, DecisionKind.ROLLED_BACK, DecisionKind.FAILED)
        finished.extend(d.kind for d in decisions if d.kind in ends)
        return bool(max_rollouts) and len(finished) >= max_rollouts

    try:
        loop.run(engine, on_decision=_printer({}), until=enough, deadline_s=duration or None)
    except KeyboardInterrupt:
        typer.echo("stopped")
        _undo(engine, last.get("status"), Reason.ABORTED, "watch stopped mid-rollout")
    except Exception as exc:  # never a traceback, never an unverified candidate left applied
        typer.echo(f"{_stamp()} error: {type(exc).__name__}: {exc}", err=True)
        _undo(engine, last.get("status"), Reason.ABORTED, f"{type(exc).__name__}: {exc}")
        sys.exit(1)


@app.command()
def promote(
    pointer: Pointer,
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
) -> None:
    """Promote what a pointer names once, verify it, roll back on failure; exit 0 only if it is live."""
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
        outcome.extend(d.kind for d in decisions if d.kind in final)
        # settled once a final decision is made and nothing is left in flight (a rollback is finished)
        if outcome and not status.get("rollout"):
            return True
        # nothing applied and the same error for longer than the timeout: give up (exit 1)
        return (
            bool(status.get("lastError"))
            and not status.get("rollout")
            and (time.monotonic() - started > timeout)
        )

    try:
        loop.run(engine, on_decision=keep, until=settled, deadline_s=timeout + 60)
    except KeyboardInterrupt:
        typer.echo(f"{_stamp()} interrupted")
        _undo(engine, last.get("status"), Reason.ABORTED, "interrupted by the user")
        sys.exit(1)
    except Exception as exc:  # never a traceback, never a candidate left applied
        typer.echo(f"{_stamp()} error: {type(exc).__name__}: {exc}", err=True)
        _undo(engine, last.get("status"), Reason.ABORTED, f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    if last.get("status", {}).get("rollout"):
        _undo(engine, last["status"], Reason.TIMEOUT, "promote gave up waiting")
        sys.exit(1)
    if not outcome or outcome[-1] not in (DecisionKind.PROMOTED, DecisionKind.ALREADY_LIVE):
        error = (last.get("status") or {}).get("lastError")
        if not outcome and error:
            typer.echo(f"{_stamp()} gave up: {error.get('reason')}: {error.get('message')}", err=True)
        sys.exit(1)


def _undo(engine: Engine, status: dict[str, Any] | None, reason: str, why: str) -> None:
    """Roll a candidate that ``promote`` applied back (a few attempts), or say clearly what is left."""
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
