"""Fixtures for the serving tests: trained corridor checkpoints and Serve apps deployed the KubeRay way.

Apps are deployed through the dashboard's Serve REST API (``PUT /api/serve/applications/``), the same
declarative call KubeRay makes for ``serveConfigV2``: a ``user_config``-only change then reaches live
replicas as ``reconfigure()``, which is the hot-swap path under test.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.waiting import wait_for

IMPORT_PATH = "workloads.serve_app:app"


@dataclass
class Checkpoints:
    """Two manifested corridor checkpoints from one PPO run: ``final`` (~9.4 mean return) and ``early``."""

    final: str
    early: str


@pytest.fixture(scope="session")
def corridor_checkpoints(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    """Train PPO on the corridor with the tutorial settings (10 x 400 steps) on the shared cluster."""
    from bench.serve_bench import train_corridor_checkpoints

    root = tmp_path_factory.mktemp("serve-checkpoints")
    out = train_corridor_checkpoints(root, iterations=10, early_at=2)
    return Checkpoints(final=out["final"], early=out["early"])


@dataclass
class ServeApps:
    """Deploys this module's Serve apps through the dashboard REST API and waits for them."""

    dashboard_url: str
    headers: dict[str, str]
    base_url: str
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _put(self) -> None:
        body = {"applications": list(self.apps.values())}
        resp = httpx.put(
            f"{self.dashboard_url}/api/serve/applications/", json=body, headers=self.headers, timeout=60
        )
        assert resp.status_code == 200, resp.text

    def deploy(
        self,
        name: str,
        user_config: dict[str, Any],
        *,
        runtime_env: dict[str, Any] | None = None,
        wait: bool = True,
        num_replicas: int = 1,
    ) -> str:
        """Create or update app ``name`` at route ``/name``; return its URL."""
        app: dict[str, Any] = {
            "name": name,
            "route_prefix": f"/{name}",
            "import_path": IMPORT_PATH,
            "deployments": [
                {"name": "PolicyServer", "num_replicas": num_replicas, "user_config": user_config}
            ],
        }
        if runtime_env:
            app["runtime_env"] = runtime_env
        self.apps[name] = app
        self._put()
        if wait:
            self.wait_status(name, {"RUNNING"})
        return self.url(name)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def status(self, name: str) -> dict[str, Any]:
        resp = httpx.get(f"{self.dashboard_url}/api/serve/applications/", headers=self.headers, timeout=30)
        resp.raise_for_status()
        return resp.json().get("applications", {}).get(name, {})

    def wait_status(self, name: str, wanted: set[str], timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            seen = self.status(name)
            if seen.get("status") in wanted:
                return seen
            time.sleep(0.5)
        raise AssertionError(f"app {name} never reached {wanted}: {seen.get('status')} {seen.get('message')}")

    def remove(self, name: str) -> None:
        if self.apps.pop(name, None) is not None:
            self._put()


@pytest.fixture(scope="session")
def serve_apps(ray_cluster: Any, serve_endpoint: Any) -> Iterator[ServeApps]:
    apps = ServeApps(
        dashboard_url=ray_cluster.dashboard_url, headers=ray_cluster.auth_headers, base_url=serve_endpoint.url
    )
    yield apps
    if apps.apps:
        apps.apps.clear()
        apps._put()


@pytest.fixture(scope="session")
def corridor_url(serve_apps: ServeApps, corridor_checkpoints: Checkpoints) -> str:
    """A read-only corridor app serving the final checkpoint (tests that swap use their own apps)."""
    return serve_apps.deploy("corridor-ro", {"checkpoint_uri": corridor_checkpoints.final})


@pytest.fixture
def wait() -> Any:
    """``wait(predicate, timeout=60)``: poll until truthy or fail (the shared helper, serve defaults)."""
    return functools.partial(wait_for, timeout=60.0, interval=0.25)
