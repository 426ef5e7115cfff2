"""Credentials go only where they belong (issue 10, class 3).

The dashboard token is sent only to hosts in the operator's allow-list (``RLOPS_DASHBOARD_ALLOWED_HOSTS``),
never across a redirect, and never written into a log line, an Event, an error or the status.
Real parts: real HTTP servers on loopback that record every header they receive
(tests/helpers/http_server.py), the real target factory, and for the wiring the operator as its own
process against kmock's KubernetesEmulator.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rlops_operator.settings import OperatorSettings
from rlops_operator.spec import RolloutSpec
from rlops_operator.target_factory import build_target
from rlops_operator.targets import Lineage, TargetError

from rlops_core import checkpoints
from rlops_core.serve_client import APPLICATIONS_PATH
from tests.helpers.http_server import RecordingServer, Reply
from tests.helpers.operator_process import OperatorProcess
from tests.helpers.rollout_data import make_checkpoint
from tests.operator.kube import EmulatedCluster, rollout_path
from tests.waiting import wait_for

TOKEN = "rlops-test-token-0123456789abcdef"
NS = "default"


def details(uri: str) -> dict[str, Any]:
    config = {
        "name": "corridor",
        "import_path": "workloads.serve_app:app",
        "deployments": [{"name": "PolicyServer", "user_config": {"checkpoint_uri": uri}}],
    }
    app = {
        "name": "corridor",
        "status": "RUNNING",
        "source": "declarative",
        "deployed_app_config": config,
        "deployments": {"PolicyServer": {"name": "PolicyServer", "status": "HEALTHY"}},
    }
    return {"applications": {"corridor": app}}


def spec_for(url: str) -> RolloutSpec:
    return RolloutSpec.from_resource(
        {"pointer": "/tmp/unused/best_checkpoint.txt", "target": {"dashboardUrl": url}}, name="r"
    )


def settings(**env: str) -> OperatorSettings:
    return OperatorSettings.from_env({"RAY_AUTH_TOKEN": TOKEN, **env})


@pytest.fixture
def dashboard() -> Iterator[RecordingServer]:
    with RecordingServer() as srv:
        srv.routes[APPLICATIONS_PATH] = Reply(200, details("s3://b/a"))
        yield srv


def auth_headers(server: RecordingServer) -> list[str | None]:
    return [seen.headers.get("authorization") for seen in server.requests()]


def test_operator_default_sends_the_token_nowhere(dashboard: RecordingServer) -> None:
    target = build_target(spec_for(dashboard.url), settings())
    assert target.current_checkpoint() == "s3://b/a"
    assert auth_headers(dashboard) == [None]


def test_a_dashboard_asking_for_the_token_gets_a_clear_refusal(dashboard: RecordingServer) -> None:
    dashboard.routes[APPLICATIONS_PATH] = Reply(401, {"error": "Unauthorized: token required"})
    with pytest.raises(TargetError) as info:
        build_target(spec_for(dashboard.url), settings()).current_checkpoint()
    assert info.value.reason == "Unauthorized"
    assert "allowed dashboard hosts" in info.value.message and TOKEN not in info.value.message


@pytest.mark.parametrize("entry", ["127.0.0.1", "127.0.0.1:{port}", "other-head,127.0.0.1:{port}"])
def test_allowed_hosts_get_the_token(dashboard: RecordingServer, entry: str) -> None:
    allowed = entry.format(port=dashboard.port)
    target = build_target(spec_for(dashboard.url), settings(RLOPS_DASHBOARD_ALLOWED_HOSTS=allowed))
    target.current_checkpoint()
    assert auth_headers(dashboard) == [f"Bearer {TOKEN}"]


def test_another_port_on_an_allowed_host_gets_nothing(dashboard: RecordingServer) -> None:
    allowed = "127.0.0.1:1"  # the same host, another port
    build_target(
        spec_for(dashboard.url), settings(RLOPS_DASHBOARD_ALLOWED_HOSTS=allowed)
    ).current_checkpoint()
    assert auth_headers(dashboard) == [None]


def test_the_cli_allows_the_url_its_user_typed(dashboard: RecordingServer) -> None:
    build_target(spec_for(dashboard.url), settings().allowing(dashboard.url)).current_checkpoint()
    assert auth_headers(dashboard) == [f"Bearer {TOKEN}"]


def test_a_cross_host_redirect_is_not_followed(dashboard: RecordingServer) -> None:
    """The allowed dashboard answers 302 to another server: nothing at all reaches the other one."""
    with RecordingServer() as elsewhere:
        elsewhere.routes[APPLICATIONS_PATH] = Reply(200, details("s3://b/a"))
        dashboard.routes[APPLICATIONS_PATH] = Reply(
            302, headers={"Location": f"http://localhost:{elsewhere.port}{APPLICATIONS_PATH}"}
        )
        allowed = f"127.0.0.1:{dashboard.port},localhost:{elsewhere.port}"
        target = build_target(spec_for(dashboard.url), settings(RLOPS_DASHBOARD_ALLOWED_HOSTS=allowed))
        for call in (target.current_checkpoint, lambda: target.apply("s3://b/new", Lineage("s3://b/new"))):
            with pytest.raises(TargetError) as info:
                call()
            assert info.value.reason == "Redirect" and TOKEN not in info.value.message
        assert elsewhere.requests() == []
    assert {s.method for s in dashboard.requests()} == {"GET"}  # never a PUT after the refusal


def test_the_token_is_never_logged(dashboard: RecordingServer, caplog: pytest.LogCaptureFixture) -> None:
    def echo(seen: Any) -> Reply:  # a server that echoes the credentials back in its error
        return Reply(500, raw=f"internal error for {seen.headers.get('authorization')}".encode())

    dashboard.routes[APPLICATIONS_PATH] = echo
    allowed = f"127.0.0.1:{dashboard.port}"
    caplog.set_level(logging.DEBUG)
    target = build_target(spec_for(dashboard.url), settings(RLOPS_DASHBOARD_ALLOWED_HOSTS=allowed))
    with pytest.raises(TargetError) as info:
        target.current_checkpoint()
    logging.getLogger("test").error("target failed: %s", info.value)
    assert auth_headers(dashboard) == [f"Bearer {TOKEN}"]  # it did go to the allowed host
    assert TOKEN not in info.value.message and TOKEN not in str(info.value.args)
    assert TOKEN not in caplog.text and "***" in caplog.text
    assert TOKEN not in repr(settings()) and TOKEN not in str(settings().model_dump())


def test_bad_allow_list_entries_are_refused() -> None:
    for bad in ("http://head:8265", "user@head", "head/api"):
        with pytest.raises(ValueError, match="RLOPS_DASHBOARD_ALLOWED_HOSTS"):
            settings(RLOPS_DASHBOARD_ALLOWED_HOSTS=bad)


# ---------------------------------------------------------------- the operator process (wiring)
def run_operator_against(
    kube: EmulatedCluster, dashboard: RecordingServer, work: Path, extra_env: dict[str, str]
) -> tuple[dict[str, Any], str]:
    """Start the operator with ``extra_env``, let one PolicyRollout poll the dashboard, stop it."""
    root = work / "store"
    root.mkdir(parents=True)
    live = make_checkpoint(str(root), "exp", "trial_a", 5.0)
    dashboard.routes[APPLICATIONS_PATH] = Reply(200, details(live))
    pointer = checkpoints.pointer_uri(str(root), "channel")
    checkpoints.write_pointer(pointer, live)
    name = f"creds-{work.name}"
    env = {"RAY_AUTH_TOKEN": TOKEN, **extra_env}
    proc = OperatorProcess(kube.write_kubeconfig(work / "kubeconfig"), work, extra_env=env)
    proc.start()
    try:
        body = {
            "apiVersion": "rlops.io/v1alpha1",
            "kind": "PolicyRollout",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "pointer": pointer,
                "target": {"dashboardUrl": dashboard.url, "application": "corridor"},
                "pollIntervalSeconds": 1,
            },
        }
        kube.request("POST", rollout_path(NS), body)
        wait_for(lambda: len(dashboard.requests()) >= 2, 60, what="the operator to poll the dashboard")
        status = (kube.get(rollout_path(NS, name)) or {}).get("status") or {}
        kube.request("DELETE", rollout_path(NS, name))
    finally:
        proc.stop()
    return status, proc.log_path.read_text(errors="replace")


@pytest.mark.parametrize("allowed", [False, True], ids=["not-allowed", "allowed"])
def test_operator_process_scopes_the_token(
    kube: EmulatedCluster, dashboard: RecordingServer, tmp_path: Path, allowed: bool
) -> None:
    extra = {"RLOPS_DASHBOARD_ALLOWED_HOSTS": f"127.0.0.1:{dashboard.port}"} if allowed else {}
    status, log = run_operator_against(kube, dashboard, tmp_path / ("in" if allowed else "out"), extra)
    headers = set(auth_headers(dashboard))
    assert headers == ({f"Bearer {TOKEN}"} if allowed else {None})
    assert TOKEN not in log and TOKEN not in str(status)
