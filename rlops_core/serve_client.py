"""One typed client for Ray's dashboard Serve REST API (``GET``/``PUT /api/serve/applications/``).

The operator, the demo, the benchmarks and the tests all deploy and poll Serve through this module.
It needs only httpx, pydantic and the standard library (no Ray), so the operator image can use it.

Safety rules, kept in one place:

- The dashboard token is sent only to the client's own host, and only when that host is allowed
  (``allowed_hosts``; ``None`` means the caller chose the URL itself, so its host is allowed).
- Redirects are never followed: a 3xx answer is a :class:`ServeRefused` naming where it pointed, so a
  token can never travel to another host.
- The token never appears in an error message (every message is scrubbed before it is raised).
- Every read has a total deadline and a size bound, not only a per-chunk timeout: a server that
  trickles its body cannot hold a caller longer than ``timeout`` (plus one chunk's wait).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

APPLICATIONS_PATH = "/api/serve/applications/"
MAX_DETAILS_BYTES = 32 * 1024 * 1024
MAX_SMALL_BYTES = 1024 * 1024


# ---------------------------------------------------------------------------------------- errors
class ServeError(Exception):
    """The Serve API could not be used; ``reason`` is a short CamelCase cause for events and logs."""

    reason = "ServeError"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class ServeUnreachable(ServeError):
    """No answer: connection refused, DNS, timeout, or the body did not arrive within the deadline."""

    reason = "DashboardUnreachable"


class ServeRefused(ServeError):
    """The dashboard answered with an HTTP error or a redirect (``status_code`` says which)."""

    reason = "HTTPError"

    def __init__(self, message: str, *, status_code: int, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.status_code = status_code


class ServeBadAnswer(ServeError):
    """The answer is not the JSON shape the Serve API documents."""

    reason = "UnexpectedStatus"


class ServeAppFailed(ServeError):
    """An application reached a failure status (``DEPLOY_FAILED`` by default) while being waited for."""

    reason = "DeployFailed"


class ServeTimeout(ServeError, TimeoutError):
    """An application did not reach the wanted status before the deadline."""

    reason = "Timeout"


# ---------------------------------------------------------------------------------------- models
class _Lenient(BaseModel):
    """Unknown keys are kept (Ray adds fields between versions); known keys must have their type."""

    model_config = ConfigDict(extra="allow")


class DeploymentStatus(_Lenient):
    """One deployment inside ``applications.<app>.deployments``."""

    name: str = ""
    status: str = ""
    message: str = ""

    @field_validator("name", "status", "message", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value


class ApplicationStatus(_Lenient):
    """One application of the Serve instance details."""

    name: str = ""
    status: str = ""
    message: str = ""
    route_prefix: str | None = None
    source: str = "declarative"
    deployed_app_config: dict[str, Any] | None = None
    deployments: dict[str, DeploymentStatus] = Field(default_factory=dict)

    @field_validator("name", "status", "message", "source", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("deployments", mode="before")
    @classmethod
    def _no_deployments(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def declarative(self) -> bool:
        """Deployed from a config (``serve deploy`` / REST), so a PUT may carry it again."""
        return self.deployed_app_config is not None and self.source.lower() != "imperative"


class ServeDetails(_Lenient):
    """The answer of ``GET /api/serve/applications/`` (the parts rlops reads)."""

    applications: dict[str, ApplicationStatus] = Field(default_factory=dict)
    http_options: dict[str, Any] | None = None
    proxy_location: str | None = None

    @field_validator("applications", mode="before")
    @classmethod
    def _no_applications(cls, value: Any) -> Any:
        return {} if value is None else value

    def declarative_configs(self, *, skip: Collection[str] = ()) -> list[dict[str, Any]]:
        """The configs of the declaratively deployed applications (what a PUT must carry to keep them)."""
        return [
            app.deployed_app_config
            for name, app in self.applications.items()
            if name not in skip and app.declarative and app.deployed_app_config is not None
        ]


# ---------------------------------------------------------------------------------------- HTTP
def host_of(url: str) -> str:
    """``host:port`` of an http(s) URL (default ports filled in), lower-case."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {redact_url(url)!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname.lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_allowed(url: str, allowed: Collection[str]) -> bool:
    """Whether the URL's host matches an entry: ``host`` (any port) or ``host:port``."""
    try:
        host_port = host_of(url)
    except ValueError:
        return False
    host = host_port.rsplit(":", 1)[0]
    accepted = {host_port, host, host.strip("[]")}
    return any(entry.strip().lower() in accepted for entry in allowed if entry.strip())


def redact_url(url: str) -> str:
    """The URL without user info (``user:password@``) or query string, for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def _scrub(text: str, secrets: Collection[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def request_json(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 15.0,
    max_bytes: int = MAX_SMALL_BYTES,
    secrets: Collection[str] = (),
) -> Any:
    """One JSON request with a total deadline, a size bound and no redirects.

    Returns the decoded JSON (None for an empty body). Raises :class:`ServeUnreachable` (no answer in
    time), :class:`ServeRefused` (status >= 300) or :class:`ServeBadAnswer` (not JSON, too large).
    ``secrets`` are replaced by ``***`` in every message.
    """
    deadline = time.monotonic() + timeout
    shown = redact_url(url)
    hdrs = {"Accept": "application/json", **(headers or {})}
    try:
        with client.stream(
            method,
            url,
            json=body,
            headers=hdrs,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
        ) as resp:
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise ServeBadAnswer(f"{method} {shown}: answer larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise ServeUnreachable(f"{method} {shown}: answer not complete within {timeout:g} s")
                chunks.append(chunk)
            raw = b"".join(chunks)
            status = resp.status_code
            location = resp.headers.get("location", "")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        detail = _scrub(f"{type(exc).__name__}: {exc}", secrets)
        raise ServeUnreachable(f"{method} {shown} failed: {detail}") from None
    if 300 <= status < 400:
        raise ServeRefused(
            f"{method} {shown} answered {status} (redirect to {redact_url(location) or '?'}); "
            "redirects are not followed so that credentials stay with the configured host: "
            "use the final address instead",
            status_code=status,
            reason="Redirect",
        )
    if status >= 400:
        text = _scrub(raw[:300].decode("utf-8", "replace"), secrets)
        reason = "Unauthorized" if status in (401, 403) else f"HTTP{status}"
        raise ServeRefused(f"{method} {shown} answered {status}: {text}", status_code=status, reason=reason)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ServeBadAnswer(f"{method} {shown} did not answer JSON: {exc}") from None


# ---------------------------------------------------------------------------------------- client
class ServeClient:
    """Ray's dashboard Serve REST API at ``dashboard_url`` (``http://host:8265``).

    ``token`` (Ray 2.60 token auth) goes out as ``Authorization: Bearer`` only when the dashboard's
    host is in ``allowed_hosts`` (``host`` or ``host:port`` entries); ``allowed_hosts=None`` allows the
    URL's own host, for callers that chose the URL themselves (CLI, demo, tests).
    """

    def __init__(
        self,
        dashboard_url: str,
        token: str | None = None,
        *,
        allowed_hosts: Collection[str] | None = None,
        timeout: float = 15.0,
        client: httpx.Client | None = None,
    ) -> None:
        base = dashboard_url.strip().rstrip("/")
        host_of(base)  # refuses anything that is not an http(s) URL
        self.base_url = base
        self.url = base + APPLICATIONS_PATH
        self.timeout = timeout
        self._token = token or ""
        allowed = [host_of(base)] if allowed_hosts is None else list(allowed_hosts)
        self.sends_token = bool(self._token) and host_allowed(base, allowed)
        self._client = client or httpx.Client(follow_redirects=False, trust_env=False)

    def __repr__(self) -> str:
        return f"ServeClient({self.base_url!r}, token={'***' if self._token else None})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ServeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def headers(self) -> dict[str, str]:
        """The auth header, when the token may go to this host (empty otherwise)."""
        return {"Authorization": f"Bearer {self._token}"} if self.sends_token else {}

    def _call(self, method: str, path: str, body: Any = None, max_bytes: int = MAX_DETAILS_BYTES) -> Any:
        try:
            return request_json(
                self._client,
                method,
                self.base_url + path,
                body=body,
                headers=self.headers,
                timeout=self.timeout,
                max_bytes=max_bytes,
                secrets=(self._token,),
            )
        except ServeRefused as exc:
            if exc.reason == "Unauthorized" and self._token and not self.sends_token:
                exc.message += (
                    f" (the dashboard token is not sent to {host_of(self.base_url)}: "
                    "add that host to the allowed dashboard hosts if it should get it)"
                )
                exc.args = (exc.message,)
            raise

    def version(self) -> Any:
        """``GET /api/version`` (answers once the dashboard is up)."""
        return self._call("GET", "/api/version", max_bytes=MAX_SMALL_BYTES)

    def details(self) -> ServeDetails:
        """The Serve instance details, validated; a wrong shape is :class:`ServeBadAnswer`."""
        body = self._call("GET", APPLICATIONS_PATH)
        if not isinstance(body, dict):
            raise ServeBadAnswer(f"GET {redact_url(self.url)} did not return an object")
        try:
            return ServeDetails.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
            )
            raise ServeBadAnswer(
                f"GET {redact_url(self.url)} answered an unexpected shape ({problems})"
            ) from None

    def application(self, name: str) -> ApplicationStatus | None:
        """One application's status, or None when it is not deployed."""
        return self.details().applications.get(name)

    def put(self, config: Mapping[str, Any]) -> None:
        """``PUT`` a whole Serve config (declarative: it replaces every config-deployed application)."""
        self._call("PUT", APPLICATIONS_PATH, dict(config))

    def deploy(
        self,
        applications: list[dict[str, Any]],
        *,
        http_options: Mapping[str, Any] | None = None,
        proxy_location: str | None = None,
    ) -> None:
        """Deploy exactly ``applications`` (plus optional ``http_options``/``proxy_location``)."""
        body: dict[str, Any] = {"applications": applications}
        if http_options:
            body["http_options"] = dict(http_options)
        if proxy_location:
            body["proxy_location"] = proxy_location
        self.put(body)

    def upsert(self, application: dict[str, Any], *, http_keys: Collection[str] = ("host", "port")) -> None:
        """Add or replace one application, keeping the other declarative ones and the HTTP options."""
        details = self.details()
        apps = details.declarative_configs(skip={application["name"]})
        http = details.http_options or {}
        options = {k: http[k] for k in http_keys if http.get(k) is not None}
        self.deploy([*apps, application], http_options=options)

    def wait_status(
        self,
        name: str,
        wanted: Collection[str] = ("RUNNING",),
        *,
        timeout: float = 180.0,
        interval: float = 0.5,
        fail_on: Collection[str] = ("DEPLOY_FAILED",),
        ready: Callable[[ApplicationStatus], bool] | None = None,
    ) -> ApplicationStatus:
        """Poll until application ``name`` has a ``wanted`` status (and ``ready(app)`` holds).

        Raises :class:`ServeAppFailed` on a ``fail_on`` status, :class:`ServeTimeout` after ``timeout``
        seconds naming the last status, message and connection error seen.
        """
        deadline = time.monotonic() + timeout
        seen, last_error = "absent", ""
        while True:
            try:
                app = self.application(name)
            except (ServeUnreachable, ServeBadAnswer, ServeRefused) as exc:
                if isinstance(exc, ServeRefused) and exc.status_code < 500:
                    raise  # refused for good (401, 404, a redirect): waiting will not change that
                app, last_error = None, f"; last error: {exc.message}"  # not up yet: said on timeout
            if app is not None:
                seen = f"{app.status} {app.message}".strip()
                if app.status in fail_on:
                    raise ServeAppFailed(f"Serve application {name!r} is {seen}")
                if app.status in wanted and (ready is None or ready(app)):
                    return app
            if time.monotonic() + interval > deadline:
                raise ServeTimeout(
                    f"Serve application {name!r} did not reach {sorted(wanted)} within {timeout:g} s "
                    f"(last status: {seen}{last_error})"
                )
            time.sleep(interval)

    def wait_running(self, name: str, *, timeout: float = 180.0, **kwargs: Any) -> ApplicationStatus:
        """Wait until application ``name`` is ``RUNNING`` (see :meth:`wait_status`)."""
        return self.wait_status(name, ("RUNNING",), timeout=timeout, **kwargs)

    def wait_up(self, timeout: float = 180.0, interval: float = 0.5) -> None:
        """Wait until the dashboard answers ``/api/version``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.version()
                return
            except ServeError as exc:
                if time.monotonic() + interval > deadline:
                    raise ServeTimeout(
                        f"dashboard {self.base_url} did not answer within {timeout:g} s: {exc.message}"
                    ) from None
            time.sleep(interval)


def get_json(url: str, *, timeout: float = 5.0, max_bytes: int = MAX_SMALL_BYTES) -> Any:
    """GET a JSON document without credentials (e.g. an endpoint's ``/metadata``); raises ServeError."""
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        return request_json(client, "GET", url, timeout=timeout, max_bytes=max_bytes)
