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
    jsonschema.validate(body, _schema(crd))
    spec = RolloutSpec.from_resource(GOOD, name="x", namespace="ns")
    assert spec.target.ray_service == "corridor-serve" and spec.min_metric == 5.0
    dashboard = {
        "pointer": "/data/corridor/best_checkpoint.txt",
        "target": {"dashboardUrl": "http://head:8265"},
    }
    jsonschema.validate({"spec": dashboard}, _schema(crd))


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
        jsonschema.validate({"spec": {**GOOD, **change}}, _schema(crd))
