"""The Helm chart: lint, render, values schema, and the settings the issue asks of each resource."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest
import yaml

from tests.k8s.conftest import CHART, CHECKPOINT, KIND_VALUES, SCENARIOS, Rendered, render, run_helm


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def ray_pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Head and worker pod specs of a RayJob or RayService."""
    cluster = doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]
    specs = [cluster["headGroupSpec"]["template"]["spec"]]
    specs += [group["template"]["spec"] for group in cluster.get("workerGroupSpecs", [])]
    return specs


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_passes_for_every_scenario(scenario: str) -> None:
    result = run_helm("lint", "--strict", str(CHART), *SCENARIOS[scenario], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_scenario_renders_the_expected_kinds(rendered: dict[str, Rendered]) -> None:
    assert {d["kind"] for d in rendered["defaults"].docs} == {
        "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
        "Deployment", "Service", "RayJob", "NetworkPolicy",
    }  # fmt: skip
    kinds = {d["kind"] for d in rendered["kind-full"].docs}
    assert {"RayJob", "RayService", "PolicyRollout", "Deployment", "Job", "Pod", "Service"} <= kinds
    crds = {d["metadata"]["name"] for d in rendered["defaults"].of_kind("CustomResourceDefinition")}
    assert crds == {"policyrollouts.rlops.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "serve.enabled=true"], "checkpointUri"),
        (["--set", "training.scheduler=hyperband"], "scheduler"),
        (["--set", "training.runName=Bad_Name"], "runName"),
        (["--set", "operator.replicas=2"], "peering"),
        (["--set", "storage.uri=ftp://nowhere"], "uri"),
        (["--set", "serve.upgradeStrategy=Recreate"], "upgradeStrategy"),
        (["--set", "unknownKey=1"], "unknownKey"),
        (["--set", "minio.enabled=true", "--set", "storage.credentialsSecret.name="], "credentialsSecret"),
    ],
)
def test_bad_values_are_refused_with_a_clear_error(args: list[str], message: str) -> None:
    result = run_helm("template", "x", str(CHART), *args, check=False)
    assert result.returncode != 0, f"{args} rendered but should not"
    assert message in result.stderr, result.stderr


def test_values_schema_is_valid_json_schema_and_documents_every_default() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    jsonschema.validate(deep_merge(values, yaml.safe_load(KIND_VALUES.read_text())), schema)
    assert set(values) <= set(schema["properties"])


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's way of layering a values file over values.yaml (maps merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def rayjob(rendered: dict[str, Rendered], scenario: str) -> dict[str, Any]:
    return rendered[scenario].one("RayJob")


def test_gpu_rayjob_has_gpu_free_head_and_autoscaled_gpu_pool(rendered: dict[str, Rendered]) -> None:
    spec = rayjob(rendered, "defaults")["spec"]
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == "2.60.0"
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    for container in head["template"]["spec"]["containers"]:
        for section in ("requests", "limits"):
            assert "nvidia.com/gpu" not in container["resources"].get(section, {})
    (gpu,) = cluster["workerGroupSpecs"]
    assert (gpu["minReplicas"], gpu["replicas"]) == (0, 0)
    assert gpu["maxReplicas"] >= 1
    (worker,) = gpu["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    tolerations = gpu["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_rayjob_lifecycle_settings(rendered: dict[str, Rendered]) -> None:
    for scenario in ("defaults", "kind-full"):
        spec = rayjob(rendered, scenario)["spec"]
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["ttlSecondsAfterFinished"] > 0
        assert spec["backoffLimit"] >= 0
        assert spec["activeDeadlineSeconds"] > 0
        assert spec["submissionMode"] == "K8sJobMode"


def test_rayjob_entrypoint_runs_the_training_cli(rendered: dict[str, Rendered]) -> None:
    argv = shlex.split(rayjob(rendered, "defaults")["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "workloads.train_job"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--storage"] == "s3://rlops/experiments"
    assert flags["--name"] == "run-1"
    assert flags["--num-gpus-per-learner"] == "1"
    assert "--promote" in argv and argv[argv.index("--promote") + 1] == "--channel"
    assert "--autoscaler" in argv  # workers start at zero: the autoscaler adds them
    kind_argv = shlex.split(rayjob(rendered, "kind-full")["spec"]["entrypoint"])
    assert kind_argv[kind_argv.index("--num-gpus-per-learner") + 1] == "0"


def test_kind_rayjob_is_cpu_only(rendered: dict[str, Rendered]) -> None:
    text = yaml.safe_dump(rayjob(rendered, "kind-full"))
    assert "nvidia.com/gpu" not in text
    groups = rayjob(rendered, "kind-full")["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert [g["minReplicas"] for g in groups] == [0]


def test_storage_credentials_come_only_from_a_secret_reference(rendered: dict[str, Rendered]) -> None:
    checked = 0
    for scenario in rendered.values():
        for doc in scenario.docs:
            for spec in pod_specs(doc):
                for container in containers(spec):
                    env = env_of(container)
                    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD"):
                        if name in env:
                            assert "value" not in env[name], f"{scenario.name}: literal {name}"
                            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "rlops-s3"
                            checked += 1
        assert "kind: Secret" not in scenario.text, f"{scenario.name}: the chart must not create Secrets"
    assert checked > 20


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod spec inside a rendered object."""
    kind = doc["kind"]
    if kind == "Pod":
        return [doc["spec"]]
    if kind in ("Deployment", "Job"):
        return [doc["spec"]["template"]["spec"]]
    if kind == "RayService":
        return ray_pod_specs(doc)
    if kind == "RayJob":
        return [*ray_pod_specs(doc), doc["spec"]["submitterPodTemplate"]["spec"]]
    return []


def test_every_pod_runs_non_root_without_privileges(rendered: dict[str, Rendered]) -> None:
    for doc in rendered["kind-full"].docs + rendered["gpu-full"].docs:
        for spec in pod_specs(doc):
            assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            for container in containers(spec):
                ctx = container["securityContext"]
                assert ctx["allowPrivilegeEscalation"] is False
                assert ctx["capabilities"]["drop"] == ["ALL"]
                assert "limits" in container["resources"], container["name"]


def test_operator_deployment(rendered: dict[str, Rendered]) -> None:
    deploy = rendered["defaults"].one("Deployment")
    assert deploy["spec"]["strategy"]["type"] == "Recreate"  # standalone: never two at once
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "rlops_operator"]
    env = env_of(container)
    assert env["RLOPS_NAMESPACES"]["value"] == ""
    assert env["RLOPS_PEERING"]["value"] == ""
    assert env["RLOPS_HEALTH_PORT"]["value"] == "8080"
    assert env["RLOPS_METRICS_PORT"]["value"] == "9090"
    assert env["RLOPS_POSTING_LEVEL"]["value"] == "INFO"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["runAsNonRoot"] is True
    assert container["resources"]["limits"]["memory"]
    service = rendered["defaults"].one("Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"

    peered = rendered["cluster-peering"].one("Deployment")
    assert peered["spec"]["replicas"] == 2 and "strategy" not in peered["spec"]
    peer_env = env_of(peered["spec"]["template"]["spec"]["containers"][0])
    assert peer_env["RLOPS_PEERING"]["value"] == "rlops"
    assert rendered["cluster-peering"].one("ClusterKopfPeering")["metadata"]["name"] == "rlops"
    namespaced = rendered["namespaced-peering"]
    assert {p["metadata"]["namespace"] for p in namespaced.of_kind("KopfPeering")} == {"team-a", "team-b"}
    ns_env = env_of(namespaced.one("Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert ns_env["RLOPS_NAMESPACES"]["value"] == "team-a,team-b"


def serve_config(rendered: dict[str, Rendered], scenario: str) -> dict[str, Any]:
    return yaml.safe_load(rendered[scenario].one("RayService")["spec"]["serveConfigV2"])


def test_rayservice_serve_config_follows_the_shipped_serve_config(rendered: dict[str, Rendered]) -> None:
    shipped = yaml.safe_load((CHART / "files" / "serve_config.yaml").read_text())
    config = serve_config(rendered, "kind-full")
    assert [a["name"] for a in config["applications"]] == [a["name"] for a in shipped["applications"]]
    (app,) = [a for a in config["applications"] if a["name"] == "corridor"]
    shipped_app = next(a for a in shipped["applications"] if a["name"] == "corridor")
    assert app["import_path"] == shipped_app["import_path"] == "workloads.serve_app:app"
    assert app["route_prefix"] == shipped_app["route_prefix"]
    (dep,) = [d for d in app["deployments"] if d["name"] == "PolicyServer"]
    assert dep["user_config"]["checkpoint_uri"] == CHECKPOINT
    assert dep["user_config"]["allowed_prefixes"] == ["s3://rlops/experiments/"]
    assert "num_replicas" not in dep  # autoscaled: Serve refuses num_replicas with autoscaling_config
    assert dep["autoscaling_config"]["min_replicas"] == 2
    # host/port set by the chart; the idle/request limits come from the shipped config (issue 14).
    assert config["http_options"] == {**shipped["http_options"], "host": "0.0.0.0", "port": 8000}
    assert config["http_options"]["keep_alive_timeout_s"] == 5


def test_rayservice_zero_downtime_settings(rendered: dict[str, Rendered]) -> None:
    for scenario in ("kind-full", "gpu-full"):
        spec = rendered[scenario].one("RayService")["spec"]
        assert spec["upgradeStrategy"] == {"type": "NewCluster"}
        dep = serve_config(rendered, scenario)["applications"][0]["deployments"][0]
        assert dep["autoscaling_config"]["min_replicas"] >= 2
        assert spec["rayClusterConfig"]["authOptions"] == {"mode": "token"}


def test_policyrollout_links_the_channel_pointer_to_the_rayservice(rendered: dict[str, Rendered]) -> None:
    full = rendered["gpu-full"]
    rollout = full.one("PolicyRollout")["spec"]
    service = full.one("RayService")["metadata"]["name"]
    argv = shlex.split(full.one("RayJob")["spec"]["entrypoint"])
    channel = argv[argv.index("--channel") + 1]
    storage = argv[argv.index("--storage") + 1]
    assert rollout["pointer"] == f"{storage}/{channel}/best_checkpoint.txt"
    assert rollout["target"] == {
        "rayService": service,
        "application": "corridor",
        "deployment": "PolicyServer",
        "endpointUrl": f"http://{service}-serve-svc.rlops.svc:8000",
    }
    assert rollout["minMetric"] == 5.5
    assert "minMetric" not in rendered["kind-full"].one("PolicyRollout")["spec"]


def test_helm_test_pod_queries_the_endpoint(rendered: dict[str, Rendered]) -> None:
    pod = rendered["kind-full"].one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    env = env_of(container)
    assert env["ENDPOINT"]["value"] == "http://rlops-serve-serve-svc.rlops.svc:8000/"
    script = container["command"][-1]
    compile(script, "helm-test", "exec")
    assert '"state"' in script and "/metadata" in script


def test_minio_bucket_job_targets_the_storage_bucket(rendered: dict[str, Rendered]) -> None:
    job = rendered["kind-full"].one("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    compile(container["command"][-1], "bucket-job", "exec")
    assert env_of(container)["BUCKET"]["value"] == "rlops"
    service = next(s for s in rendered["kind-full"].of_kind("Service") if "minio" in s["metadata"]["name"])
    endpoint = env_of(rendered["kind-full"].one("RayJob")["spec"]["rayClusterSpec"]["headGroupSpec"]
                      ["template"]["spec"]["containers"][0])["AWS_ENDPOINT_URL_S3"]["value"]  # fmt: skip
    assert endpoint == f"http://{service['metadata']['name']}:9000"


def test_new_run_name_gives_a_new_rayjob() -> None:
    first = yaml.safe_load(render("--show-only", "templates/rayjob.yaml"))
    second = yaml.safe_load(render("--show-only", "templates/rayjob.yaml", "--set", "training.runName=run-2"))
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert "--name run-2" in second["spec"]["entrypoint"]


def test_notes_name_the_next_commands() -> None:
    args = SCENARIOS["kind-full"]
    result = run_helm("install", "rlops", str(CHART), "-n", "rlops", "--dry-run=client", *args)
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n rlops get rayjob rlops-train-kind-1" in notes
    assert "helm test rlops -n rlops" in notes
    assert "kubectl -n rlops get policyrollouts" in notes


def test_pull_secrets_and_common_labels_reach_every_object() -> None:
    extra = ["--set", "imagePullSecrets[0].name=regcred", "--set", "commonLabels.team=rl"]
    docs = [d for d in yaml.safe_load_all(render(*SCENARIOS["kind-full"], *extra)) if d]
    checked = 0
    for doc in docs:
        if doc["kind"] != "CustomResourceDefinition":
            assert doc["metadata"]["labels"]["team"] == "rl", doc["kind"]
        for spec in pod_specs(doc):
            image = spec["containers"][0]["image"]
            if image.startswith("rlops-"):
                assert spec.get("imagePullSecrets") == [{"name": "regcred"}], (doc["kind"], image)
                checked += 1
    assert checked >= 7


def test_serve_cluster_env_and_opt_in_fast_ingress() -> None:
    def head_env(*extra: str) -> dict[str, dict[str, Any]]:
        only = ("--show-only", "templates/rayservice.yaml")
        doc = yaml.safe_load(render(*SCENARIOS["kind-full"], *only, *extra))
        spec = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
        return env_of(spec["containers"][0])

    default = head_env()
    assert default["RLOPS_TORCH_THREADS"]["value"] == "1"
    assert "RAY_SERVE_ENABLE_DIRECT_INGRESS" not in default
    fast = head_env("--set", "serve.fastIngress=true")
    assert fast["RAY_SERVE_ENABLE_DIRECT_INGRESS"]["value"] == "1"
    assert fast["RAY_SERVE_ENABLE_HA_PROXY"]["value"] == "1"
