"""``python -m rlops_operator`` as a real process, for the operator and end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import REPO_ROOT, free_port
from tests.waiting import wait_for


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
