"""Serve autoscaling neither blocks nor fails a promotion; a deployment that really fails still does.

Serve 2.60's statuses (ray/serve/_private/common.py ``DeploymentStatus``, ray/serve/schema.py
``ApplicationStatus``): while Serve autoscales, the application stays ``RUNNING`` and the deployment is
``UPSCALING``/``DOWNSCALING``. The judgement (``targets.judge_application``) is checked on its own, then
through both targets reading the same statuses in their own shapes:

- the dashboard target against a real HTTP server on loopback answering Serve's REST shape
  (``/api/serve/applications/`` with ``status_trigger``, ``target_num_replicas`` and ``replicas``, as
  Ray 2.60's dashboard writes them; an emulation of the dashboard, not Ray);
- the RayService target against kmock's KubernetesEmulator holding a RayService whose
  ``status.activeServiceStatus.applicationStatuses`` is what KubeRay 1.7 copies from Serve.

Then the endpoint side: ``probe_metadata`` asks several replicas (a real HTTP server answering as a
different replica each time), and the engine, driving a real dashboard target and probing a real
endpoint, promotes during autoscaling only once every answering replica names the new checkpoint.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from rlops_operator import targets
from rlops_operator.dashboard import DashboardTarget
from rlops_operator.engine import Engine
from rlops_operator.rayservice import RayServiceTarget
from rlops_operator.spec import RolloutSpec, TargetSpec
from rlops_operator.targets import Health, judge_application, probe_metadata

from rlops_core import checkpoints
from rlops_core.serve_client import APPLICATIONS_PATH
from tests.helpers.http_server import RecordingServer, Reply, Seen
from tests.operator.conftest import make_checkpoint
from tests.operator.doubles import Clock
from tests.operator.kube import EmulatedCluster, rayservice_path

NS = "default"
APP, DEP = "corridor", "PolicyServer"
OLD, NEW = "s3://bucket/ck/a", "s3://bucket/ck/b"
_names = itertools.count(1)

# ---------------------------------------------------------------- the cases, in Serve's own statuses
# (id, application status, {deployment: status}, expected state, expected Health.scaling)
CASES: list[tuple[str, str, dict[str, str], str, tuple[str, ...]]] = [
    ("running-healthy", "RUNNING", {DEP: "HEALTHY"}, "healthy", ()),
    ("running-upscaling", "RUNNING", {DEP: "UPSCALING"}, "healthy", (DEP,)),
    ("running-downscaling", "RUNNING", {DEP: "DOWNSCALING"}, "healthy", (DEP,)),
    (
        "mixed-healthy-and-upscaling",
        "RUNNING",
        {DEP: "HEALTHY", "Router": "UPSCALING"},
        "healthy",
        ("Router",),
    ),
    (
        "mixed-up-and-down",
        "RUNNING",
        {DEP: "DOWNSCALING", "Router": "UPSCALING"},
        "healthy",
        (DEP, "Router"),
    ),
    ("deploying-updating", "DEPLOYING", {DEP: "UPDATING"}, "pending", ()),
    # Serve 2.60 reports DEPLOYING for a manual replica change inside a config update (trigger
    # CONFIG_UPDATE_STARTED): the config is still being applied.
    ("deploying-upscaling", "DEPLOYING", {DEP: "UPSCALING"}, "pending", ()),
    ("deploying-other-updating", "DEPLOYING", {DEP: "HEALTHY", "Router": "UPDATING"}, "pending", ()),
    ("not-started", "NOT_STARTED", {}, "pending", ()),
    ("unhealthy", "UNHEALTHY", {DEP: "UNHEALTHY"}, "pending", ()),
    ("unhealthy-other-while-scaling", "UNHEALTHY", {DEP: "UPSCALING", "Router": "UNHEALTHY"}, "pending", ()),
    ("deleting", "DELETING", {DEP: "HEALTHY"}, "pending", ()),
    ("running-without-the-deployment", "RUNNING", {"Router": "HEALTHY"}, "pending", ()),
    ("running-unknown-status", "RUNNING", {DEP: "RESIZING"}, "pending", ()),
    ("deploy-failed", "DEPLOY_FAILED", {DEP: "DEPLOY_FAILED"}, "failed", ()),
    ("deploy-failed-app-only", "DEPLOY_FAILED", {DEP: "UPSCALING"}, "failed", ()),
    (
        "deploy-failed-other-deployment",
        "DEPLOYING",
        {DEP: "UPSCALING", "Router": "DEPLOY_FAILED"},
        "failed",
        (),
    ),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("case", "app_status", "deps", "state", "scaling"), CASES, ids=IDS)
def test_judge_application(case: str, app_status: str, deps: dict, state: str, scaling: tuple) -> None:
    health = judge_application(app_status, {n: {"status": s} for n, s in deps.items()}, DEP, "why")
    assert (health.state, health.scaling) == (state, scaling), health.detail
    assert health.detail  # always says why


def test_details_say_what_serve_is_doing() -> None:
    up = judge_application("RUNNING", {DEP: {"status": "UPSCALING"}}, DEP)
    assert "autoscales" in up.detail and f"{DEP} UPSCALING" in up.detail and "/metadata" in up.detail
    sick = judge_application("UNHEALTHY", {DEP: {"status": "UNHEALTHY"}}, DEP, "health check failed")
    assert "health check failed" in sick.detail and "timeout" in sick.detail
    failed = judge_application(
        "DEPLOYING", {DEP: {"status": "UPSCALING"}, "R": {"status": "DEPLOY_FAILED"}}, DEP
    )
    assert "DEPLOY_FAILED: ['R']" in failed.detail
    missing = judge_application("RUNNING", {"R": {"status": "HEALTHY"}}, DEP)
    assert repr(DEP) in missing.detail


def test_a_deployment_status_of_the_wrong_type_is_still_refused() -> None:
    with pytest.raises(targets.TargetError) as info:
        judge_application("RUNNING", {DEP: {"status": 4}}, DEP)
    assert info.value.reason == "UnexpectedStatus"


# ---------------------------------------------------------------- dashboard target (real HTTP server)
def app_config(uri: str) -> dict[str, Any]:
    return {
        "name": APP,
        "route_prefix": "/",
        "import_path": "workloads.serve_app:app",
        "deployments": [
            {
                "name": DEP,
                "autoscaling_config": {"min_replicas": 1, "max_replicas": 4},
                "user_config": {"checkpoint_uri": uri},
            }
        ],
    }


def dashboard_deployment(name: str, status: str, replicas: int = 2) -> dict[str, Any]:
    """A deployment as Ray 2.60's dashboard describes it (DeploymentDetails)."""
    trigger = {"UPSCALING": "AUTOSCALING", "DOWNSCALING": "AUTOSCALING", "HEALTHY": "UPSCALE_COMPLETED"}
    return {
        "name": name,
        "status": status,
        "status_trigger": trigger.get(status, "CONFIG_UPDATE_STARTED"),
        "message": "" if status in ("HEALTHY", "UPSCALING", "DOWNSCALING") else f"{name} is {status}",
        "deployment_config": {"name": name},
        "target_num_replicas": replicas + (1 if status == "UPSCALING" else 0),
        "required_resources": {"CPU": 1},
        "replicas": [
            {"replica_id": f"{name}-{i}", "state": "RUNNING", "pid": 100 + i, "actor_name": f"r{i}"}
            for i in range(replicas)
        ],
    }


class ServeDashboard:
    """Serve's REST API in the shape Ray 2.60 answers: GET the details, PUT a declarative config."""

    def __init__(self, server: RecordingServer, uri: str) -> None:
        self.config = app_config(uri)
        self.app_status = "RUNNING"
        self.deployments: dict[str, str] = {DEP: "HEALTHY"}
        self.puts = 0
        self.lock = threading.Lock()
        server.routes[APPLICATIONS_PATH] = self.answer

    def answer(self, seen: Seen) -> Reply:
        with self.lock:
            if seen.method == "PUT":
                self.config = seen.json()["applications"][0]
                self.puts += 1
                return Reply(200, None)
            app = {
                "name": APP,
                "route_prefix": "/",
                "status": self.app_status,
                "message": "" if self.app_status == "RUNNING" else f"application {self.app_status}",
                "source": "declarative",
                "deployed_app_config": copy.deepcopy(self.config),
                "deployments": {n: dashboard_deployment(n, s) for n, s in self.deployments.items()},
            }
            return Reply(200, {"http_options": {"host": "0.0.0.0", "port": 8000}, "applications": {APP: app}})


@pytest.fixture
def dashboard() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def dash_target(server: RecordingServer) -> DashboardTarget:
    return DashboardTarget(server.url, APP, DEP, token="t0ken", timeout=5)


@pytest.mark.parametrize(("case", "app_status", "deps", "state", "scaling"), CASES, ids=IDS)
def test_dashboard_target_judges_serve_statuses(
    dashboard: RecordingServer, case: str, app_status: str, deps: dict, state: str, scaling: tuple
) -> None:
    serve = ServeDashboard(dashboard, NEW)
    serve.app_status, serve.deployments = app_status, deps
    health = dash_target(dashboard).health(NEW)
    assert (health.state, health.scaling) == (state, scaling), health.detail
    # The config still naming the old checkpoint is pending whatever the statuses say.
    serve.config = app_config(OLD)
    assert dash_target(dashboard).health(NEW).state == "pending"


# ---------------------------------------------------------------- RayService target (kmock)
@pytest.fixture(scope="module")
def k8s_api(kube: EmulatedCluster, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from kubernetes import config

    kubeconfig = kube.write_kubeconfig(tmp_path_factory.mktemp("kubeconfig") / "config")
    return config.new_client_from_config(config_file=str(kubeconfig))


def kuberay_status(generation: int, app_status: str, deps: dict[str, str]) -> dict[str, Any]:
    """A RayService status as KubeRay 1.7 writes it (serveDeploymentStatuses: status and message)."""
    return {
        "observedGeneration": generation,
        "serviceStatus": "Running",
        "activeServiceStatus": {
            "applicationStatuses": {
                APP: {
                    "status": app_status,
                    "message": "" if app_status == "RUNNING" else f"application {app_status}",
                    "serveDeploymentStatuses": {n: {"status": s, "message": ""} for n, s in deps.items()},
                }
            }
        },
    }


def create_rayservice(kube: EmulatedCluster, uri: str) -> tuple[str, int]:
    name = f"autoscaling-{next(_names)}"
    body = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"serveConfigV2": yaml.safe_dump({"applications": [app_config(uri)]})},
    }
    kube.request("POST", rayservice_path(NS), body)
    return name, int(kube.get(rayservice_path(NS, name))["metadata"]["generation"])


@pytest.mark.parametrize(("case", "app_status", "deps", "state", "scaling"), CASES, ids=IDS)
def test_rayservice_target_judges_serve_statuses(
    kube: EmulatedCluster, k8s_api: Any, case: str, app_status: str, deps: dict, state: str, scaling: tuple
) -> None:
    name, generation = create_rayservice(kube, NEW)
    kube.request(
        "PATCH",
        rayservice_path(NS, name) + "/status",
        {"status": kuberay_status(generation, app_status, deps)},
    )
    target = RayServiceTarget(name, NS, APP, DEP, api=k8s_api, backoff_s=0.0)
    health = target.health(NEW)
    assert (health.state, health.scaling) == (state, scaling), health.detail
    # A status KubeRay wrote for an older generation is not evidence about this one.
    stale = kuberay_status(generation - 1, app_status, deps)
    kube.request("PATCH", rayservice_path(NS, name) + "/status", {"status": stale})
    assert target.health(NEW).state == "pending"


# ---------------------------------------------------------------- /metadata from several replicas
class Replicas:
    """An endpoint whose ``/metadata`` answers come from replicas in turn (as Serve's router spreads
    requests); ``table`` is replica id → (checkpoint_uri, last_error or None)."""

    def __init__(self, server: RecordingServer, table: dict[str, tuple[str, dict | None]]) -> None:
        self.table = table
        self.turn = itertools.count()
        self.fail_after: int | None = None
        self.lock = threading.Lock()
        server.routes["/metadata"] = self.answer

    def answer(self, seen: Seen) -> Reply:
        with self.lock:
            n = next(self.turn)
            if self.fail_after is not None and n >= self.fail_after:
                return Reply(503, {"error": "no replica available"})
            ids = sorted(self.table)
            replica = ids[n % len(ids)]
            uri, last_error = self.table[replica]
        return Reply(
            200, {"checkpoint_uri": uri, "replica": replica, "last_error": last_error, "swap_count": 1}
        )


@pytest.fixture
def endpoint() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def test_probe_reports_the_checkpoint_every_replica_serves(endpoint: RecordingServer) -> None:
    Replicas(endpoint, {"r1": (NEW, None), "r2": (NEW, None), "r3": (NEW, None)})
    meta = probe_metadata(endpoint.url)
    assert meta is not None and meta.checkpoint_uri == NEW and meta.failed_uri is None
    assert meta.replicas == {"r1": NEW, "r2": NEW, "r3": NEW}  # several replicas were asked
    assert len(endpoint.requests("/metadata")) == targets.METADATA_SAMPLES


def test_probe_names_no_checkpoint_while_a_replica_lags(endpoint: RecordingServer) -> None:
    Replicas(endpoint, {"r1": (NEW, None), "r2": (NEW, None), "r3": (OLD, None)})
    meta = probe_metadata(endpoint.url)
    assert meta is not None and meta.checkpoint_uri is None
    assert meta.replicas["r3"] == OLD and "r3 " + OLD in meta.describe()


def test_probe_reports_a_failed_swap_on_any_replica(endpoint: RecordingServer) -> None:
    old_failure = {"checkpoint_uri": "s3://bucket/ck/older", "error": "gone", "at": "2026-01-01T00:00:00Z"}
    new_failure = {"checkpoint_uri": NEW, "error": "manifest mismatch", "at": "2026-01-02T00:00:00Z"}
    Replicas(endpoint, {"r1": (NEW, None), "r2": (OLD, new_failure), "r3": (OLD, old_failure)})
    meta = probe_metadata(endpoint.url)
    assert meta is not None and meta.failed_uri == NEW and meta.error == "manifest mismatch"
    assert meta.checkpoint_uri is None  # so the engine's swap-failure rule applies


def test_probe_keeps_what_answered_and_is_none_when_nothing_did(endpoint: RecordingServer) -> None:
    replicas = Replicas(endpoint, {"r1": (NEW, None), "r2": (NEW, None)})
    replicas.fail_after = 2
    meta = probe_metadata(endpoint.url)
    assert meta is not None and meta.checkpoint_uri == NEW and set(meta.replicas) == {"r1", "r2"}
    replicas.fail_after = 0
    assert probe_metadata(endpoint.url) is None
    assert probe_metadata("http://127.0.0.1:1") is None  # nothing listens there


def test_probe_of_a_single_replica_without_an_id(endpoint: RecordingServer) -> None:
    endpoint.routes["/metadata"] = Reply(200, {"checkpoint_uri": NEW})
    meta = probe_metadata(endpoint.url, samples=3)
    assert meta is not None and meta.checkpoint_uri == NEW and len(meta.replicas) == 3


# ---------------------------------------------------------------- the engine, end to end over HTTP
@pytest.fixture
def store(tmp_path: Any) -> str:
    root = tmp_path / "store"
    root.mkdir()
    return str(root)


def engine_for(
    store: str, dashboard: RecordingServer, endpoint: RecordingServer
) -> tuple[Engine, Clock, str]:
    live = make_checkpoint(store, "exp", "trial_a", 5.0)
    new = make_checkpoint(store, "exp", "trial_b", 7.5)
    spec = RolloutSpec(
        pointer=checkpoints.pointer_uri(store, "corridor"),
        target=TargetSpec(dashboard_url=dashboard.url, endpoint_url=endpoint.url),
        name="autoscaling",
        rollout_timeout_s=60,
    )
    checkpoints.write_pointer(spec.pointer, new)
    clock = Clock()
    return Engine(spec, dash_target(dashboard), clock=clock), clock, live


def test_engine_promotes_while_serve_upscales_once_every_replica_serves_it(
    store: str, dashboard: RecordingServer, endpoint: RecordingServer
) -> None:
    engine, clock, live = engine_for(store, dashboard, endpoint)
    serve = ServeDashboard(dashboard, live)
    st = engine.step({"live": {"checkpointUri": live}}).status
    new = serve.config["deployments"][0]["user_config"]["checkpoint_uri"]
    assert st["phase"] == "Verifying" and new != live and serve.puts == 1
    # Serve autoscales through the whole verification (a load ramp), and one replica still serves the
    # old checkpoint: the rollout waits, saying so, and does not fail.
    serve.deployments = {DEP: "UPSCALING"}
    replicas = Replicas(endpoint, {"r1": (new, None), "r2": (live, None), "r3": (new, None)})
    for _ in range(3):
        clock.t += 5
        result = engine.step(st)
        st = result.status
        assert result.decisions == [] and st["phase"] == "Verifying"
    waiting = str(st["rollout"].get("waitingFor"))
    assert waiting.startswith("/metadata names") and new not in waiting  # not claimed live
    replicas.table["r2"] = (new, None)  # its reconfigure finished; Serve still UPSCALING
    clock.t += 5
    result = engine.step(st)
    assert [d.kind for d in result.decisions] == ["Promoted"], result.status.get("rollout")
    assert result.status["live"]["checkpointUri"] == new and serve.puts == 1  # never rolled back


def test_engine_promotes_while_serve_downscales(
    store: str, dashboard: RecordingServer, endpoint: RecordingServer
) -> None:
    engine, clock, live = engine_for(store, dashboard, endpoint)
    serve = ServeDashboard(dashboard, live)
    st = engine.step({"live": {"checkpointUri": live}}).status
    new = serve.config["deployments"][0]["user_config"]["checkpoint_uri"]
    serve.deployments = {DEP: "DOWNSCALING"}
    Replicas(endpoint, {"r1": (new, None), "r2": (new, None)})
    clock.t += 2
    result = engine.step(st)
    assert [d.kind for d in result.decisions] == ["Promoted"]


def test_engine_rolls_back_a_deployment_that_stays_unhealthy(
    store: str, dashboard: RecordingServer, endpoint: RecordingServer
) -> None:
    engine, clock, live = engine_for(store, dashboard, endpoint)
    serve = ServeDashboard(dashboard, live)
    st = engine.step({"live": {"checkpointUri": live}}).status
    new = serve.config["deployments"][0]["user_config"]["checkpoint_uri"]
    serve.app_status, serve.deployments = "UNHEALTHY", {DEP: "UNHEALTHY"}
    Replicas(endpoint, {"r1": (new, None)})  # the replica that answers names it: not enough
    clock.t += 30
    result = engine.step(st)
    assert result.decisions == [] and result.status["phase"] == "Verifying"  # Serve may still recover
    clock.t += 31  # past rolloutTimeoutSeconds
    result = engine.step(result.status)
    assert [(d.kind, d.reason) for d in result.decisions] == [("RolledBack", "Timeout")]
    assert serve.config["deployments"][0]["user_config"]["checkpoint_uri"] == live


def test_engine_rolls_back_at_once_when_serve_gives_up(
    store: str, dashboard: RecordingServer, endpoint: RecordingServer
) -> None:
    engine, clock, live = engine_for(store, dashboard, endpoint)
    serve = ServeDashboard(dashboard, live)
    st = engine.step({"live": {"checkpointUri": live}}).status
    serve.app_status, serve.deployments = "DEPLOY_FAILED", {DEP: "DEPLOY_FAILED"}
    Replicas(endpoint, {"r1": (live, None)})
    clock.t += 1
    result = engine.step(st)
    assert [(d.kind, d.reason) for d in result.decisions] == [("RolledBack", "ApplicationFailed")]
    assert serve.config["deployments"][0]["user_config"]["checkpoint_uri"] == live


def test_health_is_a_plain_value() -> None:
    """Existing callers build Health with two fields; ``scaling`` defaults to none."""
    assert Health("healthy", "x").scaling == ()


def test_engine_promotes_on_a_rayservice_while_serve_upscales(
    store: str, kube: EmulatedCluster, k8s_api: Any, endpoint: RecordingServer
) -> None:
    """The same over the RayService target: the engine patches serveConfigV2 in the emulated API, and
    KubeRay's status (written here, as KubeRay would) says RUNNING / UPSCALING for the new generation."""
    live = make_checkpoint(store, "exp", "trial_a", 5.0)
    new = make_checkpoint(store, "exp", "trial_b", 7.5)
    name, generation = create_rayservice(kube, live)
    kube.request(
        "PATCH",
        rayservice_path(NS, name) + "/status",
        {"status": kuberay_status(generation, "RUNNING", {DEP: "HEALTHY"})},
    )
    spec = RolloutSpec(
        pointer=checkpoints.pointer_uri(store, "corridor"),
        target=TargetSpec(ray_service=name, namespace=NS, endpoint_url=endpoint.url),
        name="autoscaling-rs",
        rollout_timeout_s=60,
    )
    checkpoints.write_pointer(spec.pointer, new)
    clock = Clock()
    target = RayServiceTarget(name, NS, APP, DEP, api=k8s_api, backoff_s=0.0)
    engine = Engine(spec, target, clock=clock)
    st = engine.step({"live": {"checkpointUri": live}}).status
    assert st["phase"] == "Verifying" and target.current_checkpoint() == new
    patched = int(kube.get(rayservice_path(NS, name))["metadata"]["generation"])
    assert patched > generation
    kube.request(
        "PATCH",
        rayservice_path(NS, name) + "/status",
        {"status": kuberay_status(patched, "RUNNING", {DEP: "UPSCALING"})},
    )
    replicas = Replicas(endpoint, {"r1": (new, None), "r2": (live, None)})
    clock.t += 5
    result = engine.step(st)
    assert result.decisions == [] and result.status["phase"] == "Verifying"
    replicas.table["r2"] = (new, None)
    clock.t += 5
    result = engine.step(result.status)
    assert [d.kind for d in result.decisions] == ["Promoted"], result.status.get("rollout")
    assert target.current_checkpoint() == new
