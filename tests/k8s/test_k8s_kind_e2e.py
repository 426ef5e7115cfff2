"""Kind integration: scripts/kind_e2e.sh end to end (skipped where Docker or kind is missing), plus
checks of its parts that run anywhere: shellcheck, and the in-cluster load generator against a local
HTTP server that swaps its checkpoint mid-run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.k8s.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "kind_e2e.sh"
LOAD = Path(__file__).with_name("kind_load.py")


def docker_engine_reachable() -> bool:
    if not shutil.which("docker"):
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.kind
@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_kind_end_to_end() -> None:
    if not docker_engine_reachable():
        pytest.skip("no Docker engine: kind e2e skipped")
    if not shutil.which("kind"):
        pytest.skip("kind not installed: kind e2e skipped")
    cmd = ["bash", str(SCRIPT)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=5300, cwd=REPO_ROOT)
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, tail
    assert "kind e2e: PASSED" in result.stdout


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    scripts = [str(SCRIPT), str(REPO_ROOT / "scripts" / "install_tools.sh")]
    result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


class FakeServe(BaseHTTPRequestHandler):
    """A stand-in Serve endpoint: switches its checkpoint after `switch_after` actions; can fail some."""

    calls = 0
    switch_after = 30
    fail_on: frozenset[int] = frozenset()

    def _send(self, body: dict, code: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        live = "s3://b/run-2/ckpt" if FakeServe.calls >= FakeServe.switch_after else "s3://b/run-1/ckpt"
        self._send({"checkpoint_uri": live})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        FakeServe.calls += 1
        if FakeServe.calls in FakeServe.fail_on:
            self._send({"error": "boom"}, code=503)
        else:
            self._send({"action": 1, "count": FakeServe.calls})

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def fake_serve() -> Iterator[str]:
    FakeServe.calls = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_load(endpoint: str) -> tuple[int, dict]:
    env = {**os.environ, "ENDPOINT": endpoint, "DEADLINE_S": "30", "AFTER": "20", "PAUSE_S": "0"}
    result = subprocess.run([sys.executable, str(LOAD)], capture_output=True, text=True, env=env, timeout=60)
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return result.returncode, json.loads(line.removeprefix("RESULT "))


def test_load_generator_sees_the_switch_with_no_failures(fake_serve: str) -> None:
    FakeServe.fail_on = frozenset()
    code, result = run_load(fake_serve)
    assert code == 0
    assert result["failed"] == 0
    assert result["checkpoints"] == ["s3://b/run-1/ckpt", "s3://b/run-2/ckpt"]
    assert result["ok"] >= 50


def test_load_generator_fails_on_a_failed_request(fake_serve: str) -> None:
    FakeServe.fail_on = frozenset({12})
    code, result = run_load(fake_serve)
    assert code == 1
    assert result["failed"] == 1 and "HTTPError" in result["errors"][0]
