"""A bare Ray cluster as a target: the dashboard's Serve REST API (the same one KubeRay calls).

``PUT /api/serve/applications/`` is declarative for every application deployed by config, so the
request carries all of them, each as deployed, with only the target deployment's checkpoint changed.
Ray 2.60 clusters use token authentication: the token comes from ``RAY_AUTH_TOKEN``.
"""

from __future__ import annotations

import os
import urllib.error
from typing import Any

from . import serveconfig
from .targets import Health, Lineage, TargetError, TargetMissing, http_json, judge_application

_HTTP_KEYS = ("host", "port", "root_path", "request_timeout_s", "keep_alive_timeout_s")


class DashboardTarget:
    """One deployment of one Serve application on a Ray cluster reached through its dashboard."""

    def __init__(
        self,
        dashboard_url: str,
        application: str,
        deployment: str,
        token: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.url = dashboard_url.rstrip("/") + "/api/serve/applications/"
        self.application = application
        self.deployment = deployment
        self.token = token if token is not None else os.environ.get("RAY_AUTH_TOKEN", "")
        self.timeout = timeout

    def describe(self) -> str:
        return f"Serve app {self.application}/{self.deployment} at {self.url}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _call(self, method: str, body: Any = None) -> Any:
        try:
            return http_json(method, self.url, body, self._headers(), timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            text = exc.read()[:300].decode("utf-8", "replace")
            reason = "Unauthorized" if exc.code in (401, 403) else f"HTTP{exc.code}"
            raise TargetError(reason, f"{method} {self.url} answered {exc.code}: {text}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TargetError("DashboardUnreachable", f"{method} {self.url} failed: {exc}") from exc

    def details(self) -> dict[str, Any]:
        """The Serve instance details (``GET /api/serve/applications/``)."""
        body = self._call("GET")
        if not isinstance(body, dict):
            raise TargetError("BadAnswer", f"GET {self.url} did not return an object")
        return body

    def _app(self, details: dict[str, Any]) -> dict[str, Any]:
        app = (details.get("applications") or {}).get(self.application)
        if not isinstance(app, dict):
            raise TargetMissing(
                "ApplicationMissing", f"Serve application {self.application!r} is not deployed"
            )
        return app

    def current_checkpoint(self) -> str | None:
        app = self._app(self.details())
        config = app.get("deployed_app_config")
        if not isinstance(config, dict):
            raise TargetError(
                "NotDeclarative",
                f"application {self.application!r} was not deployed from a config (serve.run?); "
                "deploy it with `serve deploy` or the REST API so it can be updated",
            )
        return serveconfig.checkpoint_of({"applications": [config]}, self.application, self.deployment)

    def apply(self, checkpoint_uri: str, lineage: Lineage) -> None:
        details = self.details()
        self._app(details)
        apps = []
        for name, app in (details.get("applications") or {}).items():
            config = app.get("deployed_app_config")
            if isinstance(config, dict) and str(app.get("source", "declarative")).lower() != "imperative":
                apps.append(config)
            elif name == self.application:
                raise TargetError("NotDeclarative", f"application {name!r} was not deployed from a config")
        new = serveconfig.with_checkpoint_dict(
            {"applications": apps}, self.application, self.deployment, checkpoint_uri
        )
        http_options = details.get("http_options") or {}
        new["http_options"] = {k: http_options[k] for k in _HTTP_KEYS if http_options.get(k) is not None}
        if details.get("proxy_location"):
            new["proxy_location"] = details["proxy_location"]
        self._call("PUT", new)

    def health(self, checkpoint_uri: str) -> Health:
        app = self._app(self.details())
        config = app.get("deployed_app_config") or {}
        configured = serveconfig.checkpoint_of({"applications": [config]}, self.application, self.deployment)
        if configured != checkpoint_uri:
            return Health("pending", f"config names {configured}, waiting for {checkpoint_uri}")
        deps = app.get("deployments") or {}
        message = app.get("message") or (deps.get(self.deployment) or {}).get("message") or ""
        return judge_application(str(app.get("status", "")), deps, self.deployment, message)
