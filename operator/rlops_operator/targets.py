"""Where a checkpoint goes live: the common interface and the endpoint's ``/metadata`` probe."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from rlops_core.serve_client import ServeError, get_json


class TargetReason(StrEnum):
    """The ``reason`` of the errors both targets raise (``HTTP<code>`` is added for other answers)."""

    RAY_SERVICE_MISSING = "RayServiceMissing"
    APPLICATION_MISSING = "ApplicationMissing"
    NO_SERVE_CONFIG = "NoServeConfig"
    INVALID_SERVE_CONFIG = "InvalidServeConfig"  # the serve config's shape or YAML is unusable
    UNEXPECTED_STATUS = "UnexpectedStatus"  # a status or answer not in the documented shape
    NOT_DECLARATIVE = "NotDeclarative"
    CONFLICT = "Conflict"
    API_UNREACHABLE = "APIUnreachable"
    DASHBOARD_UNREACHABLE = "DashboardUnreachable"
    UNAUTHORIZED = "Unauthorized"
    REDIRECT = "Redirect"
    INVALID_DASHBOARD_URL = "InvalidDashboardUrl"
    INVALID_TARGET = "InvalidTarget"


class TargetError(Exception):
    """The target could not be read or updated right now (retried on the next poll)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TargetMissing(TargetError):
    """The target (RayService, Serve application) does not exist."""


@dataclass(frozen=True)
class Health:
    """``state`` is ``healthy``, ``pending`` or ``failed``; ``detail`` says why.

    ``scaling``: the deployments Serve is autoscaling (``UPSCALING``/``DOWNSCALING``) while the
    application is ``RUNNING``. Empty when every deployment is ``HEALTHY``: only then does Serve's status
    itself say that every replica runs the current config (see :func:`judge_application`).
    """

    state: str
    detail: str = ""
    scaling: tuple[str, ...] = ()


# Serve's DeploymentStatus values (ray/serve/_private/common.py, Ray 2.60): UPDATING, HEALTHY, UNHEALTHY,
# DEPLOY_FAILED, UPSCALING, DOWNSCALING. ApplicationStatus (ray/serve/schema.py): NOT_STARTED, DEPLOYING,
# DEPLOY_FAILED, RUNNING, UNHEALTHY, DELETING.
SCALING_STATUSES = frozenset({"UPSCALING", "DOWNSCALING"})
SERVING_STATUSES = frozenset({"HEALTHY"}) | SCALING_STATUSES


def deployment_statuses(deployments: Any, where: str) -> dict[str, dict[str, str]]:
    """``{name: {"status": str, "message": str}}`` from a Serve deployments mapping, shape-checked.

    Raises ``TargetError(UnexpectedStatus)`` naming ``where`` for anything else (a list, a status that
    is not a string, a deployment entry that is not a mapping).
    """
    if deployments is None:
        return {}
    if not isinstance(deployments, dict):
        message = f"{where}: deployments must be a mapping, got {_kind(deployments)}"
        raise TargetError(TargetReason.UNEXPECTED_STATUS, message)
    out: dict[str, dict[str, str]] = {}
    for name, entry in deployments.items():
        if not isinstance(entry, dict):
            raise TargetError(
                TargetReason.UNEXPECTED_STATUS,
                f"{where}: deployment {name!r} must be a mapping with a status, got {_kind(entry)}",
            )
        out[str(name)] = {
            "status": text_field(entry, "status", f"{where}: deployment {name!r}"),
            "message": text_field(entry, "message", f"{where}: deployment {name!r}"),
        }
    return out


def text_field(entry: dict[str, Any], key: str, where: str) -> str:
    """``entry[key]`` as a string ("" when absent or null); anything else is ``UnexpectedStatus``."""
    value = entry.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TargetError(
            TargetReason.UNEXPECTED_STATUS, f"{where}: {key} must be a string, got {_kind(value)}"
        )
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {str(value)[:60]!r}"


def judge_application(app_status: str, deployments: dict, deployment: str, message: str = "") -> Health:
    """Health of a Serve application from its status and its deployments' statuses.

    The same judgement for both targets: the dashboard's ``applications.<app>.deployments`` and
    KubeRay's ``applicationStatuses.<app>.serveDeploymentStatuses`` carry the same Serve statuses.
    A shape that is not Serve's (a deployment status that is not a mapping) is ``UnexpectedStatus``.

    - ``failed``: the application or any of its deployments is ``DEPLOY_FAILED`` (Serve gave up on the
      config: a replica's constructor, ``reconfigure()`` or health check kept failing while it deployed).
    - ``healthy``: the application is ``RUNNING``, the deployment is in its status, and every deployment
      is ``HEALTHY``, ``UPSCALING`` or ``DOWNSCALING``. Serve reports the application ``RUNNING`` while it
      autoscales; replicas being added or removed do not stop the others from serving. Serve's status is
      exact only when everything is ``HEALTHY`` (every replica RUNNING at the target version): an
      autoscaling decision in the middle of a config update turns ``UPDATING`` into ``UPSCALING`` before
      every replica has applied the update. ``Health.scaling`` names those deployments, and the
      verification relies on the endpoint's ``/metadata`` answers (:func:`probe_metadata`: several
      replicas asked, all must name the new checkpoint) for them.
    - ``pending`` otherwise: ``DEPLOYING``/``NOT_STARTED``/``UPDATING`` (the config is being applied),
      ``UNHEALTHY`` (Serve replaces failing replicas; a deployment that does not recover fails the
      rollout at its timeout), ``DELETING``, a deployment missing from the status, a status Serve 2.60
      does not have.
    """
    deps = deployment_statuses(deployments, "application status")
    app_status = str(app_status or "")
    statuses = {name: d["status"] or "?" for name, d in deps.items()}
    failed = sorted(name for name, status in statuses.items() if status == "DEPLOY_FAILED")
    if app_status == "DEPLOY_FAILED" or failed:
        which = f" (deployments DEPLOY_FAILED: {failed})" if failed and app_status != "DEPLOY_FAILED" else ""
        return Health("failed", f"application {app_status or '?'}{which}: {message}".strip().rstrip(":"))
    not_serving = sorted(
        f"{name} {status}" for name, status in statuses.items() if status not in SERVING_STATUSES
    )
    if app_status == "RUNNING" and deployment in statuses and not not_serving:
        scaling = tuple(sorted(name for name, status in statuses.items() if status in SCALING_STATUSES))
        if not scaling:
            return Health("healthy", "RUNNING, HEALTHY")
        moving = ", ".join(f"{name} {statuses[name]}" for name in scaling)
        return Health(
            "healthy",
            f"RUNNING while Serve autoscales ({moving}): serving; whether every replica applied the new "
            "config is for the endpoint's /metadata to show",
            scaling,
        )
    said = f": {message}" if message else ""
    if app_status == "UNHEALTHY":
        return Health(
            "pending",
            f"application UNHEALTHY, deployments not serving: {not_serving}{said} (Serve replaces failing "
            "replicas; the rollout fails at its timeout if they do not recover)",
        )
    if deployment not in statuses:
        return Health(
            "pending", f"application {app_status or '?'}, no status for deployment {deployment!r} yet"
        )
    if not_serving:
        return Health(
            "pending", f"application {app_status or '?'}, deployments not serving: {not_serving}{said}"
        )
    return Health("pending", f"application {app_status or '?'}, deployment {statuses[deployment]}{said}")


@dataclass(frozen=True)
class Lineage:
    """Where a checkpoint came from, recorded on the target when it goes live."""

    checkpoint_uri: str
    metric_name: str = ""
    metric_value: float | None = None
    experiment: str = ""
    trial_id: str = ""
    promoted_at: str = ""
    rollout: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Target(Protocol):
    """A Serve deployment whose ``user_config.checkpoint_uri`` the engine changes."""

    def describe(self) -> str:
        """A short human name for logs and events."""
        ...

    def current_checkpoint(self) -> str | None:
        """The checkpoint URI the target's config names now."""
        ...

    def apply(self, checkpoint_uri: str, lineage: Lineage) -> None:
        """Change only the deployment's checkpoint URI."""
        ...

    def health(self, checkpoint_uri: str) -> Health:
        """Whether the application runs the config that names ``checkpoint_uri`` and is healthy."""
        ...


class ProgressiveTarget(Target, Protocol):
    """A target that can also hold a challenger slot (progressive delivery, docs/progressive.md)."""

    def current_serving(self) -> Any:
        """The :class:`~rlops_operator.serveconfig.Serving` the config names now."""
        ...

    def apply_serving(self, serving: Any, lineage: Lineage) -> None:
        """Change the champion, the challenger slot and the decision-log root, in one update."""
        ...


@dataclass(frozen=True)
class Metadata:
    """What the endpoint's ``/metadata`` says, over every replica that answered a probe.

    ``checkpoint_uri``: the URI every answering replica serves; None when they name different ones (a
    replica still on the old checkpoint: not live yet). ``failed_uri``/``error``: the latest failed swap
    any answering replica reports. ``replicas``: replica id → the checkpoint it serves.
    """

    checkpoint_uri: str | None
    failed_uri: str | None
    error: str | None
    replicas: dict[str, str | None] = field(default_factory=dict)

    def describe(self) -> str:
        """``s3://b`` when the replicas agree; else which replica serves what."""
        if self.checkpoint_uri is not None or not self.replicas:
            return str(self.checkpoint_uri)
        return "different checkpoints: " + ", ".join(f"{r} {u}" for r, u in sorted(self.replicas.items()))


# Answers a probe asks for: Serve routes each request to a replica of its choice, so several answers
# reach several replicas (with 4 replicas, 8 answers miss a given one with probability (3/4)^8 = 10%; the
# verification asks again on every poll until all answers agree).
METADATA_SAMPLES = 8


def probe_metadata(
    endpoint_url: str, timeout: float = 3.0, samples: int = METADATA_SAMPLES
) -> Metadata | None:
    """GET ``<endpoint>/metadata`` up to ``samples`` times (httpx, no credentials, no redirects, one
    connection each, all within ``timeout``) and combine what the replicas that answered say.

    None when the endpoint cannot be reached or its first answer is not the metadata object; a later
    answer that fails ends the probe with what was gathered.
    """
    deadline = time.monotonic() + timeout
    answers: list[_Answer] = []
    for _ in range(max(1, samples)):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        answer = _probe_once(endpoint_url, left)
        if answer is None:
            break
        answers.append(answer)
    if not answers:
        return None
    replicas = {a.replica or f"answer {i + 1}": a.checkpoint_uri for i, a in enumerate(answers)}
    uris = {a.checkpoint_uri for a in answers}
    failures = [a for a in answers if a.failed_uri is not None]
    latest = max(failures, key=lambda a: a.failed_at) if failures else None
    return Metadata(
        uris.pop() if len(uris) == 1 else None,
        latest.failed_uri if latest else None,
        latest.error if latest else None,
        replicas,
    )


@dataclass(frozen=True)
class _Answer:
    """One replica's ``/metadata`` answer, reduced to what the verification needs."""

    checkpoint_uri: str | None
    failed_uri: str | None
    error: str | None
    failed_at: str
    replica: str


def _probe_once(endpoint_url: str, timeout: float) -> _Answer | None:
    try:
        body = get_json(endpoint_url.rstrip("/") + "/metadata", timeout=timeout, max_bytes=64 * 1024)
    except (ServeError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    last = body.get("last_error")
    last = last if isinstance(last, dict) else {}

    def text(source: dict[str, Any], key: str) -> str | None:
        value = source.get(key)
        return value if isinstance(value, str) else None

    return _Answer(
        text(body, "checkpoint_uri"),
        text(last, "checkpoint_uri"),
        text(last, "error"),
        text(last, "at") or "",
        text(body, "replica") or "",
    )
