"""Autoscaling as shipped: Serve's autoscaling_config of the policy deployment (workloads/serve_config.yaml,
the chart's serveConfigV2 from serve.autoscaling, the plain manifest) and the RayService's autoscaled Ray
cluster (in-tree autoscaler, a worker group from min to max), checked with the real helm binary, Ray
Serve's own config models and KubeRay 1.7.0's CRD schema. No cluster is needed.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import yaml

from tests.k8s.conftest import (
    CHART,
    CHECKPOINT,
    KIND_VALUES,
    KUBERAY_CRDS,
    REPO_ROOT,
    Rendered,
    kuberay_crd,
    plain_manifest_docs,
    render,
    run_helm,
)
from tests.k8s.schemas import crd_errors

SERVE_CONFIG = REPO_ROOT / "workloads" / "serve_config.yaml"
ONLY_RAYSERVICE = ("--show-only", "templates/rayservice.yaml")
SERVING = ["--set", "serve.enabled=true", "--set", f"serve.checkpointUri={CHECKPOINT}"]


def policy_deployment(config: dict[str, Any]) -> dict[str, Any]:
    (app,) = [a for a in config["applications"] if a["name"] == "corridor"]
    (dep,) = [d for d in app["deployments"] if d["name"] == "PolicyServer"]
    return dep


def rayservices(rendered: dict[str, Rendered]) -> list[tuple[str, dict[str, Any]]]:
    out = [(f"chart[{s.name}]", doc) for s in rendered.values() for doc in s.of_kind("RayService")]
    out += [(f"manifests/{n}", doc) for n, doc in plain_manifest_docs() if doc["kind"] == "RayService"]
    assert len(out) >= 3
    return out


def rendered_rayservice(*args: str) -> dict[str, Any]:
    return yaml.safe_load(render(*SERVING, *args, *ONLY_RAYSERVICE))


def serve_config_of(rayservice: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def check_autoscaling(source: str, dep: dict[str, Any]) -> dict[str, Any]:
    """The deployment autoscales, with settings Ray accepts and that make sense together."""
    from ray.serve.config import AutoscalingConfig

    assert "num_replicas" not in dep, f"{source}: num_replicas next to autoscaling_config"
    raw = dep["autoscaling_config"]
    unknown = set(raw) - set(AutoscalingConfig.model_fields)
    assert not unknown, f"{source}: Ray ignores unknown autoscaling keys {unknown}"
    cfg = AutoscalingConfig.model_validate(raw)
    assert 1 <= cfg.min_replicas < cfg.max_replicas, source
    assert cfg.target_ongoing_requests is not None and cfg.target_ongoing_requests >= 1, source
    assert cfg.look_back_period_s > cfg.metrics_interval_s, source
    assert cfg.upscale_delay_s < cfg.downscale_delay_s, f"{source}: scale up fast, down slowly"
    assert dep["max_ongoing_requests"] > cfg.target_ongoing_requests, f"{source}: target never reached"
    # a replica that scales down drains its requests in flight before it stops
    assert 0 < dep["graceful_shutdown_wait_loop_s"] < dep["graceful_shutdown_timeout_s"], source
    return raw


def test_shipped_serve_config_autoscales_and_ray_accepts_it() -> None:
    schema = pytest.importorskip("ray.serve.schema")
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    schema.ServeDeploySchema.model_validate(config)
    check_autoscaling("workloads/serve_config.yaml", policy_deployment(config))


def test_ray_refuses_num_replicas_next_to_autoscaling_config() -> None:
    """Why the chart drops num_replicas when it sets autoscaling_config (and the other way round)."""
    schema = pytest.importorskip("ray.serve.schema")
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    policy_deployment(config)["num_replicas"] = 2
    with pytest.raises(ValueError, match="num_replicas is not allowed when autoscaling_config"):
        schema.ServeDeploySchema.model_validate(config)


def test_every_rayservice_ships_serve_autoscaling(rendered: dict[str, Rendered]) -> None:
    pytest.importorskip("ray.serve.config")
    shipped = policy_deployment(yaml.safe_load(SERVE_CONFIG.read_text()))
    for source, doc in rayservices(rendered):
        dep = policy_deployment(serve_config_of(doc))
        raw = check_autoscaling(source, dep)
        assert set(raw) == set(shipped["autoscaling_config"]), source
        assert raw["min_replicas"] >= 2, f"{source}: two replicas keep serving while one reconfigures"
        for key in ("graceful_shutdown_wait_loop_s", "graceful_shutdown_timeout_s", "max_ongoing_requests"):
            assert dep[key] == shipped[key], f"{source}: {key} differs from workloads/serve_config.yaml"


def test_chart_values_set_every_autoscaling_setting() -> None:
    args = {
        "minReplicas": "3",
        "maxReplicas": "6",
        "upscaleDelaySeconds": "7",
        "downscaleDelaySeconds": "120",
        "metricsIntervalSeconds": "2",
        "lookBackPeriodSeconds": "12",
    }
    sets = [x for k, v in args.items() for x in ("--set", f"serve.autoscaling.{k}={v}")]
    sets += ["--set-json", "serve.autoscaling.targetOngoingRequests=2.5"]  # --set makes floats strings
    raw = policy_deployment(serve_config_of(rendered_rayservice(*sets)))["autoscaling_config"]
    assert raw == {
        "min_replicas": 3,
        "max_replicas": 6,
        "target_ongoing_requests": 2.5,
        "upscale_delay_s": 7,
        "downscale_delay_s": 120,
        "metrics_interval_s": 2,
        "look_back_period_s": 12,
    }


def test_autoscaling_off_gives_fixed_replicas() -> None:
    schema = pytest.importorskip("ray.serve.schema")
    doc = rendered_rayservice("--set", "serve.autoscaling.enabled=false", "--set", "serve.numReplicas=3")
    config = serve_config_of(doc)
    dep = policy_deployment(config)
    assert dep["num_replicas"] == 3 and "autoscaling_config" not in dep
    schema.ServeDeploySchema.model_validate(config)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "serve.autoscaling.minReplicas=5", "--set", "serve.autoscaling.maxReplicas=3"],
         "minReplicas (5) is above maxReplicas (3)"),
        (["--set", "serve.autoscaling.lookBackPeriodSeconds=1",
          "--set", "serve.autoscaling.metricsIntervalSeconds=2"],
         "lookBackPeriodSeconds (1) must exceed metricsIntervalSeconds (2)"),
        (["--set", "serve.autoscaling.maxReplicas=40"],
         "lower maxReplicas or replicaCpus, or allow more workers"),
        (["--set", "serve.autoscaling.targetOngoingRequests=0"], "targetOngoingRequests"),
        (["--set", "serve.autoscaling.maxReplicas=0"], "maxReplicas"),
        (["--set", "serve.autoscaling.min_replicas=2"], "min_replicas"),
        (["--set", "serve.clusterAutoscaler.upscalingMode=Fast"], "upscalingMode"),
        (["--set", "serve.clusterAutoscaler.idleTimeoutSeconds=-1"], "idleTimeoutSeconds"),
    ],
)  # fmt: skip
def test_bad_autoscaling_values_are_refused_with_a_clear_error(args: list[str], message: str) -> None:
    result = run_helm("template", "x", str(CHART), *SERVING, *args, check=False)
    assert result.returncode != 0, f"{args} rendered but should not"
    assert message in result.stderr, result.stderr


def cpus(quantity: str | float | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("scenario", ["kind-full", "gpu-full"])
def test_serving_cluster_autoscales_and_has_room_for_max_replicas(
    rendered: dict[str, Rendered], scenario: str
) -> None:
    doc = rendered[scenario].one("RayService")
    cluster = doc["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    options = cluster["autoscalerOptions"]
    assert options["upscalingMode"] in ("Default", "Aggressive", "Conservative")
    assert options["idleTimeoutSeconds"] > 0
    assert options["resources"]["limits"]["memory"] and options["resources"]["limits"]["cpu"]
    assert options["securityContext"]["allowPrivilegeEscalation"] is False
    dep = policy_deployment(serve_config_of(doc))
    need = dep["autoscaling_config"]["max_replicas"] * dep["ray_actor_options"]["num_cpus"]
    floor = dep["autoscaling_config"]["min_replicas"] * dep["ray_actor_options"]["num_cpus"]
    head_cpus = float(cluster["headGroupSpec"]["rayStartParams"]["num-cpus"])
    room = head_cpus
    for group in cluster.get("workerGroupSpecs", []):
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        (container,) = group["template"]["spec"]["containers"]
        worker_cpus = cpus(container["resources"]["limits"]["cpu"])
        room += group["maxReplicas"] * worker_cpus
        min_room = head_cpus + group["minReplicas"] * worker_cpus
        assert min_room >= floor, f"{scenario}: min_replicas do not fit the cluster at its smallest"
    assert room >= need, f"{scenario}: max_replicas need {need} CPUs, the cluster has at most {room}"


def test_default_serving_cluster_adds_worker_pods_for_new_replicas(rendered: dict[str, Rendered]) -> None:
    """Production defaults: no replica on the head, workers from min to max, and max replicas need
    more than the minimum pool, so scaling Serve up really makes the autoscaler add pods."""
    cluster = rendered["gpu-full"].one("RayService")["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = cluster["workerGroupSpecs"]
    assert group["groupName"] == "serve" and group["minReplicas"] < group["maxReplicas"]
    dep = policy_deployment(serve_config_of(rendered["gpu-full"].one("RayService")))
    per_pod = cpus(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    replicas_per_pod = math.floor(per_pod / dep["ray_actor_options"]["num_cpus"])
    pods_at_max = math.ceil(dep["autoscaling_config"]["max_replicas"] / replicas_per_pod)
    assert group["minReplicas"] < pods_at_max <= group["maxReplicas"]


def test_kind_values_keep_every_replica_on_the_head() -> None:
    values = yaml.safe_load(KIND_VALUES.read_text())["serve"]
    assert values["workers"]["maxReplicas"] == 0
    assert values["autoscaling"]["maxReplicas"] * values["replicaCpus"] <= float(values["head"]["numCpus"])


def test_autoscaler_options_are_checked_against_the_kuberay_crd(rendered: dict[str, Rendered]) -> None:
    """The RayServices pass KubeRay 1.7.0's schema (tests/k8s/test_k8s_schemas.py checks them all); here a
    wrong autoscaler field is shown to fail it, so the check really covers autoscalerOptions."""
    kuberay_crd("RayService")
    path = KUBERAY_CRDS / "ray.io_rayservices.yaml"
    doc = rendered["gpu-full"].one("RayService")
    assert crd_errors(path, doc) == []
    bad = copy.deepcopy(doc)
    cluster = bad["spec"]["rayClusterConfig"]
    cluster["autoscalerOptions"]["upscalingMode"] = "Fast"
    cluster["autoscalerOptions"]["idleTimeout"] = 60
    cluster["workerGroupSpecs"][0]["maxReplicas"] = "four"
    errors = crd_errors(path, bad)
    assert any("upscalingMode" in e for e in errors), errors
    assert any("idleTimeout" in e for e in errors), errors
    assert any("maxReplicas" in e for e in errors), errors


def test_operator_patch_changes_only_the_checkpoint_and_keeps_autoscaling(
    rendered: dict[str, Rendered],
) -> None:
    """The operator's promotion edit of serveConfigV2 (rlops_operator.serveconfig, what the RayService
    target patches) leaves autoscaling_config and every other setting exactly as rendered."""
    serveconfig = pytest.importorskip("rlops_operator.serveconfig")
    for source, doc in rayservices(rendered):
        text = doc["spec"]["serveConfigV2"]
        new_uri = "s3://rlops/experiments/run-2/PPO_corridor_00001/checkpoint_000009"
        patched = yaml.safe_load(serveconfig.with_checkpoint(text, "corridor", "PolicyServer", new_uri))
        before = yaml.safe_load(text)
        dep_before, dep_after = policy_deployment(before), policy_deployment(patched)
        assert dep_after["autoscaling_config"] == dep_before["autoscaling_config"], source
        assert "num_replicas" not in dep_after, source
        assert dep_after["user_config"]["checkpoint_uri"] == new_uri
        dep_after["user_config"]["checkpoint_uri"] = dep_before["user_config"]["checkpoint_uri"]
        assert patched == before, f"{source}: the patch changed more than the checkpoint"
