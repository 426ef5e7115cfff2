"""Deploy the policy application to a Ray cluster the way KubeRay does: ``PUT /api/serve/applications/``.

The REST calls and the waiting are :class:`rlops_core.serve_client.ServeClient`'s; this module only
builds the demo's config and waits for the endpoint's ``/metadata`` on top.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from rlops_core.serve_client import ServeClient, ServeError, get_json

SERVE_CONFIG = Path(__file__).resolve().parents[1] / "workloads" / "serve_config.yaml"


def serve_config(
    checkpoint_uri: str, port: int, app: str = "corridor", decision_log_root: str | None = None
) -> dict[str, Any]:
    """The shipped serveConfigV2 with ``checkpoint_uri`` set and the proxy on ``127.0.0.1:port``.

    The shipped ``http_options`` limits (idle keep-alive, request deadline) are kept.
    ``decision_log_root``: progressive delivery's decision logs go under this storage root
    (``user_config.decision_log.root``, docs/progressive.md); None leaves the shipped setting.
    """
    config = copy.deepcopy(yaml.safe_load(SERVE_CONFIG.read_text()))
    for application in config["applications"]:
        if application["name"] == app:
            for deployment in application.get("deployments", []):
                user_config = deployment.setdefault("user_config", {})
                user_config["checkpoint_uri"] = checkpoint_uri
                if decision_log_root is not None:
                    user_config["decision_log"] = {
                        **user_config.get("decision_log", {}),
                        "root": decision_log_root,
                    }
    # Keep the shipped limits (keep_alive_timeout_s, request_timeout_s); only the listener moves.
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
    return config


def _client(dashboard_url: str, headers: dict[str, str], timeout: float = 60.0) -> ServeClient:
    auth = headers.get("Authorization", "")
    token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
    return ServeClient(dashboard_url, token, timeout=timeout)


def deploy(dashboard_url: str, headers: dict[str, str], config: dict[str, Any]) -> None:
    """Send a whole Serve config to the cluster (declarative: it replaces what runs)."""
    with _client(dashboard_url, headers) as client:
        client.put(config)


def wait_running(
    dashboard_url: str, headers: dict[str, str], app: str, endpoint: str, timeout: float = 180.0
) -> dict[str, Any]:
    """Wait until ``app`` is RUNNING and its ``/metadata`` answers; return that metadata."""
    seen: dict[str, Any] = {}

    def metadata_answers(_: object) -> bool:
        try:
            body = get_json(f"{endpoint}/metadata", timeout=5)
        except ServeError:
            return False
        seen["metadata"] = body
        return isinstance(body, dict)

    with _client(dashboard_url, headers, timeout=10) as client:
        client.wait_running(app, timeout=timeout, interval=1.0, ready=metadata_answers)
    return seen["metadata"]
