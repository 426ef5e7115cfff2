"""A bare Ray cluster as a target: the dashboard's Serve REST API (the same one KubeRay calls).

``PUT /api/serve/applications/`` is declarative for every application deployed by config, so the
request carries all of them, each as deployed, with only the target deployment's checkpoint changed.
Ray 2.60 clusters use token authentication: the token (``RAY_AUTH_TOKEN``) is sent only to allowed
dashboard hosts, never across a redirect, and never written into a message
(:mod:`rlops_core.serve_client` enforces all three).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from rlops_core.serve_client import ApplicationStatus, ServeClient, ServeDetails, ServeError

from . import serveconfig
from .targets import Health, Lineage, TargetError, TargetMissing, judge_application

_HTTP_KEYS = ("host", "port", "root_path", "request_timeout_s", "keep_alive_timeout_s")


class DashboardTarget:
    """One deployment of one Serve application on a Ray cluster reached through its dashboard.

    ``allowed_hosts``: the hosts the token may be sent to (``host`` or ``host:port``); ``None`` allows
    the dashboard URL's own host (a caller that typed the URL itself, like the CLI).
    """

    def __init__(
        self,
        dashboard_url: str,
        application: str,
        deployment: str,
        token: str | None = None,
        timeout: float = 15.0,
        *,
        allowed_hosts: Collection[str] | None = None,
    ) -> None:
        token = token if token is not None else os.environ.get("RAY_AUTH_TOKEN", "")
        try:
            self.client = ServeClient(dashboard_url, token, allowed_hosts=allowed_hosts, timeout=timeout)
        except ValueError as exc:
            raise TargetError("InvalidDashboardUrl", f"dashboardUrl: {exc}") from None
        self.url = self.client.url
        self.application = application
        self.deployment = deployment
        self.timeout = timeout

    def describe(self) -> str:
        return f"Serve app {self.application}/{self.deployment} at {self.url}"

    def details(self) -> ServeDetails:
        """The Serve instance details (``GET /api/serve/applications/``), shape-checked."""
        try:
            return self.client.details()
        except ServeError as exc:
            raise TargetError(exc.reason, exc.message) from None

    def _app(self, details: ServeDetails) -> ApplicationStatus:
        app = details.applications.get(self.application)
        if app is None:
            raise TargetMissing(
                "ApplicationMissing", f"Serve application {self.application!r} is not deployed"
            )
        return app

    def _config(self, app: ApplicationStatus) -> dict[str, Any]:
        if not app.declarative or app.deployed_app_config is None:
            raise TargetError(
                "NotDeclarative",
                f"application {self.application!r} was not deployed from a config (serve.run?); "
                "deploy it with `serve deploy` or the REST API so it can be updated",
            )
        return app.deployed_app_config

    def _checkpoint_of(self, config: dict[str, Any]) -> str | None:
        try:
            return serveconfig.checkpoint_of({"applications": [config]}, self.application, self.deployment)
        except serveconfig.ServeConfigError as exc:
            raise TargetError(
                "InvalidServeConfig", f"{self.describe()}: deployed config unusable: {exc}"
            ) from None

    def current_checkpoint(self) -> str | None:
        return self._checkpoint_of(self._config(self._app(self.details())))

    def current_serving(self) -> serveconfig.Serving:
        """The champion and the challenger slot the deployed config gives the deployment now."""
        config = self._config(self._app(self.details()))
        try:
            return serveconfig.serving_of({"applications": [config]}, self.application, self.deployment)
        except serveconfig.ServeConfigError as exc:
            raise TargetError(
                "InvalidServeConfig", f"{self.describe()}: deployed config unusable: {exc}"
            ) from None

    def apply_serving(self, serving: serveconfig.Serving, lineage: Lineage) -> None:
        """Deploy the champion, the challenger slot and the decision-log root in one PUT."""
        assert serving.checkpoint_uri, "a serving config names a champion"
        self.apply(serving.checkpoint_uri, lineage, serving)

    def apply(self, checkpoint_uri: str, lineage: Lineage, slots: serveconfig.Serving | None = None) -> None:
        details = self.details()
        self._config(self._app(details))
        apps = details.declarative_configs()
        try:
            new = serveconfig.with_checkpoint_dict(
                {"applications": apps}, self.application, self.deployment, checkpoint_uri, slots
            )
        except serveconfig.ServeConfigError as exc:
            raise TargetError(
                "InvalidServeConfig", f"{self.describe()}: deployed config unusable: {exc}"
            ) from None
        http_options = details.http_options or {}
        try:
            self.client.deploy(
                new["applications"],
                http_options={k: http_options[k] for k in _HTTP_KEYS if http_options.get(k) is not None},
                proxy_location=details.proxy_location,
            )
        except ServeError as exc:
            raise TargetError(exc.reason, exc.message) from None

    def health(self, checkpoint_uri: str) -> Health:
        app = self._app(self.details())
        configured = self._checkpoint_of(self._config(app))
        if configured != checkpoint_uri:
            return Health("pending", f"config names {configured}, waiting for {checkpoint_uri}")
        deps = {name: dep.model_dump() for name, dep in app.deployments.items()}
        target = app.deployments.get(self.deployment)
        message = app.message or (target.message if target else "")
        return judge_application(app.status, deps, self.deployment, message)
