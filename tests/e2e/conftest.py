"""Fixtures for the end-to-end tests: trained checkpoints, the operator against the emulated Kubernetes
API, a KubeRay stand-in that drives the real local Ray Serve, and served RayServices.

Reused from the other tiers: the shared Ray cluster and Serve proxy (tests/conftest.py); the Kubernetes
emulator (EmulatedCluster) and the operator process (tests/helpers/operator_process.py), here started
once per session for both e2e modules. The helpers live in ``tests/e2e/served.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.kuberay import KubeRayStandIn
from tests.e2e.served import (  # re-exported for modules that import them from here
    DEPLOYMENT,
    NS,
    ServedRollout,
    TrainedCheckpoints,
    altered_after_manifest,
    configured_checkpoint,
    largest_policy_file,
    metadata,
    serve_config_text,
)
from tests.helpers.operator_process import OperatorProcess
from tests.helpers.paths import free_port
from tests.operator.kube import EmulatedCluster
from tests.waiting import wait_for

__all__ = [
    "DEPLOYMENT",
    "NS",
    "ServedRollout",
    "TrainedCheckpoints",
    "altered_after_manifest",
    "configured_checkpoint",
    "largest_policy_file",
    "metadata",
    "serve_config_text",
    "wait_for",
]


@pytest.fixture(scope="session")
def trained(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> TrainedCheckpoints:
    """Two short PPO runs (1 iteration each, different seeds) through the training job's Python API."""
    from workloads.train_job import run_training
    from workloads.training.settings import build_settings

    root = str(tmp_path_factory.mktemp("e2e-storage"))
    uris = []
    for run, seed in (("e2e-a", 1), ("e2e-b", 2)):
        overrides = {
            "storage": root,
            "name": run,
            "seed": seed,
            "stop": {"iters": 1},
            "resources": {"num_env_runners": 0},
        }
        outcome = run_training(build_settings(preset="tutorial", overrides=overrides))
        uris.append(outcome.best_checkpoint_uri)
    assert uris[0] != uris[1]
    return TrainedCheckpoints(root=root, a=uris[0], b=uris[1])


# ---------------------------------------------------------------- Kubernetes API, operator, KubeRay
@pytest.fixture(scope="session")
def e2e_kube() -> Iterator[EmulatedCluster]:
    """kmock's KubernetesEmulator (the operator tier's EmulatedCluster), shared by the e2e modules."""
    cluster = EmulatedCluster(free_port())
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def e2e_operator(
    e2e_kube: EmulatedCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """``python -m rlops_operator``, cluster-wide, against the emulator (tests/operator's OperatorProcess)."""
    work = tmp_path_factory.mktemp("e2e-operator")
    proc = OperatorProcess(e2e_kube.write_kubeconfig(work / "kubeconfig"), work)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def kuberay(e2e_kube: EmulatedCluster, ray_cluster: Any, serve_endpoint: Any) -> Iterator[KubeRayStandIn]:
    """The KubeRay stand-in, forwarding the emulator's RayServices to the shared Ray cluster."""
    client = ray_cluster.serve_client()
    standin = KubeRayStandIn(e2e_kube, client, NS).start()
    yield standin
    standin.stop()
    client.close()


@pytest.fixture(scope="module")
def served_factory(
    e2e_kube: EmulatedCluster,
    kuberay: KubeRayStandIn,
    e2e_operator: OperatorProcess,  # the operator must run for a rollout to go Live
    serve_endpoint: Any,
    trained: TrainedCheckpoints,
) -> Iterator[Any]:
    """Build :class:`ServedRollout` objects; each is deleted (RayService, rollout, Serve app) at the end."""
    made: list[ServedRollout] = []

    def make(initial: str, **kw: Any) -> ServedRollout:
        made.append(
            ServedRollout(
                e2e_kube, kuberay, serve_endpoint.url, serve_endpoint.port, trained.root, initial, **kw
            )
        )
        return made[-1]

    yield make
    for served in made:
        served.delete()
