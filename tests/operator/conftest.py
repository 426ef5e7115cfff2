"""Fixtures for the operator tests: stored checkpoints, the Kubernetes emulator, the operator process.

The helpers live in modules: ``tests.helpers.rollout_data`` (SERVE_CONFIG, make_checkpoint),
``tests.helpers.operator_process`` (OperatorProcess), ``tests.waiting`` (wait_for).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.operator_process import OperatorProcess
from tests.helpers.paths import free_port
from tests.helpers.rollout_data import SERVE_CONFIG, make_checkpoint
from tests.operator.kube import EmulatedCluster
from tests.waiting import wait_for

# re-exported: other modules still import these names from here
__all__ = ["SERVE_CONFIG", "OperatorProcess", "make_checkpoint", "wait_for"]


@pytest.fixture
def ckpt_root(tmp_path: Path) -> str:
    """A local storage root (``<root>/<experiment>/...``)."""
    root = tmp_path / "store"
    root.mkdir()
    return str(root)


@pytest.fixture
def checkpoint_factory() -> Callable[..., str]:
    return make_checkpoint


@pytest.fixture(scope="module")
def kube() -> Iterator[EmulatedCluster]:
    """kmock's KubernetesEmulator (with resourceVersion and fault injection) on a loopback port."""
    cluster = EmulatedCluster(free_port())
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def operator_process(
    kube: EmulatedCluster, tmp_path_factory: pytest.TempPathFactory, s3_server: Any
) -> Iterator[OperatorProcess]:
    """The operator, cluster-wide, against the emulator (S3 settings inherited from the S3 test server)."""
    work = tmp_path_factory.mktemp("operator")
    proc = OperatorProcess(kube.write_kubeconfig(work / "kubeconfig"), work)
    proc.start()
    yield proc
    proc.stop()
