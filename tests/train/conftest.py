"""Helpers for the training tests: run ``python -m workloads.train_job`` as a real subprocess.

Training runs attach to the shared ``ray_cluster`` through ``RAY_ADDRESS`` (as a RayJob driver
does), so no test starts a second cluster.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_TIMEOUT = 300


@dataclass
class CliRun:
    """A finished CLI run."""

    returncode: int
    stdout: str
    stderr: str

    def line_after(self, prefix: str) -> str:
        """The rest of the first stdout line that starts with ``prefix``."""
        for line in self.stdout.splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise AssertionError(f"no line starting with {prefix!r} in:\n{self.stdout}\n{self.stderr}")


@dataclass
class FreshS3:
    """An S3 test server started after the Ray cluster, so no Ray worker inherited its endpoint."""

    endpoint: str
    bucket_uri: str


@pytest.fixture
def fresh_s3(ray_cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[FreshS3]:
    """A moto S3 server on a new port with one bucket; AWS_* point at it (this process and children).

    The shared Ray cluster is up before this server exists, so its workers cannot know the endpoint:
    a training run that writes here proves the job hands the endpoint (and credentials) to Tune's
    trial actors itself, the problem a RayJob's driver has too.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    from rlops_core import storage
    from tests.conftest import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "fresh-key",
        "AWS_SECRET_ACCESS_KEY": "fresh-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    storage.reset_clients()
    boto3.client("s3").create_bucket(Bucket="rlops-fresh")
    try:
        yield FreshS3(endpoint=endpoint, bucket_uri="s3://rlops-fresh")
    finally:
        server.stop()
        storage.reset_clients()


def cli_env(ray_address: str | None) -> dict[str, str]:
    """The subprocess environment: this process's (AWS_* and Ray token included) plus RAY_ADDRESS."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    else:
        env.pop("RAY_ADDRESS", None)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "workloads.train_job", *args]


def run_cli(*args: str, ray_address: str | None = None, timeout: float = TRAIN_TIMEOUT) -> CliRun:
    proc = subprocess.run(
        cli_command(*args),
        cwd=REPO_ROOT,
        env=cli_env(ray_address),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def train_cli(ray_cluster) -> Callable[..., CliRun]:
    """Run the training CLI against the shared Ray cluster."""

    def _run(*args: str, timeout: float = TRAIN_TIMEOUT) -> CliRun:
        return run_cli(*args, ray_address=ray_cluster.address, timeout=timeout)

    return _run


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Small, quick corridor runs: the tutorial network, a small batch, sampling inside the trial actor.
FAST_CORRIDOR = ("--preset", "tutorial", "--num-env-runners", "0")
