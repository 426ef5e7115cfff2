"""Deploy the policy application to a Ray cluster the way KubeRay does: ``PUT /api/serve/applications/``."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

SERVE_CONFIG = Path(__file__).resolve().parents[1] / "workloads" / "serve_config.yaml"


def serve_config(checkpoint_uri: str, port: int, app: str = "corridor") -> dict[str, Any]:
    """The shipped serveConfigV2 with ``checkpoint_uri`` set and the proxy on ``127.0.0.1:port``."""
    config = copy.deepcopy(yaml.safe_load(SERVE_CONFIG.read_text()))
    for application in config["applications"]:
        if application["name"] == app:
            for deployment in application.get("deployments", []):
                deployment.setdefault("user_config", {})["checkpoint_uri"] = checkpoint_uri
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    return config


def deploy(dashboard_url: str, headers: dict[str, str], config: dict[str, Any]) -> None:
    """Send a whole Serve config to the cluster (declarative: it replaces what runs)."""
    resp = httpx.put(f"{dashboard_url}/api/serve/applications/", json=config, headers=headers, timeout=60)
    if resp.status_code >= 400:
        raise RuntimeError(f"Serve deploy refused: HTTP {resp.status_code}: {resp.text[:500]}")


def wait_running(
    dashboard_url: str, headers: dict[str, str], app: str, endpoint: str, timeout: float = 180.0
) -> dict[str, Any]:
    """Wait until ``app`` is RUNNING and its ``/metadata`` answers; return that metadata."""
    deadline = time.monotonic() + timeout
    status, last_error = "unknown", ""
    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{dashboard_url}/api/serve/applications/", headers=headers, timeout=10).json()
            status = body.get("applications", {}).get(app, {}).get("status", "absent")
            if status == "RUNNING":
                meta = httpx.get(f"{endpoint}/metadata", timeout=5)
                if meta.status_code == 200:
                    return meta.json()
        except (httpx.HTTPError, ValueError) as exc:  # not up yet: keep waiting, report it on timeout
            last_error = f"; last error: {exc!r}"
        time.sleep(1.0)
    detail = f"status {status}{last_error}"
    raise TimeoutError(f"Serve application {app!r} not running after {timeout:.0f} s ({detail})")
