"""Serve apps deployed the KubeRay way (the dashboard's Serve REST API) for the serving tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlops_core.serve_client import ServeClient, ServeError

IMPORT_PATH = "workloads.serve_app:app"


@dataclass
class Checkpoints:
    """Two manifested corridor checkpoints from one PPO run: ``final`` (~9.4 mean return) and ``early``."""

    final: str
    early: str


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
