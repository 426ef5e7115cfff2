"""Faults across the whole chain (storage → operator → RayService → KubeRay → Serve → clients), each
with nothing lost: no failed client request, no bad policy served, the old policy kept.

Real and emulated parts are those of test_kuberay_path.py: real training checkpoints, operator process,
Ray cluster, Serve and HTTP; kmock's KubernetesEmulator for the Kubernetes API and the test's KubeRay
stand-in (tests/e2e/kuberay.py) that forwards ``serveConfigV2`` to the dashboard and writes statuses
back. The load is rlops_demo.load.LoadGenerator playing corridor episodes over HTTP.

The other faults of the chain are tested where they happen (see docs/testing.md): storage outage
during a promotion in tests/operator/test_operator_process.py and test_operator_storage.py, training
killed and resumed in tests/train/test_train_resume.py. The operator killed mid-rollout is tested
both in tests/operator (KubeRay played by hand) and here, with the stand-in and real Serve.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import pytest

from rlops_core import checkpoints, storage
from rlops_demo.load import LoadGenerator
from tests.e2e.served import TrainedCheckpoints, altered_after_manifest, largest_policy_file, metadata
from tests.helpers.operator_process import OperatorProcess
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
REPLICAS = 2


@pytest.fixture(scope="module")
def chain(served_factory: Any, trained: TrainedCheckpoints) -> Any:
    """Two replicas serving A; the operator hashes only files smaller than A's largest weights file."""
    _, size = largest_policy_file(trained.a)
    served = served_factory(trained.a, replicas=REPLICAS, maxHashBytes=size - 1)
    served.max_hash_bytes = size - 1
    return served


def replica_names(app: str) -> list[str]:
    """The Serve replica actors of ``app`` (named ``SERVE_REPLICA::<app>#PolicyServer#<id>`` in "serve")."""
    import ray

    prefix = f"SERVE_REPLICA::{app}#PolicyServer#"
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and a["name"].startswith(prefix)
    )


def full_set(app: str, without: str = "") -> list[str] | None:
    """The replica names once there are REPLICAS of them and ``without`` is not one; else None."""
    names = replica_names(app)
    return names if len(names) == REPLICAS and without not in names else None


def all_serve(endpoint: str, uri: str, probes: int = 6) -> bool:
    """Whether ``probes`` /metadata answers in a row (from either replica) all name ``uri``."""
    return all((metadata(endpoint) or {}).get("checkpoint_uri") == uri for _ in range(probes))


def app_running(served: Any) -> bool:
    """What the stand-in last wrote for the app: RUNNING with the deployment HEALTHY."""
    apps = ((served.rayservice().get("status") or {}).get("activeServiceStatus") or {}).get(
        "applicationStatuses"
    ) or {}
    app = apps.get(served.app) or {}
    healthy = (app.get("serveDeploymentStatuses") or {}).get("PolicyServer", {}).get("status") == "HEALTHY"
    return app.get("status") == "RUNNING" and healthy


def test_corrupt_checkpoint_is_rolled_back_and_never_served(chain: Any, trained: TrainedCheckpoints) -> None:
    dest = storage.join_uri(trained.root, "e2e-corrupt", "trial_altered", "checkpoint_000000")
    bad = altered_after_manifest(trained.a, dest)
    # the premise: the operator's cheap checks pass, only the replica's full verification can see it
    checkpoints.verify_checkpoint(bad, max_hash_bytes=chain.max_hash_bytes)
    with pytest.raises(checkpoints.CheckpointError, match="sha256"):
        checkpoints.verify_checkpoint(bad)
    patches_before = len(chain.spec_patches())

    load = LoadGenerator(chain.endpoint, workers=3, max_seconds=300).start()  # no retries
    try:
        time.sleep(1.0)
        checkpoints.write_pointer(chain.pointer, bad)
        st = chain.wait(lambda st: st.get("phase") == "RolledBack", "the operator to roll back", timeout=90)
        wait_for(lambda: chain.configured() == trained.a, 30, what="serveConfigV2 to name A again")
        wait_for(
            lambda: all((metadata(chain.endpoint) or {}).get("last_error", 1) is None for _ in range(6)),
            60,
            what="the replicas to drop the failed swap once A is configured again",
        )
    finally:
        stats = load.stop()

    assert st["live"]["checkpointUri"] == trained.a and st["pointer"]["checkpointUri"] == bad
    assert "SwapFailed" in st["message"] and "sha256" in st["message"], st["message"]
    event = wait_for(
        lambda: next((e for e in chain.events() if e["reason"] == "RolledBack"), None), 20, what="the Event"
    )
    assert event["type"] == "Warning" and "SwapFailed" in event["message"] and bad in event["message"]
    notes = chain.rayservice()["metadata"]["annotations"]
    assert notes["rlops.io/checkpoint-uri"] == trained.a and notes["rlops.io/rolled-back-from"] == bad
    patches = chain.spec_patches()[patches_before:]
    assert len(patches) == 2, "one patch to the corrupt checkpoint, one back to A"
    # nothing lost: every request answered, and only ever by A
    assert stats.failed == 0, [r for r in stats.requests if not r.ok][:5]
    assert len(stats.requests) > 20
    assert {uri for _, uri in stats.live_checkpoints} == {trained.a}
    # the pointer still names the corrupt checkpoint: it is not tried again
    time.sleep(3.0)
    assert len(chain.spec_patches()) == patches_before + 2
    assert chain.status()["phase"] == "RolledBack" and chain.configured() == trained.a


def test_operator_killed_mid_rollout_promotes_once(
    chain: Any, trained: TrainedCheckpoints, e2e_operator: OperatorProcess
) -> None:
    live_before = chain.status()["live"]["checkpointUri"]
    assert live_before == trained.a
    patches_before = len(chain.spec_patches())
    load = LoadGenerator(chain.endpoint, workers=3, max_seconds=300).start()  # no retries
    try:
        chain.kuberay.pause()  # KubeRay is slow: the rollout stays in flight
        checkpoints.write_pointer(chain.pointer, trained.b)
        chain.wait(
            lambda st: st.get("phase") == "Verifying" and st["rollout"]["checkpointUri"] == trained.b,
            "the rollout of B to be in flight",
            timeout=60,
        )
        e2e_operator.stop(signal.SIGKILL)
        chain.kuberay.resume()  # KubeRay and Serve finish the swap while the operator is down
        wait_for(lambda: all_serve(chain.endpoint, trained.b), 90, what="both replicas to serve B")
        e2e_operator.start()
        st = chain.wait(
            lambda st: st.get("phase") == "Live" and st["live"]["checkpointUri"] == trained.b,
            "the restarted operator to finish the rollout",
        )
        time.sleep(2.0)
    finally:
        chain.kuberay.resume()
        if e2e_operator.proc is None or e2e_operator.proc.poll() is not None:
            e2e_operator.start()
        stats = load.stop()

    assert len(chain.spec_patches()) == patches_before + 1, "B was applied exactly once"
    applied = [h for h in st["history"] if h["decision"] == "Applied" and h.get("checkpointUri") == trained.b]
    assert len(applied) == 1 and st["previous"]["checkpointUri"] == trained.a
    assert chain.status()["phase"] == "Live" and chain.configured() == trained.b
    assert stats.failed == 0, [r for r in stats.requests if not r.ok][:5]
    assert len(stats.requests) > 20
    seen = [uri for _, uri in stats.live_checkpoints]
    assert set(seen) == {trained.a, trained.b} and seen[0] == trained.a and seen[-1] == trained.b


def test_replica_killed_under_load_requests_still_succeed(chain: Any, trained: TrainedCheckpoints) -> None:
    import ray

    live = chain.status()["live"]["checkpointUri"]

    names = wait_for(lambda: full_set(chain.app), 60, what="two replicas")
    victim = names[0]
    victim_id = victim.rsplit("#", 1)[1]
    patches_before = len(chain.spec_patches())

    load = LoadGenerator(chain.endpoint, workers=4, max_seconds=300, retries=3).start()
    try:
        time.sleep(2.0)
        killed_at = time.monotonic() - load.t0
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        survivors = wait_for(
            lambda: full_set(chain.app, without=victim), 90, what="Serve to replace the killed replica"
        )
        wait_for(lambda: app_running(chain), 90, what="the application to be RUNNING and HEALTHY again")
        new_ids = {name.rsplit("#", 1)[1] for name in survivors}
        replacement = (new_ids - {n.rsplit("#", 1)[1] for n in names}).pop()
        wait_for(
            lambda: (metadata(chain.endpoint) or {}).get("replica") == replacement,
            30,
            interval=0.05,
            what="the replacement replica to answer",
        )
        time.sleep(2.0)
    finally:
        stats = load.stop()

    # within the retry budget (3 retries) no request failed, before, during or after the kill
    assert stats.failed == 0, [r for r in stats.requests if not r.ok][:5]
    after = [r for r in stats.requests if r.started > killed_at]
    assert len(after) > 20
    answered = {(metadata(chain.endpoint) or {}).get("replica") for _ in range(20)}
    assert victim_id not in answered and answered <= new_ids
    replacement_meta = wait_for(
        lambda: (m := metadata(chain.endpoint)) and m["replica"] == replacement and m, 30, interval=0.05
    )
    assert replacement_meta["checkpoint_uri"] == live, "the replacement loads the configured checkpoint"
    assert {uri for _, uri in stats.live_checkpoints} == {live}
    # the operator saw nothing to do: no patch, rollout unchanged
    assert len(chain.spec_patches()) == patches_before
    resp = httpx.post(chain.endpoint + "/", json={"state": [1]}, timeout=10)
    assert resp.status_code == 200 and resp.json()["action"] in (0, 1)
