"""A second local Ray cluster running Serve's documented fast path: direct ingress + HAProxy, hardened.

The session cluster of ``tests/conftest.py`` uses Serve's default proxy. HAProxy and direct ingress are
cluster-level settings (environment of the head), so the ingress-limit tests start their own head with
them, the way docs/serving.md and the chart set them: ``RAY_SERVE_HAPROXY_BINARY_PATH`` points at
``workloads/serving/haproxy-hardened``, and the limits are lowered (a 2 s request timeout, 256
connections) so floods and slow clients stay small and quick on loopback. Apps are deployed through the
dashboard's Serve REST API, as KubeRay does. Nothing here mocks Ray, Serve or HAProxy.
"""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rlops_demo.cluster import LocalRayCluster, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
HARDENED_HAPROXY = REPO_ROOT / "workloads" / "serving" / "haproxy-hardened"
MAXCONN = 256
HTTP_REQUEST_TIMEOUT_S = 2


def fast_ingress_env(state_dir: Path, *, hardened: bool = True) -> dict[str, str]:
    """The head's environment: fast ingress on, HAProxy's files in a short private folder."""
    env = {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state_dir / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_MAXCONN": str(MAXCONN),
        "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": "10",
        "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S": "30",
        "RAY_SERVE_HAPROXY_METRICS_REPORT_INTERVAL_S": "1",
        "RAY_metrics_report_interval_ms": "1000",
    }
    if hardened:
        env.update(
            RAY_SERVE_HAPROXY_BINARY_PATH=str(HARDENED_HAPROXY),
            RLOPS_PYTHON=sys.executable,
            RLOPS_HAPROXY_HTTP_REQUEST_TIMEOUT_S=str(HTTP_REQUEST_TIMEOUT_S),
        )
    return env


@dataclass
class FastIngress:
    """A running fast-ingress cluster: its Serve port, dashboard and the apps deployed on it."""

    cluster: LocalRayCluster
    state_dir: Path
    http_port: int
    env: dict[str, str]
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def deploy(self, name: str, user_config: dict[str, Any], timeout: float = 240.0) -> str:
        self.apps[name] = {
            "name": name,
            "route_prefix": f"/{name}",
            "import_path": "workloads.serve_app:app",
            "deployments": [{"name": "PolicyServer", "num_replicas": 1, "user_config": user_config}],
        }
        body = {
            "http_options": {"host": "127.0.0.1", "port": self.http_port, "keep_alive_timeout_s": 5},
            "applications": list(self.apps.values()),
        }
        resp = httpx.put(
            f"{self.cluster.dashboard_url}/api/serve/applications/",
            json=body,
            headers=self.cluster.auth_headers,
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(name)
            if status.get("status") == "RUNNING" and self._answers(name):
                return self.url(name)
            time.sleep(0.5)
        raise AssertionError(f"fast-ingress app {name} not serving after {timeout} s: {status}")

    def status(self, name: str) -> dict[str, Any]:
        resp = httpx.get(
            f"{self.cluster.dashboard_url}/api/serve/applications/",
            headers=self.cluster.auth_headers,
            timeout=30,
        )
        return resp.json().get("applications", {}).get(name, {})

    def _answers(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.url(name)}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def haproxy_configs(self) -> list[Path]:
        return sorted(self.state_dir.glob("*/haproxy.cfg"))


def start_fast_ingress(log_dir: Path, *, hardened: bool = True) -> Iterator[FastIngress]:
    """Start the cluster (a generator for a fixture); stop it and remove its folders afterwards."""
    state_dir = Path(f"/tmp/rhp{uuid.uuid4().hex[:6]}")  # HAProxy socket paths must stay short
    state_dir.mkdir()
    env = fast_ingress_env(state_dir, hardened=hardened)
    cluster = LocalRayCluster(num_cpus=2, env=env, log_path=log_dir / "fast-ingress-head.log")
    try:
        cluster.start()
        yield FastIngress(cluster=cluster, state_dir=state_dir, http_port=free_port(), env=env)
    finally:
        cluster.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
