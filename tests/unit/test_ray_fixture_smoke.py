"""The shared Ray fixture comes up with token auth and runs a task."""

import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.slow  # starts the shared Ray cluster


def test_cluster_runs_tasks_and_dashboard_requires_token(ray_cluster):
    import ray

    @ray.remote
    def square(x: int) -> int:
        return x * x

    assert ray.get(square.remote(7)) == 49
    req = urllib.request.Request(f"{ray_cluster.dashboard_url}/api/serve/applications/")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code in (401, 403)
    req = urllib.request.Request(
        f"{ray_cluster.dashboard_url}/api/serve/applications/", headers=ray_cluster.auth_headers
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
