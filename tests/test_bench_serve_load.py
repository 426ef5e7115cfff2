"""The serving benchmark's warm-up waits out a route that refuses connections for a moment, and fails
with a clear error when it never comes up. A real loopback HTTP server (stdlib) and real wrk."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.serve_load import warm_up
from rlops_demo.cluster import free_port


class _Answer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        body = b'{"action": 1}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def late_server() -> Iterator[tuple[int, list[float]]]:
    """A port that refuses for 1.5 s, then answers; yields (port, [time it started listening])."""
    port = free_port()
    started: list[float] = []
    servers: list[ThreadingHTTPServer] = []

    def serve_later() -> None:
        time.sleep(1.5)
        server = ThreadingHTTPServer(("127.0.0.1", port), _Answer)
        servers.append(server)
        started.append(time.monotonic())
        server.serve_forever()

    threading.Thread(target=serve_later, daemon=True).start()
    yield port, started
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench installs it)")
def test_warm_up_waits_for_a_port_that_refuses_at_first(late_server: tuple[int, list[float]]) -> None:
    port, started = late_server
    begun = time.monotonic()
    warm_up(f"http://127.0.0.1:{port}/", requests=3, seconds=1, connect_timeout=20)
    assert started and started[0] - begun >= 1.0, "the server came up after the first refused attempt"


def test_warm_up_names_a_route_that_never_comes_up() -> None:
    port = free_port()
    with pytest.raises(RuntimeError, match=rf"127.0.0.1:{port}/ refused connections for 1 s"):
        warm_up(f"http://127.0.0.1:{port}/", requests=1, seconds=1, connect_timeout=1)
