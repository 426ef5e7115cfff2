"""A local Ray head started as one process group, so stopping it (or Ctrl-C) leaves nothing behind."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rlops_core.serve_client import ServeClient, ServeError


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRayCluster:
    """``ray start --head --block`` in its own process group, with token authentication on.

    ``env`` is added to the head's environment (and so to every worker and Serve replica); ``cwd`` is
    the head's working directory; ``cleanup_dirs`` are removed with the temp dir on :meth:`stop`.
    """

    num_cpus: int = 4
    token: str = field(default_factory=lambda: os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32))
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    # Ray's session folders need a short path (AF_UNIX socket names are limited to 107 bytes).
    temp_dir: Path = field(default_factory=lambda: Path(f"/tmp/rlops-ray-{uuid.uuid4().hex[:6]}"))
    cwd: Path | None = None
    cleanup_dirs: list[Path] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client_env(self) -> dict[str, str]:
        """Variables a driver or CLI needs to reach this cluster."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def start(self, timeout: float = 180.0) -> LocalRayCluster:
        """Start the head and wait until its dashboard answers."""
        ray_bin = str(Path(sys.executable).with_name("ray"))
        cmd = [
            ray_bin,
            "start",
            "--head",
            "--block",
            f"--port={self.gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--num-cpus={self.num_cpus}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            "--include-dashboard=true",
        ]
        env = {**os.environ, **self.env, **self.client_env(), "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS")
        out = self.log_path.open("wb") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.cwd
        )
        deadline = time.monotonic() + timeout
        last = ""
        with self.serve_client(timeout=5) as client:
            while True:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise RuntimeError(f"ray head exited with code {code} (log: {self.log_path})")
                try:
                    client.version()
                    return self
                except ServeError as exc:
                    last = exc.message
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"ray head's dashboard did not answer in {timeout:.0f} s (last: {last}; "
                        f"log: {self.log_path})"
                    )
                time.sleep(0.5)

    def serve_client(self, timeout: float = 60.0) -> ServeClient:
        """A client for this cluster's dashboard Serve REST API (with its token)."""
        return ServeClient(self.dashboard_url, self.token, timeout=timeout)

    def stop(self) -> None:
        """End the head's whole process group (workers, raylet, GCS, dashboard, Serve)."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None
        for folder in (self.temp_dir, *self.cleanup_dirs):
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
