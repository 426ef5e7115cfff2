"""Fixtures for the operator tests: stored checkpoints, the Kubernetes emulator, the operator process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rlops_core import checkpoints, storage
from tests.conftest import REPO_ROOT, free_port
from tests.operator.kube import EmulatedCluster
from tests.waiting import wait_for

SERVE_CONFIG = """\
# the user's serve config: the operator must keep everything but the checkpoint
proxy_location: EveryNode
http_options:
  host: 0.0.0.0
  port: 8000
applications:
- name: corridor
  route_prefix: /
  import_path: workloads.serve_app:app
  runtime_env:
    env_vars:
      OMP_NUM_THREADS: "1"
  deployments:
  - name: PolicyServer
    num_replicas: 2
    ray_actor_options:
      num_cpus: 0.5
    user_config:
      checkpoint_uri: {uri}
      capture:
        enabled: true
        sample_rate: 0.1
- name: other
  route_prefix: /other
  import_path: somewhere:app
"""


def make_checkpoint(
    root: str, experiment: str, trial: str, metric: float, *, files: dict[str, bytes] | None = None
) -> str:
    """Write a small checkpoint directory and its manifest under ``<root>/<experiment>/<trial>``."""
    uri = storage.join_uri(root, experiment, trial, "checkpoint_000001")
    body = files or {
        "algorithm_state.pkl": os.urandom(2048),
        "learner_group/learner/rl_module/default_policy/module_state.pt": os.urandom(4096),
        "env_runner/connector.pkl": b"connector state",
    }
    for rel, data in body.items():
        storage.write_bytes(storage.join_uri(uri, rel), data)
    manifest = checkpoints.build_manifest(
        uri,
        metric_name="env_runners/episode_return_mean",
        metric_value=metric,
        env_id="corridor",
        trial_id=trial,
        experiment=experiment,
    )
    checkpoints.write_manifest(manifest)
    return manifest.checkpoint_uri


@pytest.fixture
def ckpt_root(tmp_path: Path) -> str:
    """A local storage root (``<root>/<experiment>/...``)."""
    root = tmp_path / "store"
    root.mkdir()
    return str(root)


@pytest.fixture
def checkpoint_factory() -> Callable[..., str]:
    return make_checkpoint


class OperatorProcess:
    """``python -m rlops_operator`` as a real process against the emulated API."""

    def __init__(self, kubeconfig: Path, log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "RLOPS_HEALTH_PORT": str(self.health_port),
            "RLOPS_METRICS_PORT": str(self.metrics_port),
            "RLOPS_TICK_SECONDS": "0.5",
            "RLOPS_POSTING_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "operator")]),
            **self.extra_env,
        }
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rlops_operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(REPO_ROOT),
            start_new_session=True,
        )
        log.close()
        wait_for(self._healthy, timeout=60, what="the operator's liveness endpoint")

    def _healthy(self) -> bool:
        import urllib.request

        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


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
