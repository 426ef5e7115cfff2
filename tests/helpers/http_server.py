"""A real HTTP server on 127.0.0.1 for client tests: scripted answers, every request recorded.

It is a plain ``http.server.ThreadingHTTPServer`` in a thread: the client under test speaks real HTTP
over a real socket. Each route answers with a :class:`Reply` (or a callable that returns one);
``slow_chunks`` trickles the body to test read deadlines.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the server answers: a status, headers, a body (bytes or JSON), optionally trickled."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    slow_chunks: int = 0
    chunk_delay_s: float = 0.0

    def payload(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return b"" if self.body is None else json.dumps(self.body).encode()


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Route = Reply | Callable[["Seen"], Reply]


class RecordingServer:
    """``with RecordingServer() as srv: srv.routes["/path"] = Reply(...)``; ``srv.seen`` lists requests."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with server._lock:
                    server.seen.append(seen)
                route = server.routes.get(self.path.split("?", 1)[0], Reply(404, {"error": "no route"}))
                reply = route(seen) if callable(route) else route
                data = reply.payload()
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if "Content-Type" not in reply.headers:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data) * max(1, reply.slow_chunks or 1)))
                self.end_headers()
                if reply.slow_chunks:
                    for _ in range(reply.slow_chunks):
                        self.wfile.write(data)
                        self.wfile.flush()
                        time.sleep(reply.chunk_delay_s)
                else:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if path is None or s.path == path]
