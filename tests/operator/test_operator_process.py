"""The kopf operator as a real process (``python -m rlops_operator``, cluster-wide) against kmock's
KubernetesEmulator, through the fault list. The test plays KubeRay: it writes the RayService status.

Every fault must leave the live checkpoint in place, and the PolicyRollout's status and an Event
must say why.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlops_core import checkpoints, storage
from tests.operator.conftest import SERVE_CONFIG, OperatorProcess, make_checkpoint, wait_for
from tests.operator.kube import EmulatedCluster, rayservice_path, rollout_path

pytestmark = pytest.mark.timeout(300)
NS = "default"
_names = itertools.count(1)


class Scenario:
    """One RayService serving checkpoint A and one PolicyRollout watching a pointer."""

    def __init__(
        self, kube: EmulatedCluster, root: str, *, create_rayservice: bool = True, **spec: Any
    ) -> None:
        n = next(_names)
        self.kube, self.root = kube, root
        self.name, self.rs = f"rollout-{n}", f"policy-{n}"
        self.pointer = checkpoints.pointer_uri(root, f"channel{n}")
        self.a = make_checkpoint(root, f"exp{n}", "trial_a", 5.0)
        self.b = make_checkpoint(root, f"exp{n}", "trial_b", 6.0)
        checkpoints.write_pointer(self.pointer, self.a)
        if create_rayservice:
            self.create_rayservice()
        body = {
            "apiVersion": "rlops.io/v1alpha1",
            "kind": "PolicyRollout",
            "metadata": {"name": self.name, "namespace": NS},
            "spec": {
                "pointer": self.pointer,
                "target": {"rayService": self.rs, "application": "corridor", "deployment": "PolicyServer"},
                "pollIntervalSeconds": 1,
                "rolloutTimeoutSeconds": 60,
                **spec,
            },
        }
        kube.request("POST", rollout_path(NS), body)

    def create_rayservice(self) -> None:
        body = {
            "apiVersion": "ray.io/v1",
            "kind": "RayService",
            "metadata": {"name": self.rs, "namespace": NS},
            "spec": {"serveConfigV2": SERVE_CONFIG.format(uri=self.a)},
        }
        self.kube.request("POST", rayservice_path(NS), body)
        self.kuberay(healthy=True)

    def rayservice(self) -> dict[str, Any]:
        return self.kube.get(rayservice_path(NS, self.rs)) or {}

    def served(self) -> str | None:
        config = yaml.safe_load(self.rayservice()["spec"]["serveConfigV2"])
        return config["applications"][0]["deployments"][0]["user_config"]["checkpoint_uri"]

    def kuberay(self, healthy: bool = True, app_status: str | None = None) -> None:
        """Write what KubeRay would: observedGeneration and the Serve application's status."""
        gen = self.rayservice()["metadata"]["generation"]
        app = app_status or ("RUNNING" if healthy else "DEPLOYING")
        dep = "HEALTHY" if healthy else "UNHEALTHY"
        status = {
            "observedGeneration": gen,
            "activeServiceStatus": {
                "applicationStatuses": {
                    "corridor": {"status": app, "serveDeploymentStatuses": {"PolicyServer": {"status": dep}}}
                }
            },
        }
        self.kube.request("PATCH", rayservice_path(NS, self.rs) + "/status", {"status": status})

    def status(self) -> dict[str, Any]:
        return (self.kube.get(rollout_path(NS, self.name)) or {}).get("status") or {}

    def events(self) -> list[dict[str, Any]]:
        items = (self.kube.get(f"/api/v1/namespaces/{NS}/events") or {}).get("items", [])
        return [e for e in items if e.get("involvedObject", {}).get("name") == self.name]

    def event_reasons(self) -> list[str]:
        return [e["reason"] for e in self.events()]

    def spec_patches(self) -> list[dict[str, Any]]:
        assert self.kube.emulator is not None
        return [p for ns, name, p in self.kube.emulator.spec_patches if name == self.rs]

    def wait(self, check: Callable[[dict[str, Any]], Any], what: str, timeout: float = 30) -> dict[str, Any]:
        return wait_for(lambda: (lambda st: st if check(st) else None)(self.status()), timeout, what=what)

    def delete(self) -> None:
        if self.kube.get(rollout_path(NS, self.name)) is not None:
            self.kube.request("DELETE", rollout_path(NS, self.name))


@pytest.fixture
def scenario(kube: EmulatedCluster, operator_process: OperatorProcess, ckpt_root: str) -> Any:
    made: list[Scenario] = []

    def make(**kw: Any) -> Scenario:
        made.append(Scenario(kube, ckpt_root, **kw))
        return made[-1]

    yield make
    for sc in made:
        sc.delete()


def test_promotion_end_to_end(scenario: Any, operator_process: OperatorProcess) -> None:
    sc = scenario()
    sc.wait(lambda st: st.get("phase") == "Live", "the initial checkpoint to be recognised as live")
    checkpoints.write_pointer(sc.pointer, sc.b)
    wait_for(lambda: sc.served() == sc.b, 20, what="serveConfigV2 to name B")
    assert sc.status()["phase"] == "Verifying"
    # only the checkpoint changed in the user's serve config
    before = yaml.safe_load(SERVE_CONFIG.format(uri=sc.b))
    assert yaml.safe_load(sc.rayservice()["spec"]["serveConfigV2"]) == before
    sc.kuberay(healthy=True)
    st = sc.wait(lambda st: st.get("phase") == "Live" and st["live"]["checkpointUri"] == sc.b, "B live")
    assert st["previous"]["checkpointUri"] == sc.a and st["live"]["metric"]["value"] == 6.0
    notes = sc.rayservice()["metadata"]["annotations"]
    assert notes["rlops.io/checkpoint-uri"] == sc.b and notes["rlops.io/trial"] == "trial_b"
    assert notes["rlops.io/policyrollout"] == f"{NS}/{sc.name}" and notes["rlops.io/promoted-at"]
    assert notes["rlops.io/metric"] == "env_runners/episode_return_mean=6"
    wait_for(lambda: {"Applied", "Promoted"} <= set(sc.event_reasons()), 10, what="Events")
    assert sc.event_reasons().count("Applied") == 1 and sc.event_reasons().count("Promoted") == 1
    assert not [e for e in sc.events() if "Timer" in e.get("message", "")]  # no Event per tick
    assert len(sc.spec_patches()) == 1
    assert 'rlops_promotions_total{rollout="default/' in operator_process.metrics()
    shown = subprocess.run(
        [str(Path(sys.executable).with_name("rlops-rollout")), "status", "-A"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(operator_process.kubeconfig)},
    )
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if sc.name in line)
    assert "Live" in row and sc.b in row and "=6" in row


def _missing(sc: Scenario) -> None:
    storage.parse_uri(sc.pointer).path.unlink()


def _empty(sc: Scenario) -> None:
    storage.write_bytes(sc.pointer, b"\n")


def _garbage(sc: Scenario) -> None:
    storage.write_bytes(sc.pointer, b"\x00\x01 not a uri\nsecond line\n")


def _no_checkpoint(sc: Scenario) -> None:
    checkpoints.write_pointer(sc.pointer, storage.join_uri(sc.root, "nothing", "here"))


def _incomplete(sc: Scenario) -> None:
    storage.parse_uri(storage.join_uri(sc.b, "env_runner/connector.pkl")).path.unlink()
    checkpoints.write_pointer(sc.pointer, sc.b)


def _hash_mismatch(sc: Scenario) -> None:
    storage.write_bytes(storage.join_uri(sc.b, "env_runner/connector.pkl"), b"connector STATE")
    checkpoints.write_pointer(sc.pointer, sc.b)


def _outside(sc: Scenario) -> None:
    other = make_checkpoint(sc.root + "-elsewhere", "exp", "t", 9.0)
    checkpoints.write_pointer(sc.pointer, other)


def _below_gate(sc: Scenario) -> None:
    checkpoints.write_pointer(sc.pointer, make_checkpoint(sc.root, "low", "t", 1.0))


@pytest.mark.parametrize(
    "fault, reason",
    [
        (_missing, "PointerMissing"),
        (_empty, "PointerInvalid"),
        (_garbage, "PointerInvalid"),
        (_no_checkpoint, "CheckpointInvalid"),
        (_incomplete, "CheckpointInvalid"),
        (_hash_mismatch, "CheckpointInvalid"),
        (_outside, "OutsideAllowedPrefixes"),
        (_below_gate, "BelowMinMetric"),
    ],
    ids=[
        "pointer-missing",
        "pointer-empty",
        "pointer-garbage",
        "missing-checkpoint",
        "incomplete",
        "hash-mismatch",
        "outside-prefixes",
        "below-min-metric",
    ],
)
def test_bad_pointer_or_checkpoint_is_refused(
    scenario: Any, fault: Callable[[Scenario], None], reason: str
) -> None:
    sc = scenario(minMetric=3.0)
    sc.wait(lambda st: st.get("phase") == "Live", "the initial checkpoint to be live")
    fault(sc)
    st = sc.wait(
        lambda st: any(c["type"] == "Refused" and c["status"] == "True" for c in st.get("conditions", [])),
        f"a {reason} refusal",
    )
    refused = next(c for c in st["conditions"] if c["type"] == "Refused")
    assert refused["reason"] == reason, st["message"]
    assert st["phase"] == "Live" and st["live"]["checkpointUri"] == sc.a
    wait_for(lambda: reason in sc.event_reasons(), 10, what=f"a {reason} Event")
    assert sc.served() == sc.a and sc.spec_patches() == []


def test_storage_unreachable(scenario: Any, s3_server: Any, s3_bucket: str) -> None:
    sc = scenario()
    a = make_checkpoint(s3_bucket, "exp", "a", 5.0)
    b = make_checkpoint(s3_bucket, "exp", "b", 6.0)
    pointer = checkpoints.pointer_uri(s3_bucket, "corridor")
    checkpoints.write_pointer(pointer, a)
    sc.kube.request(
        "PATCH", rayservice_path(NS, sc.rs), {"spec": {"serveConfigV2": SERVE_CONFIG.format(uri=a)}}
    )
    sc.kuberay(healthy=True)
    sc.kube.request(
        "PATCH", rollout_path(NS, sc.name), {"spec": {"pointer": pointer, "allowedPrefixes": [s3_bucket]}}
    )
    sc.wait(lambda st: (st.get("live") or {}).get("checkpointUri") == a, "the S3 checkpoint to be live")
    s3_server.stop()
    try:
        st = sc.wait(
            lambda st: (st.get("lastError") or {}).get("reason") == "StorageUnreachable", "an outage"
        )
        assert "cannot read pointer" in st["message"]
        wait_for(lambda: "StorageUnreachable" in sc.event_reasons(), 10, what="an outage Event")
        # class 6: several failed polls later, still one Event and no Recovered/error pair per poll
        sc.wait(lambda st: (st.get("lastError") or {}).get("count", 0) >= 3, "three failed polls", 60)
        assert sc.event_reasons().count("StorageUnreachable") == 1
        assert "Recovered" not in sc.event_reasons()
    finally:
        s3_server.start()
    checkpoints.write_pointer(pointer, b)
    wait_for(lambda: sc.served() == b, 30, what="B applied after storage came back")
    sc.kuberay(healthy=True)
    st = sc.wait(lambda st: st.get("phase") == "Live" and st["live"]["checkpointUri"] == b, "B live")
    assert "lastError" not in st


def test_rayservice_missing_then_created(scenario: Any) -> None:
    sc = scenario(create_rayservice=False)
    checkpoints.write_pointer(sc.pointer, sc.b)
    st = sc.wait(
        lambda st: (st.get("lastError") or {}).get("reason") == "RayServiceMissing", "RayServiceMissing"
    )
    assert sc.rs in st["message"] and "live" not in st
    wait_for(lambda: "RayServiceMissing" in sc.event_reasons(), 10, what="a RayServiceMissing Event")
    sc.create_rayservice()
    wait_for(lambda: sc.served() == sc.b, 30, what="B applied once the RayService exists")
    sc.kuberay(healthy=True)
    sc.wait(lambda st: st.get("phase") == "Live" and st["live"]["checkpointUri"] == sc.b, "B live")


def test_api_conflicts_and_5xx_are_retried(scenario: Any, kube: EmulatedCluster) -> None:
    sc = scenario()
    sc.wait(lambda st: st.get("phase") == "Live", "the initial checkpoint to be live")
    conflicts = kube.fail_next("PATCH", "rayservices", 409, 2)
    outages = kube.fail_next("GET", "rayservices", 503, 2)
    checkpoints.write_pointer(sc.pointer, sc.b)
    wait_for(lambda: sc.served() == sc.b, 30, what="B applied despite conflicts and 503s")
    assert conflicts.times == 0 and outages.times == 0
    sc.kuberay(healthy=True)
    sc.wait(lambda st: st.get("phase") == "Live" and st["live"]["checkpointUri"] == sc.b, "B live")
    assert len(sc.spec_patches()) == 1


def test_persistent_5xx_blocks_then_recovers(scenario: Any, kube: EmulatedCluster) -> None:
    sc = scenario()
    sc.wait(lambda st: st.get("phase") == "Live", "the initial checkpoint to be live")
    fault = kube.fail_next("PATCH", "rayservices", 500, 10_000)
    checkpoints.write_pointer(sc.pointer, sc.b)
    try:
        st = sc.wait(lambda st: (st.get("lastError") or {}).get("reason") == "HTTP500", "the 500s reported")
        # the candidate passed its checks and waits for the API (phase Promoting); A is still live
        assert st["phase"] == "Promoting" and st["live"]["checkpointUri"] == sc.a and sc.served() == sc.a
    finally:
        fault.times = 0
    wait_for(lambda: sc.served() == sc.b, 30, what="B applied once the API works")


@pytest.mark.parametrize("how", ["deploy-failed", "never-healthy"])
def test_unhealthy_application_rolls_back(scenario: Any, how: str) -> None:
    sc = scenario(rolloutTimeoutSeconds=5)
    sc.wait(lambda st: st.get("phase") == "Live", "the initial checkpoint to be live")
    checkpoints.write_pointer(sc.pointer, sc.b)
    wait_for(lambda: sc.served() == sc.b, 20, what="B applied")
    if how == "deploy-failed":
        sc.kuberay(healthy=False, app_status="DEPLOY_FAILED")
    else:
        sc.kuberay(healthy=False)
    st = sc.wait(lambda st: st.get("phase") == "RolledBack", "a rollback", timeout=30)
    assert sc.served() == sc.a and st["live"]["checkpointUri"] == sc.a
    expected = "ApplicationFailed" if how == "deploy-failed" else "Timeout"
    assert expected in st["message"] or expected in str(st["conditions"])
    wait_for(
        lambda: "RolledBack" in sc.event_reasons(),
        10,
        what="a rollback Event",
    )
    notes = sc.rayservice()["metadata"]["annotations"]
    assert notes["rlops.io/checkpoint-uri"] == sc.a and notes["rlops.io/rolled-back-from"] == sc.b
    assert len(sc.spec_patches()) == 2  # B, then back to A; never B again
    sc.kuberay(healthy=True)
    sc.wait(lambda st: st.get("phase") == "RolledBack", "to stay rolled back")


def test_restart_mid_rollout_resumes_and_never_patches_twice(
    scenario: Any, operator_process: OperatorProcess
) -> None:
    sc = scenario()
    sc.wait(lambda st: st.get("phase") == "Live", "the initial checkpoint to be live")
    checkpoints.write_pointer(sc.pointer, sc.b)
    sc.wait(lambda st: st.get("phase") == "Verifying", "the rollout to be in flight")
    operator_process.stop(signal.SIGKILL)
    sc.kuberay(healthy=True)  # KubeRay finishes while the operator is down
    operator_process.start()
    st = sc.wait(
        lambda st: st.get("phase") == "Live" and st["live"]["checkpointUri"] == sc.b, "B live after restart"
    )
    assert len(sc.spec_patches()) == 1
    assert [h["decision"] for h in st["history"]].count("Applied") == 1
    operator_process.stop()
    operator_process.start()  # a second restart with nothing in flight: no new patch, no new decision
    checkpoints.write_pointer(sc.pointer, sc.b)
    wait_for(
        lambda: sc.status().get("pointer", {}).get("readAt") != st["pointer"]["readAt"],
        20,
        what="the rewritten pointer to be read",
    )
    assert len(sc.spec_patches()) == 1 and sc.status()["phase"] == "Live"


def test_invalid_spec_is_reported(kube: EmulatedCluster, operator_process: OperatorProcess) -> None:
    body = {
        "apiVersion": "rlops.io/v1alpha1",
        "kind": "PolicyRollout",
        "metadata": {"name": "broken", "namespace": NS},
        "spec": {"pointer": "ftp://nowhere/p", "target": {"rayService": "x"}},
    }
    kube.request("POST", rollout_path(NS), body)
    try:
        st = wait_for(lambda: (kube.get(rollout_path(NS, "broken")) or {}).get("status", {}).get("phase"), 20)
        assert st == "Failed"
        assert "unsupported storage scheme" in kube.get(rollout_path(NS, "broken"))["status"]["message"]
    finally:
        kube.request("DELETE", rollout_path(NS, "broken"))


# ------------------------------------------------------------------ issue 10, wiring faults
def test_rejected_status_writes_do_not_stop_a_rollback(
    scenario: Any, kube: EmulatedCluster, operator_process: OperatorProcess
) -> None:
    """Class 1: the API refuses every status write (422); the rollout still rolls back, and says so."""
    sc = scenario(rolloutTimeoutSeconds=5)
    sc.wait(lambda st: st.get("phase") == "Live", "the initial checkpoint to be live")
    fault = kube.fail_next("PATCH", "policyrollouts", 422, 100_000)
    try:
        checkpoints.write_pointer(sc.pointer, sc.b)
        wait_for(lambda: sc.served() == sc.b, 30, what="B applied although status writes are refused")
        sc.kuberay(healthy=False, app_status="DEPLOY_FAILED")
        wait_for(lambda: sc.served() == sc.a, 30, what="A restored although no status could be written")
        wait_for(lambda: "StatusWriteFailed" in sc.event_reasons(), 10, what="a StatusWriteFailed Event")
        wait_for(lambda: "RolledBack" in sc.event_reasons(), 10, what="a RolledBack Event")
        assert sc.status()["phase"] == "Live"  # nothing could be stored meanwhile
        assert sc.event_reasons().count("StatusWriteFailed") == 1  # once per streak, not per attempt
        assert f'rlops_status_write_errors_total{{reason="HTTP422",rollout="{NS}/{sc.name}"}}' in (
            operator_process.metrics()
        ) or f'rlops_status_write_errors_total{{rollout="{NS}/{sc.name}",reason="HTTP422"}}' in (
            operator_process.metrics()
        )
    finally:
        fault.times = 0
    st = sc.wait(lambda st: st.get("phase") == "RolledBack", "the status stored once the API accepts it")
    assert st["live"]["checkpointUri"] == sc.a and "rollout" not in st
    assert len(sc.spec_patches()) == 2
    wait_for(lambda: "StatusWritten" in sc.event_reasons(), 10, what="a StatusWritten Event")


def test_one_owner_per_target(
    scenario: Any, kube: EmulatedCluster, ckpt_root: str, operator_process: OperatorProcess
) -> None:
    """Class 9: a second PolicyRollout on the same RayService/app/deployment is held until the first goes."""
    sc = scenario()
    sc.wait(lambda st: st.get("phase") == "Live", "the initial checkpoint to be live")
    rival = f"{sc.name}-rival"  # same creationTimestamp in the emulator: the name breaks the tie
    rival_pointer = checkpoints.pointer_uri(ckpt_root, f"{rival}-channel")
    c = make_checkpoint(ckpt_root, f"{rival}-exp", "trial_c", 7.0)
    checkpoints.write_pointer(rival_pointer, c)
    body = {
        "apiVersion": "rlops.io/v1alpha1",
        "kind": "PolicyRollout",
        "metadata": {"name": rival, "namespace": NS},
        "spec": {
            "pointer": rival_pointer,
            "allowedPrefixes": [ckpt_root],
            "target": {"rayService": sc.rs, "application": "corridor", "deployment": "PolicyServer"},
            "pollIntervalSeconds": 1,
        },
    }
    kube.request("POST", rollout_path(NS), body)
    try:

        def rival_status() -> dict[str, Any]:
            return (kube.get(rollout_path(NS, rival)) or {}).get("status") or {}

        st = wait_for(
            lambda: (lambda s: s if any(c["type"] == "Conflict" for c in s.get("conditions", [])) else None)(
                rival_status()
            ),
            30,
            what="the rival to be held with a Conflict condition",
        )
        cond = next(c for c in st["conditions"] if c["type"] == "Conflict")
        assert cond["status"] == "True" and cond["reason"] == "TargetConflict"
        assert f"{NS}/{sc.name}" in cond["message"]
        events = (kube.get(f"/api/v1/namespaces/{NS}/events") or {}).get("items", [])
        wait_for(
            lambda: any(
                e.get("involvedObject", {}).get("name") == rival and e["reason"] == "TargetConflict"
                for e in (kube.get(f"/api/v1/namespaces/{NS}/events") or {}).get("items", [])
            ),
            10,
            what="a TargetConflict Event on the rival",
        )
        assert sc.served() == sc.a and sc.spec_patches() == [] and events is not None
        sc.delete()  # the owner goes: the rival owns the target now
        try:
            wait_for(lambda: sc.served() == c, 30, what="the rival's checkpoint applied once it owns it")
        except AssertionError as exc:
            owner_left = kube.get(rollout_path(NS, sc.name))
            detail = f"owner: {owner_left}\nrival: {rival_status()}\n{operator_process.log()}"
            raise AssertionError(f"{exc}\n{detail}") from exc
        st = rival_status()
        assert not any(c["type"] == "Conflict" for c in st.get("conditions", []))
    finally:
        kube.request("DELETE", rollout_path(NS, rival))


def test_invalid_spec_mid_rollout_still_rolls_back(scenario: Any, kube: EmulatedCluster) -> None:
    """Class 11: the spec turns invalid while a rollout is in flight; the failed candidate is rolled back
    with what the rollout recorded, and the status reports the invalid spec."""
    sc = scenario(rolloutTimeoutSeconds=5)
    sc.wait(lambda st: st.get("phase") == "Live", "the initial checkpoint to be live")
    checkpoints.write_pointer(sc.pointer, sc.b)
    sc.wait(lambda st: st.get("phase") == "Verifying", "the rollout to be in flight")
    kube.request("PATCH", rollout_path(NS, sc.name), {"spec": {"pointer": "ftp://nowhere/p"}})
    sc.kuberay(healthy=False, app_status="DEPLOY_FAILED")
    wait_for(lambda: sc.served() == sc.a, 30, what="A restored although the spec is invalid")
    st = sc.wait(lambda st: st.get("phase") == "Failed", "the invalid spec reported")
    assert "invalid spec" in st["message"] and st["live"]["checkpointUri"] == sc.a
    wait_for(lambda: {"RolledBack", "InvalidSpec"} <= set(sc.event_reasons()), 10, what="the Events")


def test_hand_edit_is_reported_and_rollback_restores_it(scenario: Any, ckpt_root: str) -> None:
    """Class 8: someone edits the RayService by hand; the operator reports the drift once, and a failed
    rollout afterwards restores the hand-edited checkpoint, not the stale one in the status."""
    sc = scenario(rolloutTimeoutSeconds=5)
    sc.wait(lambda st: st.get("phase") == "Live", "the initial checkpoint to be live")
    hand = make_checkpoint(ckpt_root, f"{sc.name}-hand", "trial_h", 5.5)
    sc.kube.request(
        "PATCH", rayservice_path(NS, sc.rs), {"spec": {"serveConfigV2": SERVE_CONFIG.format(uri=hand)}}
    )
    sc.kuberay(healthy=True)
    sc.wait(lambda st: (st.get("live") or {}).get("checkpointUri") == hand, "the drift recorded")
    wait_for(lambda: "Drift" in sc.event_reasons(), 10, what="a Drift Event")
    checkpoints.write_pointer(sc.pointer, sc.b)
    wait_for(lambda: sc.served() == sc.b, 30, what="B applied")
    sc.kuberay(healthy=False, app_status="DEPLOY_FAILED")
    st = sc.wait(lambda st: st.get("phase") == "RolledBack", "a rollback")
    assert sc.served() == hand and st["live"]["checkpointUri"] == hand
    assert sc.event_reasons().count("Drift") == 1


def test_pause_mid_rollout_still_rolls_back(scenario: Any, kube: EmulatedCluster) -> None:
    """Class 11: pausing stops new promotions, not the rollback of a failed rollout in flight."""
    sc = scenario(rolloutTimeoutSeconds=5)
    sc.wait(lambda st: st.get("phase") == "Live", "the initial checkpoint to be live")
    checkpoints.write_pointer(sc.pointer, sc.b)
    sc.wait(lambda st: st.get("phase") == "Verifying", "the rollout to be in flight")
    kube.request("PATCH", rollout_path(NS, sc.name), {"spec": {"paused": True}})
    sc.kuberay(healthy=False, app_status="DEPLOY_FAILED")
    wait_for(lambda: sc.served() == sc.a, 30, what="A restored although the rollout is paused")
    st = sc.wait(lambda st: st.get("phase") == "Paused", "the pause to take effect after the rollback")
    assert st["live"]["checkpointUri"] == sc.a and "rollout" not in st
    c = make_checkpoint(sc.root, f"{sc.name}-c", "trial_c", 8.0)
    checkpoints.write_pointer(sc.pointer, c)  # paused: not promoted
    wait_for(lambda: {"RolledBack", "Paused"} <= set(sc.event_reasons()), 10, what="the Events")
    assert sc.served() == sc.a and len(sc.spec_patches()) == 2
    kube.request("PATCH", rollout_path(NS, sc.name), {"spec": {"paused": False}})
    wait_for(lambda: sc.served() == c, 30, what="C applied once resumed")
