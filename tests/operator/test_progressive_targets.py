"""Both targets hold a challenger slot: one update sets champion, challenger and decision-log root; reading
back gives the same; nothing else in the config changes. The dashboard is a real HTTP server answering in
Serve's shape (tests/helpers/http_server.py); the RayService lives in kmock's Kubernetes emulator.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from rlops_operator import serveconfig
from rlops_operator.serveconfig import Serving
from rlops_operator.targets import Lineage, TargetError

from rlops_core.serve_client import APPLICATIONS_PATH
from tests.helpers.http_server import RecordingServer, Reply
from tests.operator.kube import EmulatedCluster, rayservice_path
from tests.operator.test_targets_shapes import (  # noqa: F401
    GOOD_CONFIG,
    NEW,
    NS,
    URI,
    create_rayservice,
    dash_target,
    dashboard,
    details_with,
    k8s_api,
    rs_target,
    serve_app,
)

SHADOW = {"checkpoint_uri": NEW, "mode": "shadow", "weight": 0.0}
CANARY = {"checkpoint_uri": NEW, "mode": "canary", "weight": 0.5}

TEXT = """\
# user's comment survives
applications:
- name: corridor   # the app
  import_path: workloads.serve_app:app
  deployments:
  - name: PolicyServer
    user_config:
      checkpoint_uri: s3://bucket/ck/a
      decision_log: {root: s3://old/root, flush_seconds: 1.0}
- name: other
  deployments:
  - name: PolicyServer
    user_config: {checkpoint_uri: s3://bucket/ck/other}
"""


def test_serving_edit_changes_only_the_slot_and_the_root() -> None:
    out = serveconfig.with_checkpoint(
        TEXT, "corridor", "PolicyServer", URI, Serving(URI, CANARY, "s3://logs/x")
    )
    assert "# user's comment survives" in out and "# the app" in out
    before, after = yaml.safe_load(TEXT), yaml.safe_load(out)
    uc = after["applications"][0]["deployments"][0]["user_config"]
    assert uc["challenger"] == CANARY
    assert uc["decision_log"] == {"root": "s3://logs/x", "flush_seconds": 1.0}  # other settings kept
    assert after["applications"][1] == before["applications"][1]
    read = serveconfig.serving_of(out, "corridor", "PolicyServer")
    assert read == Serving(URI, CANARY) and read.decision_log_root == "s3://logs/x"
    done = serveconfig.with_checkpoint(
        out, "corridor", "PolicyServer", NEW, Serving(NEW, None, "s3://logs/x")
    )
    uc = yaml.safe_load(done)["applications"][0]["deployments"][0]["user_config"]
    assert uc["checkpoint_uri"] == NEW and uc["challenger"] is None


@pytest.mark.parametrize(
    "user_config, match",
    [
        (
            {"checkpoint_uri": URI, "decision_log": "s3://x"},
            "decision_log of 'PolicyServer' must be a mapping",
        ),
        ({"checkpoint_uri": URI, "challenger": "s3://x"}, "challenger of 'PolicyServer' must be a mapping"),
    ],
)
def test_bad_slot_shapes_are_clear_errors(user_config: dict[str, Any], match: str) -> None:
    config = copy.deepcopy(GOOD_CONFIG)
    config["applications"][0]["deployments"][0]["user_config"] = user_config
    with pytest.raises(serveconfig.ServeConfigError, match=match):
        serveconfig.serving_of(config, "corridor", "PolicyServer")
        serveconfig.with_checkpoint_dict(
            config, "corridor", "PolicyServer", URI, Serving(URI, None, "s3://r")
        )


def test_dashboard_applies_and_reads_the_slot(dashboard: RecordingServer) -> None:  # noqa: F811
    state = {"config": copy.deepcopy(GOOD_CONFIG["applications"][0])}

    def answer(seen: Any) -> Reply:
        if seen.method == "PUT":
            state["config"] = seen.json()["applications"][0]
            return Reply(200, None)
        return Reply(200, details_with(serve_app(state["config"])))

    dashboard.routes[APPLICATIONS_PATH] = answer
    target = dash_target(dashboard)
    assert target.current_serving() == Serving(URI, None)
    target.apply_serving(Serving(URI, SHADOW, "s3://logs"), Lineage(URI))
    uc = state["config"]["deployments"][0]["user_config"]
    assert uc == {"checkpoint_uri": URI, "challenger": SHADOW, "decision_log": {"root": "s3://logs"}}
    assert target.current_serving() == Serving(URI, SHADOW)
    target.apply_serving(Serving(NEW, None, "s3://logs"), Lineage(NEW))  # promotion: one PUT
    assert target.current_serving() == Serving(NEW, None)
    assert [s.method for s in dashboard.requests()].count("PUT") == 2


def test_dashboard_refusal_is_a_target_error(dashboard: RecordingServer) -> None:  # noqa: F811
    def answer(seen: Any) -> Reply:
        if seen.method == "PUT":
            return Reply(500, {"error": "boom"})
        return Reply(200, details_with(serve_app(copy.deepcopy(GOOD_CONFIG["applications"][0]))))

    dashboard.routes[APPLICATIONS_PATH] = answer
    with pytest.raises(TargetError):
        dash_target(dashboard).apply_serving(Serving(URI, SHADOW, "s3://logs"), Lineage(URI))


def test_rayservice_applies_and_reads_the_slot(kube: EmulatedCluster, k8s_api: Any) -> None:  # noqa: F811
    name, _ = create_rayservice(kube, TEXT)
    target = rs_target(k8s_api, name)
    assert target.current_serving() == Serving(URI, None)
    target.apply_serving(Serving(URI, CANARY, "s3://logs"), Lineage(URI, rollout="ns/r"))
    obj = kube.get(rayservice_path(NS, name))
    assert "# user's comment survives" in obj["spec"]["serveConfigV2"]
    assert obj["metadata"]["annotations"]["rlops.io/checkpoint-uri"] == URI
    assert target.current_serving() == Serving(URI, CANARY)
    assert target.current_serving().decision_log_root == "s3://logs"
    target.apply_serving(Serving(URI, None, "s3://logs"), Lineage(URI))  # abort: one patch
    assert target.current_serving() == Serving(URI, None)
    assert len([p for _, n, p in kube.emulator.spec_patches if n == name]) == 2
