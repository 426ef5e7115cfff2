"""Where a checkpoint goes live: the common interface and the endpoint's ``/metadata`` probe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from rlops_core.serve_client import ServeError, get_json


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


def judge_application(app_status: str, deployments: dict, deployment: str, message: str = "") -> Health:
    """Health of a Serve application from its status and its deployments' statuses.

    The same judgement for both targets: the dashboard's ``applications.<app>.deployments`` and
    KubeRay's ``applicationStatuses.<app>.serveDeploymentStatuses`` carry the same Serve statuses.
    """
    dep_status = str((deployments.get(deployment) or {}).get("status", ""))
    if app_status == "DEPLOY_FAILED" or dep_status == "DEPLOY_FAILED":
        return Health("failed", f"application {app_status or '?'}: {message}".strip())
    unhealthy = sorted(n for n, d in deployments.items() if str((d or {}).get("status", "")) != "HEALTHY")
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
