"""The Kubernetes path end to end, without a Kubernetes cluster: pointer → operator → RayService patch →
KubeRay → Ray Serve reconfigure → a different policy answers requests.

Real: the training job (two short PPO runs, checkpoints with manifests and pointers on local storage),
the kopf operator as its own process (``python -m rlops_operator``, cluster-wide), a real Ray cluster
with token auth, Ray Serve and its dashboard REST API, the policy server, and the HTTP requests.

Emulated: the Kubernetes API server is kmock's KubernetesEmulator (in-memory objects, list/watch/
patch, plus the resourceVersion and generation bookkeeping of tests/operator/kube.py); KubeRay is the
test's stand-in (tests/e2e/kuberay.py) that forwards ``serveConfigV2`` to the dashboard with
``PUT /api/serve/applications/`` and writes the application statuses back into the RayService status,
as KubeRay 1.7 does for an in-place Serve update. No pods, no images, no KubeRay cluster management.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from rlops_core import checkpoints
from rlops_demo.load import LoadGenerator
from tests.e2e.served import TrainedCheckpoints, configured_checkpoint, metadata
from tests.k8s.charts import kuberay_crd_path
from tests.k8s.schemas import crd_errors
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def test_pointer_change_patches_rayservice_and_changes_the_served_policy(
    served_factory: Any, trained: TrainedCheckpoints
) -> None:
    served = served_factory(trained.a)
    before = metadata(served.endpoint)
    assert before is not None and before["checkpoint_uri"] == trained.a
    assert served.spec_patches() == []

    load = LoadGenerator(served.endpoint, workers=2, max_seconds=300).start()
    try:
        checkpoints.write_pointer(served.pointer, trained.b)

        # 1. the pointer change leads to a patch of serveConfigV2 that changes only the checkpoint
        wait_for(lambda: served.configured() == trained.b, 60, what="serveConfigV2 to name B")
        rs = served.rayservice()
        expected = yaml.safe_load(served.initial_text)
        expected["applications"][0]["deployments"][0]["user_config"]["checkpoint_uri"] = trained.b
        assert yaml.safe_load(rs["spec"]["serveConfigV2"]) == expected
        notes = rs["metadata"]["annotations"]
        manifest_b = checkpoints.read_manifest(trained.b)
        assert notes["rlops.io/checkpoint-uri"] == trained.b
        assert notes["rlops.io/trial"] == manifest_b.trial_id
        assert notes["rlops.io/experiment"] == manifest_b.experiment == "e2e-b"
        assert notes["rlops.io/metric"].startswith(manifest_b.metric_name + "=")
        assert notes["rlops.io/policyrollout"] == f"default/{served.name}" and notes["rlops.io/promoted-at"]

        # 2. the patch leads to a real change of the served policy, and the rollout goes Live
        st = served.wait(
            lambda st: st.get("phase") == "Live" and st["live"]["checkpointUri"] == trained.b,
            "the PolicyRollout to go Live with B",
        )
        after = metadata(served.endpoint)
        assert after is not None and after["checkpoint_uri"] == trained.b
        assert after["experiment"] == "e2e-b" and after["last_error"] is None
        assert after["replica"] == before["replica"] and after["swap_count"] == before["swap_count"] + 1, (
            "a serveConfigV2 change of user_config alone must reconfigure the live replica in place"
        )
        wait_for(lambda: any(uri == trained.b for _, uri in load.stats.live_checkpoints), 10, what="B seen")
    finally:
        stats = load.stop()

    assert st["previous"]["checkpointUri"] == trained.a
    assert st["live"]["metric"]["value"] == pytest.approx(manifest_b.metric_value)
    assert [h["decision"] for h in st["history"]].count("Applied") == 1
    # KubeRay saw exactly two configs: the initial one and the operator's single patch
    sent = [configured_checkpoint(f.config, served.app) for f in served.kuberay.forwarded_for(served.rs)]
    assert sent == [trained.a, trained.b]
    assert len(served.spec_patches()) == 1
    app_status = served.rayservice()["status"]["activeServiceStatus"]["applicationStatuses"][served.app]
    assert app_status["status"] == "RUNNING"
    assert app_status["serveDeploymentStatuses"]["PolicyServer"]["status"] == "HEALTHY"
    reasons = [e["reason"] for e in served.events()]
    assert "Applied" in reasons and "Promoted" in reasons
    # nothing lost on the way: every request of the load answered, from A before and from B after
    assert stats.failed == 0, [r for r in stats.requests if not r.ok][:5]
    assert len(stats.requests) > 20
    assert [uri for _, uri in stats.live_checkpoints] == [trained.a, trained.b]


def test_standin_writes_statuses_kuberay_would(
    served_factory: Any, kuberay: Any, trained: TrainedCheckpoints
) -> None:
    """Every RayService status the stand-in writes fits KubeRay 1.7.0's CRD schema.

    The test serves its own RayService (independent of the other tests here) and waits until the
    stand-in has written a RUNNING status for it.
    """
    crd = kuberay_crd_path("RayService")  # skips locally, fails under CI=true, when the CRDs are missing
    served = served_factory(trained.a)

    def running_status_written() -> bool:
        return any(
            (app := s["activeServiceStatus"]["applicationStatuses"].get(served.app))
            and app["status"] == "RUNNING"
            for s in kuberay.statuses
        )

    wait_for(running_status_written, 60, what=f"a RUNNING status of {served.app} written by the stand-in")
    phases = set()
    for status in kuberay.statuses:
        doc = {"apiVersion": "ray.io/v1", "kind": "RayService", "status": status}
        assert crd_errors(crd, doc) == [], status
        for app in status["activeServiceStatus"]["applicationStatuses"].values():
            phases.add(app["status"])
    assert "RUNNING" in phases
    assert kuberay.errors == [], kuberay.errors[:5]
