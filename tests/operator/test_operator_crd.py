"""The PolicyRollout CRD (the chart's single source) validates good specs and rejects bad ones."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml
from rlops_operator.spec import RolloutSpec

from tests.conftest import REPO_ROOT

CRD = REPO_ROOT / "charts/rlops/crds/policyrollouts.rlops.io.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD.read_text())


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


GOOD = {
    "pointer": "s3://rlops/checkpoints/corridor/best_checkpoint.txt",
    "allowedPrefixes": ["s3://rlops/checkpoints"],
    "target": {"rayService": "corridor-serve", "application": "corridor", "deployment": "PolicyServer"},
    "pollIntervalSeconds": 10,
    "minMetric": 5.0,
    "requireImprovement": True,
    "rolloutTimeoutSeconds": 300,
}


def test_crd_shape(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "policyrollouts.rlops.io"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Live"] == ".status.live.checkpointUri"
    phases = _schema(crd)["properties"]["status"]["properties"]["phase"]["enum"]
    assert set(phases) == {"Idle", "Promoting", "Verifying", "Live", "RolledBack", "Failed", "Paused"}


def test_good_spec_validates_and_parses(crd: dict[str, Any]) -> None:
    body = {"apiVersion": "rlops.io/v1alpha1", "kind": "PolicyRollout", "spec": GOOD}
    jsonschema.validate(body, _schema(crd), cls=jsonschema.Draft4Validator)
    spec = RolloutSpec.from_resource(GOOD, name="x", namespace="ns")
    assert spec.target.ray_service == "corridor-serve" and spec.min_metric == 5.0
    dashboard = {
        "pointer": "/data/corridor/best_checkpoint.txt",
        "target": {"dashboardUrl": "http://head:8265"},
    }
    jsonschema.validate({"spec": dashboard}, _schema(crd), cls=jsonschema.Draft4Validator)


@pytest.mark.parametrize(
    "change",
    [
        {"pointer": ""},
        {"pointer": "ftp://x/y"},
        {"target": {}},
        {"target": {"rayService": "a", "dashboardUrl": "http://b"}},
        {"pollIntervalSeconds": 0},
        {"rolloutTimeoutSeconds": 1},
        {"requireImprovement": "yes"},
    ],
)
def test_bad_spec_is_rejected(crd: dict[str, Any], change: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"spec": {**GOOD, **change}}, _schema(crd), cls=jsonschema.Draft4Validator)


# ------------------------------------------------------------------ typed status vs the CRD
def test_crd_status_schema_is_generated_from_the_models(crd: dict[str, Any]) -> None:
    """Fails when the models and the CRD drift apart (fix: python -m rlops_operator.crdschema --write)."""
    from rlops_operator.crdschema import status_schema

    assert _schema(crd)["properties"]["status"] == status_schema()


def test_every_status_field_is_documented(crd: dict[str, Any]) -> None:
    def walk(node: dict[str, Any], path: str) -> list[str]:
        missing = [] if node.get("description") else [path]
        for name, sub in (node.get("properties") or {}).items():
            missing += walk(sub, f"{path}.{name}")
        if "items" in node:
            missing += walk(node["items"], f"{path}[]")
        return missing

    assert walk(_schema(crd)["properties"]["status"], "status") == []


def test_status_enums_match_the_code(crd: dict[str, Any]) -> None:
    from rlops_operator.status import Phase

    phases = _schema(crd)["properties"]["status"]["properties"]["phase"]["enum"]
    assert phases == [str(p) for p in Phase]


def test_engine_statuses_validate_against_the_crd(crd: dict[str, Any], ckpt_root: str) -> None:
    """Statuses the engine writes through a promotion and a rollback are accepted by the CRD schema."""
    from rlops_operator.engine import Engine
    from rlops_operator.spec import TargetSpec
    from rlops_operator.targets import Metadata

    from rlops_core import checkpoints
    from tests.operator.conftest import make_checkpoint
    from tests.operator.doubles import Clock, ConfigTarget

    schema = _schema(crd)["properties"]["status"]
    live = make_checkpoint(ckpt_root, "exp", "a", 5.0)
    new = make_checkpoint(ckpt_root, "exp", "b", 6.0)
    spec = RolloutSpec(
        pointer=checkpoints.pointer_uri(ckpt_root, "corridor"),
        target=TargetSpec(dashboard_url="http://127.0.0.1:1", endpoint_url="http://serve"),
        rollout_timeout_s=5,
    )
    target, clock = ConfigTarget(live), Clock()
    engine = Engine(spec, target, clock=clock, metadata_probe=lambda url: Metadata(live, None, None))
    st: dict[str, Any] = {}
    seen: list[dict[str, Any]] = []
    checkpoints.write_pointer(spec.pointer, new)
    for _ in range(5):
        clock.t += 3
        st = engine.step(st).status
        seen.append(st)
    assert any("rollout" in s for s in seen) and seen[-1]["phase"] == "RolledBack"
    for status in seen:
        jsonschema.validate(status, schema, cls=jsonschema.Draft4Validator)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 1e301])
def test_non_finite_min_metric_is_rejected_by_the_crd(crd: dict[str, Any], value: float) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"spec": {**GOOD, "minMetric": value}}, _schema(crd), cls=jsonschema.Draft4Validator
        )
