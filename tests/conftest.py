"""Shared fixtures: a real S3-protocol server (moto in server mode) and one real local Ray cluster.

What is real here: the S3 server speaks the S3 HTTP protocol on loopback (moto's server mode keeps
the objects in memory; it is an emulation of AWS, not AWS). The Ray cluster is a real ``ray start
--head`` with token authentication on, as Ray 2.60 clusters run by default.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # `bench` and test helpers import as top-level packages

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Token authentication, as Ray 2.60 clusters run by default. Ray caches the auth settings when it is
# first imported, so they are set here, before any test module imports ray.
RAY_TOKEN = os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ["RAY_AUTH_MODE"] = "token"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    """A running S3-protocol test server and the environment that points boto3 at it."""

    endpoint: str
    server: object

    def new_bucket(self, prefix: str = "rlops") -> str:
        import boto3

        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        boto3.client("s3").create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.server.stop()  # type: ignore[attr-defined]

    def start(self) -> None:
        self.server.start()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a loopback port; AWS_* variables set for this process and its children."""
    from moto.server import ThreadedMotoServer

    from workloads import storage

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in _AWS_VARS}
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
    )
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    storage.reset_clients()
    yield S3Server(endpoint=endpoint, server=server)
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    storage.reset_clients()


_AWS_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the S3 test server; returns its ``s3://`` root URI."""
    return f"s3://{s3_server.new_bucket()}"


@dataclass
class RayCluster:
    """A local Ray head started for the test session."""

    address: str
    dashboard_url: str
    token: str
    temp_dir: Path

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """``ray start --head`` with token auth, attached in this process with ``ray.init``.

    Every test that needs Ray (Tune, Serve, the dashboard's Serve REST API) shares this cluster;
    Serve applications are deleted by the tests that create them.
    """
    import ray

    # Ray's session folders need a short path (AF_UNIX socket names are limited to 107 bytes).
    temp_dir = Path(f"/tmp/rlops-ray-{uuid.uuid4().hex[:6]}")
    token = RAY_TOKEN
    gcs_port, dash_port = free_port(), free_port()
    ray_bin = str(Path(sys.executable).with_name("ray"))
    cmd = [
        ray_bin,
        "start",
        "--head",
        f"--port={gcs_port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash_port}",
        "--num-cpus=4",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        "--include-dashboard=true",
        "--block",
    ]
    # --block keeps the head in one process group that teardown ends, so that parallel sessions
    # (or a developer's own cluster) are never touched the way a global `ray stop` would.
    log = (tmp_path_factory.mktemp("ray") / "head.log").open("wb")
    head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{gcs_port}"
    dashboard_url = f"http://127.0.0.1:{dash_port}"
    _wait_http(f"{dashboard_url}/api/version", {"Authorization": f"Bearer {token}"}, timeout=120)
    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    yield RayCluster(address=address, dashboard_url=dashboard_url, token=token, temp_dir=temp_dir)
    try:
        from ray import serve

        serve.shutdown()
    except Exception:  # noqa: BLE001 - best effort at teardown
        pass
    ray.shutdown()
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    log.close()
    shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_http(url: str, headers: dict[str, str], timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5):
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@dataclass
class ServeEndpoint:
    """Ray Serve's HTTP proxy on the shared cluster."""

    url: str
    port: int


@pytest.fixture(scope="session")
def serve_endpoint(ray_cluster: RayCluster) -> Iterator[ServeEndpoint]:
    """Start Ray Serve once on the shared cluster, its proxy on a free loopback port.

    Tests deploy applications under their own names and route prefixes and delete them afterwards.
    """
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield ServeEndpoint(url=f"http://127.0.0.1:{port}", port=port)
