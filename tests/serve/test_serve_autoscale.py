"""Serve autoscaling on real Ray Serve: new replicas serve the live policy, and scaling loses no request.

Real: the shared local Ray cluster (token auth) and its Serve proxy, the policy app deployed through the
dashboard's Serve REST API (as KubeRay does), Serve's own autoscaler, HTTP on loopback, the operator's
DashboardTarget and promotion Engine + RayServiceTarget. Emulated: the Kubernetes API (kmock's
KubernetesEmulator, tests/operator/kube.py) and KubeRay's Serve part (tests/e2e/kuberay.py, which
forwards ``serveConfigV2`` to the real dashboard as KubeRay 1.7 does for an in-place update).

Nothing here asserts a time: replica counts going up and down, which checkpoint every replica serves,
and zero failed requests, each wait with a generous deadline (the CPU is shared).
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench.autoscale_bench import ServeRest, StepLoad, policy_app
from rlops_core import checkpoints, storage
from rlops_core.serve_client import ServeClient
from tests.waiting import wait_for

# generous: the first test also pays for the fixtures (a Ray cluster, a short PPO run)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

DEPLOYMENT = "PolicyServer"
_names = itertools.count(1)
# Quick to react so that the test stays short; downscale_delay_s long where a test needs the count to stay.
FAST_UP = {"upscale_delay_s": 1.0, "metrics_interval_s": 0.5, "look_back_period_s": 2.0}


@pytest.fixture(scope="module")
def rest(ray_cluster: Any, serve_endpoint: Any) -> Iterator[ServeRest]:
    client = ServeClient(ray_cluster.dashboard_url, ray_cluster.token, timeout=30)
    yield ServeRest(client)
    client.close()


@dataclass(frozen=True)
class TwoCheckpoints:
    """Two manifested corridor checkpoints of one tiny PPO run: A (iteration 1) and B (iteration 2)."""

    a: str
    b: str


@pytest.fixture(scope="module")
def ab(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> TwoCheckpoints:
    """Any two valid policies will do here (which one answers is what is checked, not how well), so a
    tiny run (bench.rollout_bench's) instead of the serve tier's full corridor training."""
    from bench.rollout_bench import build_ppo_checkpoints

    root = tmp_path_factory.mktemp("autoscale-checkpoints")
    a, b = build_ppo_checkpoints(str(root), 2, experiment="autoscale")
    return TwoCheckpoints(a, b)


@pytest.fixture
def app_name(rest: ServeRest) -> Iterator[str]:
    """A fresh application name; the application is deleted afterwards."""
    name = f"autoscale-{next(_names)}"
    yield name
    rest.delete_app(name)


def replica_metadata(url: str, expect: int, timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    """``/metadata`` of every replica: ask until ``expect`` distinct replica ids have answered."""
    seen: dict[str, dict[str, Any]] = {}

    def all_seen() -> bool:
        with httpx.Client(timeout=10) as client:
            for _ in range(20):
                try:
                    resp = client.get(f"{url}/metadata")
                except httpx.HTTPError:
                    continue
                if resp.status_code == 200:
                    meta = resp.json()
                    seen[meta["replica"]] = meta
        return len(seen) >= expect

    wait_for(all_seen, timeout=timeout, interval=0.2, what=f"/metadata answers from {expect} replicas")
    return seen


def deployed_config(rest: ServeRest, name: str) -> dict[str, Any]:
    app = rest.client.application(name)
    assert app is not None and app.deployed_app_config is not None, f"{name} is not deployed from a config"
    return copy.deepcopy(app.deployed_app_config)


def policy_deployment(config: dict[str, Any]) -> dict[str, Any]:
    (dep,) = [d for d in config["deployments"] if d["name"] == DEPLOYMENT]
    return dep


def wait_running(rest: ServeRest, name: str, count: int, timeout: float = 240.0) -> None:
    """Exactly ``count`` replicas RUNNING and none starting or stopping."""
    wait_for(
        lambda: rest.replica_states(name) == ["RUNNING"] * count,
        timeout=timeout,
        interval=0.5,
        what=f"{name}: {count} RUNNING replicas (now {rest.replica_states(name)})",
    )


# ------------------------------------------------------------------------------ dashboard target
def test_replicas_added_after_a_promotion_serve_the_promoted_checkpoint(
    rest: ServeRest, serve_endpoint: Any, ray_cluster: Any, ab: TwoCheckpoints, app_name: str
) -> None:
    from rlops_operator.dashboard import DashboardTarget
    from rlops_operator.targets import Lineage

    a, b = ab.a, ab.b
    autoscaling = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2,
                   "downscale_delay_s": 600.0, **FAST_UP}  # fmt: skip
    rest.put_app(policy_app(a, name=app_name, autoscaling=autoscaling))
    url = f"{serve_endpoint.url}/{app_name}"
    wait_running(rest, app_name, 1)
    (first,) = replica_metadata(url, 1).values()
    assert first["checkpoint_uri"] == a

    # promote B through the operator's dashboard target: a user_config-only PUT
    target = DashboardTarget(ray_cluster.dashboard_url, app_name, DEPLOYMENT, token=ray_cluster.token)
    target.apply(b, Lineage(checkpoint_uri=b))
    wait_for(lambda: target.health(b).state == "healthy", timeout=120, interval=0.5, what="the promotion")
    wait_for(
        lambda: (replica_metadata(url, 1).get(first["replica"]) or {}).get("checkpoint_uri") == b,
        timeout=120,
        what="the first replica to swap to B",
    )
    config = deployed_config(rest, app_name)
    assert policy_deployment(config)["autoscaling_config"] == autoscaling, "the promotion changed autoscaling"

    # scale up with a user-level config change (min_replicas 1 -> 3); the PUT carries B, as deployed
    policy_deployment(config)["autoscaling_config"]["min_replicas"] = 3
    rest.put_app(config)
    wait_running(rest, app_name, 3)
    replicas = replica_metadata(url, 3)
    assert {m["checkpoint_uri"] for m in replicas.values()} == {b}, replicas
    assert {m["requested_checkpoint_uri"] for m in replicas.values()} == {b}
    assert all(m["last_error"] is None for m in replicas.values())
    new = [m for r, m in replicas.items() if r != first["replica"]]
    assert len(new) >= 2 and all(m["swap_count"] == 0 for m in new), "new replicas must load B cold, not A"
    if first["replica"] in replicas:  # the replica that swapped in place is still there
        assert replicas[first["replica"]]["swap_count"] == 1


def test_replicas_added_mid_rollout_load_champion_and_challenger(
    rest: ServeRest, serve_endpoint: Any, ab: TwoCheckpoints, app_name: str
) -> None:
    serve_app = pytest.importorskip("workloads.serve_app")
    if "challenger" not in serve_app.ServeSettings.model_fields:
        pytest.skip("the Serve app has no challenger slot yet (issue 11, progressive delivery)")
    a, b = ab.a, ab.b
    autoscaling = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
                   "downscale_delay_s": 600.0, **FAST_UP}  # fmt: skip
    app = policy_app(a, name=app_name, autoscaling=autoscaling)
    challenger = {"checkpoint_uri": b, "mode": "canary", "weight": 0.5}
    policy_deployment(app)["user_config"]["challenger"] = challenger
    rest.put_app(app)
    wait_running(rest, app_name, 1)
    config = deployed_config(rest, app_name)
    policy_deployment(config)["autoscaling_config"]["min_replicas"] = 2
    rest.put_app(config)
    wait_running(rest, app_name, 2)
    for replica, meta in replica_metadata(f"{serve_endpoint.url}/{app_name}", 2).items():
        assert meta["checkpoint_uri"] == a, replica
        assert (meta.get("challenger") or {}).get("checkpoint_uri") == b, (replica, meta.get("challenger"))


# ------------------------------------------------------------------------------ load ramp
def test_load_ramp_scales_up_and_down_and_loses_no_request(
    rest: ServeRest, serve_endpoint: Any, ray_cluster: Any, ab: TwoCheckpoints, app_name: str
) -> None:
    """8 closed-loop clients (some sending 256-observation batches, so requests are in flight when a
    replica stops) bring the replicas up from 1; back at one client they go down to 1 again. The
    deployment was promoted to B before the ramp, so every answer, from old and new replicas, is B's."""
    from rlops_operator.dashboard import DashboardTarget
    from rlops_operator.targets import Lineage

    a, b = ab.a, ab.b
    autoscaling = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2,
                   "downscale_delay_s": 4.0, **FAST_UP}  # fmt: skip
    rest.put_app(policy_app(a, name=app_name, autoscaling=autoscaling))
    url = f"{serve_endpoint.url}/{app_name}"
    wait_running(rest, app_name, 1)
    target = DashboardTarget(ray_cluster.dashboard_url, app_name, DEPLOYMENT, token=ray_cluster.token)
    target.apply(b, Lineage(checkpoint_uri=b))
    wait_for(lambda: (replica_metadata(url, 1).popitem()[1]).get("checkpoint_uri") == b, 120, what="B live")

    load = StepLoad(url, batch_every=10, batch_size=256)
    peak = 0

    def scaled_up() -> bool:
        nonlocal peak
        peak = max(peak, rest.running(app_name))
        return peak >= 2

    try:
        load.set_clients(8)
        wait_for(scaled_up, timeout=240, interval=0.5, what=f"≥ 2 replicas under load (peak {peak})")
        up_at = load.now()
        wait_for(lambda: load.now() - up_at > 5, timeout=30, what="5 s at the higher count")
        load.set_clients(1)
        down_from = load.now()
        wait_running(rest, app_name, 1, timeout=240)  # stopped replicas are gone, not just draining
        wait_for(lambda: load.now() - down_from > 2, timeout=30, what="2 s more load on one replica")
    finally:
        samples = load.stop()

    failed = [s for s in samples if not s.ok]
    assert failed == [], f"{len(failed)} of {len(samples)} requests failed: {failed[:5]}"
    assert len(samples) > 100, "the load generator barely ran"
    assert peak >= 2
    assert {s.checkpoint for s in samples} == {b}, "a replica answered with a checkpoint other than B"
    after_down = [s for s in samples if s.started >= down_from]
    assert after_down, "no request was sent while the replicas went down"


# ------------------------------------------------------------------------------ RayService target
@pytest.fixture(scope="module")
def kube_and_kuberay(
    ray_cluster: Any, serve_endpoint: Any, tmp_path_factory: Any
) -> Iterator[tuple[Any, Any, Path]]:
    """kmock's Kubernetes emulator and the KubeRay stand-in forwarding serveConfigV2 to the real cluster."""
    from rlops_demo.cluster import free_port
    from tests.e2e.kuberay import KubeRayStandIn
    from tests.operator.kube import EmulatedCluster

    kube = EmulatedCluster(free_port())
    kube.start()
    serve = ServeClient(ray_cluster.dashboard_url, ray_cluster.token, timeout=30)
    kuberay = KubeRayStandIn(kube, serve=serve, namespace="default").start()
    kubeconfig = kube.write_kubeconfig(tmp_path_factory.mktemp("autoscale-kube") / "kubeconfig")
    yield kube, kuberay, kubeconfig
    kuberay.stop()
    kube.stop()
    serve.close()


def test_rayservice_promotion_keeps_autoscaling_and_new_replicas_get_the_patched_config(
    kube_and_kuberay: tuple[Any, Any, Path],
    rest: ServeRest,
    serve_endpoint: Any,
    ab: TwoCheckpoints,
    tmp_path: Path,
) -> None:
    from kubernetes import config as kube_config
    from rlops_operator.engine import Engine
    from rlops_operator.rayservice import RayServiceTarget
    from rlops_operator.spec import RolloutSpec, TargetSpec

    from tests.operator.kube import rayservice_path

    kube, kuberay, kubeconfig = kube_and_kuberay
    a, b = ab.a, ab.b
    n = next(_names)
    app, rs = f"autoscale-rs-{n}", f"autoscale-policy-{n}"
    url = f"{serve_endpoint.url}/{app}"
    autoscaling = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
                   "downscale_delay_s": 600.0, **FAST_UP}  # fmt: skip
    serve_config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": serve_endpoint.port},
        "applications": [policy_app(a, name=app, autoscaling=autoscaling)],
    }
    text = yaml.safe_dump(serve_config, sort_keys=False)
    body = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": rs, "namespace": "default"},
            "spec": {"serveConfigV2": text}}  # fmt: skip
    kube.request("POST", rayservice_path("default"), body)
    try:
        wait_for(lambda: _answers(url), timeout=240, interval=1, what=f"the stand-in to deploy {app}")
        assert kuberay.errors == [], kuberay.errors[-3:]
        assert {m["checkpoint_uri"] for m in replica_metadata(url, 1).values()} == {a}

        # the operator's engine promotes B from a pointer, patching the RayService in the emulated API
        root = os.path.commonpath([storage.parse_uri(a).path, storage.parse_uri(b).path])
        pointer = checkpoints.pointer_uri(str(tmp_path), "autoscale-channel")
        checkpoints.write_pointer(pointer, b)
        spec = RolloutSpec(
            pointer=pointer,
            target=TargetSpec(
                ray_service=rs, namespace="default", application=app, deployment=DEPLOYMENT, endpoint_url=url
            ),
            allowed_prefixes=(root,),
            poll_interval_s=1,
            rollout_timeout_s=180,
            name="autoscale",
        )
        api = kube_config.new_client_from_config(config_file=str(kubeconfig))
        engine = Engine(spec, RayServiceTarget(rs, "default", app, DEPLOYMENT, api=api))
        status: dict[str, Any] = {}

        def live_b() -> bool:
            nonlocal status
            status = engine.step(status).status
            return status.get("phase") == "Live" and (status.get("live") or {}).get("checkpointUri") == b

        wait_for(live_b, timeout=240, interval=1, what=f"the engine to make B live ({status.get('message')})")

        patched = yaml.safe_load(kube.get(rayservice_path("default", rs))["spec"]["serveConfigV2"])
        (patched_app,) = patched["applications"]
        assert policy_deployment(patched_app)["autoscaling_config"] == autoscaling
        assert policy_deployment(patched_app)["user_config"]["checkpoint_uri"] == b
        sent = [f.config for f in kuberay.forwarded_for(rs)]
        assert policy_deployment(sent[-1]["applications"][0])["autoscaling_config"] == autoscaling
        served = deployed_config(rest, app)
        assert policy_deployment(served)["autoscaling_config"] == autoscaling

        # a user scales the RayService up (min_replicas 1 -> 2); the new replica gets the patched config
        policy_deployment(patched_app)["autoscaling_config"]["min_replicas"] = 2
        patch = {"spec": {"serveConfigV2": yaml.safe_dump(patched, sort_keys=False)}}
        kube.request("PATCH", rayservice_path("default", rs), patch)
        replicas = replica_metadata(url, 2, timeout=240)
        assert {m["checkpoint_uri"] for m in replicas.values()} == {b}, replicas
        assert sorted(m["swap_count"] for m in replicas.values()) == [0, 1], "one swapped, one started on B"
    finally:
        kube.request("DELETE", rayservice_path("default", rs))
        wait_for(lambda: rest.client.application(app) is None, 120, what=f"the stand-in to delete {app}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/metadata", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
