"""Fixtures for the serving tests: trained corridor checkpoints and Serve apps deployed the KubeRay way.

Apps are deployed through the dashboard's Serve REST API (``PUT /api/serve/applications/``), the same
declarative call KubeRay makes for ``serveConfigV2``: a ``user_config``-only change then reaches live
replicas as ``reconfigure()``, which is the hot-swap path under test.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.serve_apps import IMPORT_PATH, Checkpoints, ServeApps
from tests.waiting import wait_for

__all__ = ["IMPORT_PATH", "Checkpoints", "ServeApps"]  # re-exported: the helpers live in tests.helpers


@pytest.fixture(scope="session")
def corridor_checkpoints(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    """Train PPO on the corridor with the tutorial settings (10 x 400 steps) on the shared cluster."""
    from bench.serve_bench import train_corridor_checkpoints

    root = tmp_path_factory.mktemp("serve-checkpoints")
    out = train_corridor_checkpoints(root, iterations=10, early_at=2)
    return Checkpoints(final=out["final"], early=out["early"])


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
