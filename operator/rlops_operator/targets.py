"""Where a checkpoint goes live: the common interface and the endpoint's ``/metadata`` probe."""

from __future__ import annotations

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
    """``state`` is ``healthy``, ``pending`` or ``failed``; ``detail`` says why."""

    state: str
    detail: str = ""


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
    """
    deps = deployment_statuses(deployments, "application status")
    dep_status = (deps.get(deployment) or {}).get("status", "")
    app_status = str(app_status or "")
    if app_status == "DEPLOY_FAILED" or dep_status == "DEPLOY_FAILED":
        return Health("failed", f"application {app_status or '?'}: {message}".strip())
    unhealthy = sorted(n for n, d in deps.items() if d["status"] != "HEALTHY")
    if app_status == "RUNNING" and dep_status == "HEALTHY" and not unhealthy:
        return Health("healthy", "RUNNING, HEALTHY")
    if unhealthy:
        return Health("pending", f"application {app_status or '?'}, deployments not HEALTHY: {unhealthy}")
    return Health("pending", f"application {app_status or '?'}, deployment {dep_status or '?'}")


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
    """What the endpoint's ``/metadata`` says: the live URI and the last failed swap, if any."""

    checkpoint_uri: str | None
    failed_uri: str | None
    error: str | None


def probe_metadata(endpoint_url: str, timeout: float = 3.0) -> Metadata | None:
    """GET ``<endpoint>/metadata`` (httpx, no credentials, no redirects, total deadline ``timeout``).

    None when the endpoint cannot be reached or answers something that is not the metadata object.
    """
    try:
        body = get_json(endpoint_url.rstrip("/") + "/metadata", timeout=timeout, max_bytes=64 * 1024)
    except (ServeError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    last = body.get("last_error")
    failed = last.get("checkpoint_uri") if isinstance(last, dict) else None
    error = last.get("error") if isinstance(last, dict) else None
    uri = body.get("checkpoint_uri")
    return Metadata(
        uri if isinstance(uri, str) else None,
        failed if isinstance(failed, str) else None,
        error if isinstance(error, str) else None,
    )
