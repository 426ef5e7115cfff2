"""Unexpected shapes are clear TargetErrors, never crashes (issue 10, class 12), for both targets.

The RayService target talks to kmock's KubernetesEmulator (which stores whatever it is given, so a
RayService can carry shapes KubeRay would never write); the dashboard target talks to a real HTTP
server on loopback that answers the shapes (tests/helpers/http_server.py). Each case checks that
reading, judging and applying raise a ``TargetError`` with the expected reason and that nothing was
written to the target.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from rlops_operator.dashboard import DashboardTarget
from rlops_operator.rayservice import RayServiceTarget
from rlops_operator.targets import Lineage, TargetError, TargetMissing

from rlops_core.serve_client import APPLICATIONS_PATH
from tests.helpers.http_server import RecordingServer, Reply
from tests.operator.kube import EmulatedCluster, rayservice_path

NS = "default"
URI, NEW = "s3://bucket/ck/a", "s3://bucket/ck/b"
_names = itertools.count(1)

GOOD_CONFIG: dict[str, Any] = {
    "applications": [
        {
            "name": "corridor",
            "import_path": "workloads.serve_app:app",
            "deployments": [{"name": "PolicyServer", "user_config": {"checkpoint_uri": URI}}],
        }
    ]
}


def config_with(**change: Any) -> dict[str, Any]:
    """GOOD_CONFIG with the application (``app=``) or its deployment (``dep=``) entries changed."""
    config = copy.deepcopy(GOOD_CONFIG)
    config["applications"][0].update(change.get("app", {}))
    if "dep" in change:
        config["applications"][0]["deployments"][0].update(change["dep"])
    for key in change.get("drop", ()):
        config["applications"][0].pop(key)
    return config


# serve configs a target cannot use: (id, config) — the same shapes for both targets
BAD_CONFIGS: list[tuple[str, Any]] = [
    ("app-without-name", config_with(drop=("name",))),
    ("user_config-string", config_with(dep={"user_config": "checkpoint_uri: s3://x"})),
    ("user_config-list", config_with(dep={"user_config": [URI]})),
    ("deployments-dict", config_with(app={"deployments": {"PolicyServer": {"user_config": {}}}})),
    ("deployments-string", config_with(app={"deployments": "PolicyServer"})),
    ("checkpoint_uri-number", config_with(dep={"user_config": {"checkpoint_uri": 7}})),
    ("checkpoint_uri-mapping", config_with(dep={"user_config": {"checkpoint_uri": {"a": 1}}})),
]

# RayService-only serve configs (the dashboard's answer is JSON, never YAML text)
BAD_RAYSERVICE_TEXTS: list[tuple[str, Any]] = [
    *[(case, yaml.safe_dump(config)) for case, config in BAD_CONFIGS],
    ("applications-mapping", "applications:\n  corridor: {import_path: x:app}\n"),
    ("applications-missing", "proxy_location: EveryNode\n"),
    ("not-yaml", "applications: [\n"),
    ("top-level-list", "- name: corridor\n"),
    ("duplicate-app", yaml.safe_dump({"applications": GOOD_CONFIG["applications"] * 2})),
    ("duplicate-key", "applications: []\napplications: []\n"),
    ("not-a-string", {"applications": []}),
]


def good_status(generation: int = 1, **app: Any) -> dict[str, Any]:
    entry = {"status": "RUNNING", "serveDeploymentStatuses": {"PolicyServer": {"status": "HEALTHY"}}}
    entry.update(app)
    return {
        "observedGeneration": generation,
        "activeServiceStatus": {"applicationStatuses": {"corridor": entry}},
    }


BAD_STATUSES: list[tuple[str, Any]] = [
    ("observedGeneration-string", {**good_status(), "observedGeneration": "x"}),
    ("observedGeneration-float", {**good_status(), "observedGeneration": 1.5}),
    ("observedGeneration-bool", {**good_status(), "observedGeneration": True}),
    ("activeServiceStatus-list", {**good_status(), "activeServiceStatus": []}),
    ("applicationStatuses-list", {"activeServiceStatus": {"applicationStatuses": ["corridor"]}}),
    ("application-string", {"activeServiceStatus": {"applicationStatuses": {"corridor": "RUNNING"}}}),
    ("app-status-number", good_status(status=3)),
    ("app-message-mapping", good_status(message={"a": 1})),
    ("deployment-statuses-list", good_status(serveDeploymentStatuses=["PolicyServer"])),
    ("deployment-status-string", good_status(serveDeploymentStatuses={"PolicyServer": "HEALTHY"})),
    ("deployment-status-number", good_status(serveDeploymentStatuses={"PolicyServer": {"status": 1}})),
]


def assert_every_call_refused(target: Any, reason: str, health_uri: str = NEW) -> None:
    """Reading, judging and applying all raise ``TargetError(reason)`` (not a crash, not "missing")."""
    for call in (
        target.current_checkpoint,
        lambda: target.health(health_uri),
        lambda: target.apply(NEW, Lineage(NEW)),
    ):
        with pytest.raises(TargetError) as info:
            call()
        assert info.value.reason == reason, info.value.message
        assert not isinstance(info.value, TargetMissing)
        assert info.value.message


# ---------------------------------------------------------------- RayService (kmock)
@pytest.fixture(scope="module")
def k8s_api(kube: EmulatedCluster, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from kubernetes import config

    kubeconfig = kube.write_kubeconfig(tmp_path_factory.mktemp("kubeconfig") / "config")
    return config.new_client_from_config(config_file=str(kubeconfig))


def create_rayservice(
    kube: EmulatedCluster, serve_config: Any, status: Any = None, **meta: Any
) -> tuple[str, dict[str, Any]]:
    name = f"shapes-{next(_names)}"
    body = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "namespace": NS, **meta},
        "spec": {"serveConfigV2": serve_config},
    }
    kube.request("POST", rayservice_path(NS), body)
    if status is not None:
        kube.request("PATCH", rayservice_path(NS, name) + "/status", {"status": status})
    return name, kube.get(rayservice_path(NS, name))


def rs_target(k8s_api: Any, name: str, **kw: Any) -> RayServiceTarget:
    return RayServiceTarget(name, NS, "corridor", "PolicyServer", api=k8s_api, backoff_s=0.0, **kw)


@pytest.mark.parametrize(("case", "text"), BAD_RAYSERVICE_TEXTS, ids=[c for c, _ in BAD_RAYSERVICE_TEXTS])
def test_rayservice_bad_serve_config_is_invalid_serve_config(
    kube: EmulatedCluster, k8s_api: Any, case: str, text: Any
) -> None:
    name, before = create_rayservice(kube, text, good_status())
    target = rs_target(k8s_api, name)
    assert_every_call_refused(target, "InvalidServeConfig")
    with pytest.raises(TargetError, match=re.escape(target.describe())):
        target.current_checkpoint()  # the message names the RayService
    after = kube.get(rayservice_path(NS, name))
    assert after["spec"] == before["spec"]  # nothing was patched
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_rayservice_config_error_messages_say_what_is_wrong(kube: EmulatedCluster, k8s_api: Any) -> None:
    expectations = {
        "app-without-name": "without 'name'",
        "user_config-string": "user_config of 'PolicyServer' must be a mapping, got a string",
        "deployments-dict": "must be a list, got a mapping",
        "applications-mapping": "'applications' must be a list, got a mapping",
        "not-yaml": "not valid YAML",
        "duplicate-app": "appears 2 times",
        "not-a-string": "must be a YAML string",
        "checkpoint_uri-number": "checkpoint_uri of 'PolicyServer' must be a string, got a number",
    }
    texts = dict(BAD_RAYSERVICE_TEXTS)
    for case, expected in expectations.items():
        name, _ = create_rayservice(kube, texts[case], good_status())
        with pytest.raises(TargetError, match=expected):
            rs_target(k8s_api, name).current_checkpoint()


@pytest.mark.parametrize(("case", "status"), BAD_STATUSES, ids=[c for c, _ in BAD_STATUSES])
def test_rayservice_unexpected_status_shapes(
    kube: EmulatedCluster, k8s_api: Any, case: str, status: Any
) -> None:
    name, _ = create_rayservice(kube, yaml.safe_dump(GOOD_CONFIG), status)
    target = rs_target(k8s_api, name)
    assert target.current_checkpoint() == URI  # the config itself is fine
    with pytest.raises(TargetError) as info:
        target.health(URI)
    assert info.value.reason == "UnexpectedStatus", info.value.message


def test_rayservice_status_not_a_mapping(kube: EmulatedCluster, k8s_api: Any) -> None:
    name, _ = create_rayservice(kube, yaml.safe_dump(GOOD_CONFIG))
    kube.request("PATCH", rayservice_path(NS, name) + "/status", {"status": "Running"})
    with pytest.raises(TargetError) as info:
        rs_target(k8s_api, name).health(URI)
    assert info.value.reason == "UnexpectedStatus" and "status must be a mapping" in info.value.message


def test_rayservice_good_shapes_still_judge(kube: EmulatedCluster, k8s_api: Any) -> None:
    """The checks do not refuse what KubeRay writes: healthy, pending (old generation), failed."""
    name, obj = create_rayservice(kube, yaml.safe_dump(GOOD_CONFIG), good_status())
    gen = obj["metadata"]["generation"]
    target = rs_target(k8s_api, name)
    kube.request("PATCH", rayservice_path(NS, name) + "/status", {"status": good_status(gen)})
    assert target.health(URI).state == "healthy"
    kube.request("PATCH", rayservice_path(NS, name) + "/status", {"status": good_status(gen - 1)})
    assert target.health(URI).state == "pending"
    failed = good_status(gen, status="DEPLOY_FAILED", message="ImportError")
    kube.request("PATCH", rayservice_path(NS, name) + "/status", {"status": failed})
    assert target.health(URI).state == "failed"
    kube.request("PATCH", rayservice_path(NS, name) + "/status", {"status": None})  # merge patch: delete
    assert "status" not in (kube.get(rayservice_path(NS, name)) or {})
    assert target.health(URI).state == "pending"  # KubeRay has not written a status yet


# ---------------------------------------------------------------- retries (tenacity)
def test_rayservice_retries_5xx_then_succeeds(kube: EmulatedCluster, k8s_api: Any) -> None:
    name, _ = create_rayservice(kube, yaml.safe_dump(GOOD_CONFIG), good_status())
    fault = kube.fail_next("GET", "rayservices", 503, 2)
    assert rs_target(k8s_api, name, retries=3).current_checkpoint() == URI
    assert fault.times == 0


def test_rayservice_gives_up_after_its_retries(kube: EmulatedCluster, k8s_api: Any) -> None:
    name, _ = create_rayservice(kube, yaml.safe_dump(GOOD_CONFIG), good_status())
    fault = kube.fail_next("GET", "rayservices", 503, 5)
    with pytest.raises(TargetError) as info:
        rs_target(k8s_api, name, retries=3).current_checkpoint()
    assert info.value.reason == "HTTP503" and fault.times == 2  # exactly three tries


def test_rayservice_does_not_retry_a_4xx(kube: EmulatedCluster, k8s_api: Any) -> None:
    name, _ = create_rayservice(kube, yaml.safe_dump(GOOD_CONFIG), good_status())
    fault = kube.fail_next("GET", "rayservices", 403, 3)
    with pytest.raises(TargetError) as info:
        rs_target(k8s_api, name, retries=3).current_checkpoint()
    assert info.value.reason == "HTTP403" and fault.times == 2  # one try only
    fault.times = 0


def test_rayservice_missing(kube: EmulatedCluster, k8s_api: Any) -> None:
    with pytest.raises(TargetMissing) as info:
        rs_target(k8s_api, "never-created").current_checkpoint()
    assert info.value.reason == "RayServiceMissing"


def test_rayservice_conflicts_are_retried_then_reported(kube: EmulatedCluster, k8s_api: Any) -> None:
    name, _ = create_rayservice(kube, yaml.safe_dump(GOOD_CONFIG), good_status())
    kube.fail_next("PATCH", "rayservices", 409, 2)
    target = rs_target(k8s_api, name, retries=3)
    target.apply(NEW, Lineage(NEW))
    assert target.current_checkpoint() == NEW
    stuck = kube.fail_next("PATCH", "rayservices", 409, 10)
    with pytest.raises(TargetError) as info:
        target.apply(URI, Lineage(URI))
    assert info.value.reason == "Conflict" and "3 tries" in info.value.message
    assert stuck.times == 7 and target.current_checkpoint() == NEW
    stuck.times = 0


# ---------------------------------------------------------------- dashboard (real HTTP server)
def serve_app(config: Any, status: str = "RUNNING", deployments: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": "corridor",
        "status": status,
        "message": "",
        "source": "declarative",
        "deployed_app_config": config,
        "deployments": {"PolicyServer": {"name": "PolicyServer", "status": "HEALTHY", "message": ""}}
        if deployments is None
        else deployments,
        **extra,
    }


def details_with(app: Any) -> dict[str, Any]:
    return {"http_options": {"host": "0.0.0.0", "port": 8000}, "applications": {"corridor": app}}


@pytest.fixture
def dashboard() -> Iterator[RecordingServer]:
    with RecordingServer() as srv:
        yield srv


def dash_target(server: RecordingServer) -> DashboardTarget:
    return DashboardTarget(server.url, "corridor", "PolicyServer", token="t0ken", timeout=5)


DASHBOARD_CONFIGS = [(case, config["applications"][0]) for case, config in BAD_CONFIGS]


@pytest.mark.parametrize(("case", "config"), DASHBOARD_CONFIGS, ids=[c for c, _ in DASHBOARD_CONFIGS])
def test_dashboard_bad_deployed_config_is_invalid_serve_config(
    dashboard: RecordingServer, case: str, config: Any
) -> None:
    dashboard.routes[APPLICATIONS_PATH] = Reply(200, details_with(serve_app(config)))
    assert_every_call_refused(dash_target(dashboard), "InvalidServeConfig")
    assert [s.method for s in dashboard.requests()] == ["GET"] * 3  # never a PUT


DASHBOARD_ANSWERS: list[tuple[str, Any]] = [
    ("applications-list", {"applications": [serve_app(GOOD_CONFIG["applications"][0])]}),
    ("applications-string", {"applications": "corridor"}),
    ("application-string", {"applications": {"corridor": "RUNNING"}}),
    ("app-status-number", details_with(serve_app(GOOD_CONFIG["applications"][0], status=3))),
    ("deployments-list", details_with(serve_app(GOOD_CONFIG["applications"][0], deployments=["D"]))),
    (
        "deployment-status-string",
        details_with(serve_app(GOOD_CONFIG["applications"][0], deployments={"PolicyServer": "HEALTHY"})),
    ),
    ("deployed_app_config-string", details_with(serve_app("name: corridor"))),
    ("answer-list", []),
    ("answer-string", "ok"),
    ("http_options-string", {**details_with(serve_app(GOOD_CONFIG["applications"][0])), "http_options": "x"}),
]


@pytest.mark.parametrize(("case", "answer"), DASHBOARD_ANSWERS, ids=[c for c, _ in DASHBOARD_ANSWERS])
def test_dashboard_unexpected_answer_shapes(dashboard: RecordingServer, case: str, answer: Any) -> None:
    dashboard.routes[APPLICATIONS_PATH] = Reply(200, answer)
    assert_every_call_refused(dash_target(dashboard), "UnexpectedStatus", health_uri=URI)
    assert all(s.method == "GET" for s in dashboard.requests())


def test_dashboard_good_answer_still_works(dashboard: RecordingServer) -> None:
    """The same server with Serve's real shape: read, judge and apply work, only the URI changes."""
    state = {"config": copy.deepcopy(GOOD_CONFIG["applications"][0])}

    def answer(seen: Any) -> Reply:
        if seen.method == "PUT":
            state["config"] = seen.json()["applications"][0]
            return Reply(200, None)
        return Reply(200, details_with(serve_app(state["config"])))

    dashboard.routes[APPLICATIONS_PATH] = answer
    target = dash_target(dashboard)
    assert target.current_checkpoint() == URI
    assert target.health(URI).state == "healthy"
    target.apply(NEW, Lineage(NEW))
    expected = copy.deepcopy(GOOD_CONFIG["applications"][0])
    expected["deployments"][0]["user_config"]["checkpoint_uri"] = NEW
    assert state["config"] == expected
    put = next(s for s in dashboard.requests() if s.method == "PUT")
    assert put.json()["http_options"] == {"host": "0.0.0.0", "port": 8000}
