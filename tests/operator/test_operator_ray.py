"""The bare-Ray target against a real local Ray Serve: a promotion changes the served policy.

Real parts only: the shared Ray cluster (token auth on), ``workloads.serve_app`` deployed through the
dashboard's Serve REST API, PPO checkpoints trained here, and the ``rlops-rollout`` command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from rlops_operator import serveconfig
from rlops_operator.dashboard import DashboardTarget
from rlops_operator.targets import TargetError

from bench.rollout_bench import broken_copy, build_ppo_checkpoints, deploy_app, metadata, wait_live
from rlops_core import checkpoints, storage
from tests.helpers.paths import REPO_ROOT
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
APP, ROUTE = "op-corridor", "/op-corridor"


@pytest.fixture(scope="module")
def ppo_root(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """Two trained corridor checkpoints (1 and 2 PPO iterations) with manifests, plus a broken one."""
    root = str(tmp_path_factory.mktemp("ppo") / "store")
    uris = build_ppo_checkpoints(root, 2, experiment="optest")
    bad = broken_copy(uris[0], storage.join_uri(root, "optest", "trial_bad", "checkpoint_000000"))
    return root, [*uris, bad]


@pytest.fixture(scope="module")
def served_app(ray_cluster: Any, serve_endpoint: Any, ppo_root: tuple[str, list[str]]) -> Any:
    _root, (a, _b, _bad) = ppo_root
    deploy_app(ray_cluster.dashboard_url, ray_cluster.token, a, name=APP, route=ROUTE)
    endpoint = serve_endpoint.url + ROUTE
    wait_live(endpoint, a)
    yield endpoint
    from ray import serve

    serve.delete(APP)


@pytest.fixture
def serving_a(ray_cluster: Any, served_app: str, ppo_root: tuple[str, list[str]]) -> str:
    """The module's app serving checkpoint A, whatever an earlier test left live; returns the endpoint."""
    _root, (a, _b, _bad) = ppo_root
    if (metadata(served_app) or {}).get("checkpoint_uri") != a:
        deploy_app(ray_cluster.dashboard_url, ray_cluster.token, a, name=APP, route=ROUTE)
        wait_live(served_app, a)
    return served_app


def act(endpoint: str) -> tuple[list[float], str]:
    """Action probabilities for the aliased state and the checkpoint that answered."""
    body = json.dumps({"state": [3.0], "return_probs": True}).encode()
    req = urllib.request.Request(
        endpoint + "/", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = json.loads(resp.read())
        return answer["probabilities"], resp.headers["x-rlops-checkpoint"]


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("rlops-rollout")
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        cwd=REPO_ROOT,
    )


def test_dashboard_target_needs_the_token(ray_cluster: Any, served_app: str) -> None:
    target = DashboardTarget(ray_cluster.dashboard_url, APP, "PolicyServer", token="wrong-token-value")
    with pytest.raises(TargetError) as info:
        target.current_checkpoint()
    assert info.value.reason == "Unauthorized", info.value.message
    assert "wrong-token-value" not in info.value.message


def test_dashboard_token_stays_home_outside_the_allow_list(ray_cluster: Any, served_app: str) -> None:
    """The right token, but the host is not allowed: it is not sent, and the error says what to do."""
    outside = DashboardTarget(
        ray_cluster.dashboard_url, APP, "PolicyServer", token=ray_cluster.token, allowed_hosts=["ray-head"]
    )
    with pytest.raises(TargetError) as info:
        outside.current_checkpoint()
    assert info.value.reason == "Unauthorized" and "allowed dashboard hosts" in info.value.message
    assert ray_cluster.token not in info.value.message
    inside = DashboardTarget(
        ray_cluster.dashboard_url, APP, "PolicyServer", token=ray_cluster.token, allowed_hosts=["127.0.0.1"]
    )
    assert inside.current_checkpoint() is not None


def test_promotion_changes_the_served_policy_and_a_bad_one_rolls_back(
    ray_cluster: Any, serving_a: str, ppo_root: tuple[str, list[str]]
) -> None:
    root, (a, b, bad) = ppo_root
    endpoint = serving_a
    pointer = checkpoints.pointer_uri(root, "corridor")
    probs_a, used = act(endpoint)
    assert used == a
    common = ["--pointer", pointer, "--dashboard-url", ray_cluster.dashboard_url, "--app", APP]
    common += ["--endpoint-url", endpoint, "--timeout", "90"]

    checkpoints.write_pointer(pointer, b)
    done = cli("promote", *common)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified live" in done.stdout and b in done.stdout
    probs_b, used = act(endpoint)
    assert used == b and (metadata(endpoint) or {})["checkpoint_uri"] == b
    assert probs_b != probs_a  # a different policy answers now
    # only the checkpoint changed in the deployed config
    details = DashboardTarget(ray_cluster.dashboard_url, APP, "PolicyServer").details()
    deployed = details.applications[APP].deployed_app_config
    assert deployed is not None
    assert serveconfig.checkpoint_of({"applications": [deployed]}, APP, "PolicyServer") == b
    assert deployed["route_prefix"] == ROUTE and deployed["deployments"][0]["num_replicas"] == 1

    checkpoints.write_pointer(pointer, bad)  # passes the manifest check, but cannot be loaded
    done = cli("promote", *common)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ROLLED BACK" in done.stdout and "SwapFailed" in done.stdout
    assert f"could not load {bad}" in done.stdout  # /metadata's last_error named the bad checkpoint
    meta = metadata(endpoint) or {}
    assert meta["checkpoint_uri"] == b  # the old policy never stopped serving
    # the rollback's reconfigure (back to the live checkpoint) clears last_error: wait for that outcome
    cleared = wait_for(
        lambda: (lambda m: m if m and m["last_error"] is None else None)(metadata(endpoint)),
        60,
        what="the rollback's reconfigure to clear /metadata last_error",
    )
    assert cleared["checkpoint_uri"] == b
    assert act(endpoint)[1] == b
    assert DashboardTarget(ray_cluster.dashboard_url, APP, "PolicyServer").current_checkpoint() == b


def test_watch_prints_progress_and_promotes(
    ray_cluster: Any, serving_a: str, ppo_root: tuple[str, list[str]]
) -> None:
    root, (_a, b, _bad) = ppo_root
    endpoint = serving_a
    new = b
    pointer = checkpoints.pointer_uri(root, "watch")
    checkpoints.write_pointer(pointer, new)
    done = cli(
        "watch",
        "--pointer",
        pointer,
        "--dashboard-url",
        ray_cluster.dashboard_url,
        "--app",
        APP,
        "--endpoint-url",
        endpoint,
        "--poll-interval",
        "1",
        "--duration",
        "90",
        "--max-rollouts",
        "1",
        "--allowed-prefix",
        root,
        timeout=120,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for line in ("watching", "pointer -> " + new, "checks passed", "applied", "verified live in"):
        assert line in out, out
    assert act(endpoint)[1] == new
