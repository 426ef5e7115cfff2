"""Fixtures for the serving tests: trained corridor checkpoints and Serve apps deployed the KubeRay way.

Apps are deployed through the dashboard's Serve REST API (``PUT /api/serve/applications/``), the same
declarative call KubeRay makes for ``serveConfigV2``: a ``user_config``-only change then reaches live
replicas as ``reconfigure()``, which is the hot-swap path under test.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from rlops_core.serve_client import ServeClient, ServeError
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
    """Deploys this module's Serve apps through the dashboard REST API (the shared client) and waits."""

    client: ServeClient
    base_url: str
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _put(self) -> None:
        self.client.deploy(list(self.apps.values()))

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
        app = self.client.application(name)
        return {} if app is None else app.model_dump()

    def wait_status(self, name: str, wanted: set[str], timeout: float = 120.0) -> dict[str, Any]:
        try:
            app = self.client.wait_status(name, wanted, timeout=timeout, interval=0.5, fail_on=())
        except ServeError as exc:
            raise AssertionError(exc.message) from None
        return app.model_dump()

    def remove(self, name: str) -> None:
        if self.apps.pop(name, None) is not None:
            self._put()


@pytest.fixture(scope="session")
def serve_apps(ray_cluster: Any, serve_endpoint: Any) -> Iterator[ServeApps]:
    apps = ServeApps(client=ray_cluster.serve_client(), base_url=serve_endpoint.url)
    yield apps
    if apps.apps:
        apps.apps.clear()
        apps._put()
    apps.client.close()


@pytest.fixture(scope="session")
def corridor_url(serve_apps: ServeApps, corridor_checkpoints: Checkpoints) -> str:
    """A read-only corridor app serving the final checkpoint (tests that swap use their own apps)."""
    return serve_apps.deploy("corridor-ro", {"checkpoint_uri": corridor_checkpoints.final})


@pytest.fixture
def wait() -> Any:
    """``wait(predicate, timeout=60)``: poll until truthy or fail (the shared helper, serve defaults)."""
    return functools.partial(wait_for, timeout=60.0, interval=0.25)
