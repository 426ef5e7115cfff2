"""Shared fixtures: a real S3-protocol server (moto in server mode) and one real local Ray cluster.

What is real here: the S3 server speaks the S3 HTTP protocol on loopback (moto's server mode keeps
the objects in memory; it is an emulation of AWS, not AWS). The Ray cluster is a real ``ray start
--head`` with token authentication on, as Ray 2.60 clusters run by default.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from rlops_demo.cluster import LocalRayCluster
from tests.helpers.paths import REPO_ROOT, free_port  # re-exported: `from tests.conftest import ...`
from tests.helpers.services import S3Server, ServeEndpoint

__all__ = ["REPO_ROOT", "S3Server", "ServeEndpoint", "free_port"]

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Token authentication, as Ray 2.60 clusters run by default. Ray caches the auth settings when it is
# first imported, so they are set here, before any test module imports ray.
RAY_TOKEN = os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ["RAY_AUTH_MODE"] = "token"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kuberay-crds",
        default=None,
        metavar="DIR",
        help="folder with KubeRay 1.7.0's CRDs (ray.io_*.yaml) for the schema tests; default "
        "$RLOPS_KUBERAY_CRDS, else ../shared/kuberay-crds. Missing: skipped locally, failed with CI=true",
    )


def pytest_configure(config: pytest.Config) -> None:
    from tests.k8s import charts

    charts.use_kuberay_crds(config.getoption("--kuberay-crds"))


RAY_FIXTURES = frozenset({"ray_cluster", "serve_endpoint"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that starts Ray (uses a Ray fixture, directly or through another fixture) is ``slow``,
    so ``-m "not slow"`` never starts Ray even where a module forgot its mark."""
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a loopback port; AWS_* variables set for this process and its children."""
    from moto.server import ThreadedMotoServer

    from rlops_core import storage

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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayCluster]:
    """A real local Ray head (``ray start --head --block``, token auth on), attached with ``ray.init``.

    Every test that needs Ray (Tune, Serve, the dashboard's Serve REST API) shares this cluster;
    Serve applications are deleted by the tests that create them. Attributes: ``address``,
    ``dashboard_url``, ``token``, ``auth_headers``, ``client_env()``.
    """
    import ray

    cluster = LocalRayCluster(num_cpus=4, log_path=tmp_path_factory.mktemp("ray") / "head.log").start()
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    yield cluster
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        pass
    ray.shutdown()
    cluster.stop()


@pytest.fixture(scope="session")
def serve_endpoint(ray_cluster: LocalRayCluster) -> Iterator[ServeEndpoint]:
    """Start Ray Serve once on the shared cluster, its proxy on a free loopback port.

    Tests deploy applications under their own names and route prefixes and delete them afterwards.
    """
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield ServeEndpoint(url=f"http://127.0.0.1:{port}", port=port)
