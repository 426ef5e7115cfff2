"""S3 faults for tests: a store that says no (403) and a server that trickles its answers.

What is emulated: ``deny`` answers chosen requests of the project's real boto3 client with S3's own
403 AccessDenied reply, at botocore's ``before-send`` hook (the request never reaches moto); every other
request goes to moto. ``TricklingS3`` is a real HTTP server on loopback that speaks just enough S3
(HEAD and GET of one object) to send its headers or body one byte at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

from rlops_core import storage

_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_kwargs: Any) -> Iterator[bytes]:
        yield self._data


@contextmanager
def deny(*key_suffixes: str) -> Iterator[list[str]]:
    """Answer 403 AccessDenied to every request whose object key ends with one of ``key_suffixes``.

    Yields the list of every request the shared client sends meanwhile, as ``"METHOD /bucket/key"``.
    """
    from botocore.awsrequest import AWSResponse

    sent: list[str] = []

    def handler(request: Any, **_kwargs: Any) -> AWSResponse | None:
        path = unquote(urlparse(request.url).path)
        sent.append(f"{request.method} {path}")
        if any(path.endswith("/" + suffix) for suffix in key_suffixes):
            body = b"" if request.method == "HEAD" else _DENIED
            return AWSResponse(request.url, 403, {"Content-Type": "application/xml"}, _Body(body))
        return None

    client = storage.s3_client()
    client.meta.events.register_first("before-send.s3", handler)
    try:
        yield sent
    finally:
        client.meta.events.unregister("before-send.s3", handler)


class TricklingS3:
    """A loopback server: HEAD answers at once; GET sends its headers or its body one byte per ``gap`` s."""

    def __init__(self, *, what: str = "body", size: int = 120, gap: float = 0.5) -> None:
        self.what, self.size, self.gap = what, size, gap
        self.stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def _headers(self) -> list[tuple[str, str]]:
                return [
                    ("Content-Length", str(outer.size)),
                    ("ETag", '"0123456789abcdef0123456789abcdef"'),
                    ("Last-Modified", "Sun, 22 Nov 2026 03:00:00 GMT"),
                ]

            def do_HEAD(self) -> None:
                self.send_response(200)
                for name, value in self._headers():
                    self.send_header(name, value)
                self.end_headers()

            def do_GET(self) -> None:
                try:
                    if outer.what == "headers":
                        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * outer.size:
                            if outer.stop.is_set():
                                return
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(outer.gap)
                        return
                    self.send_response(200)
                    for name, value in self._headers():
                        self.send_header(name, value)
                    self.end_headers()
                    for _ in range(outer.size):
                        if outer.stop.is_set():
                            return
                        self.wfile.write(b"s")
                        self.wfile.flush()
                        time.sleep(outer.gap)
                except OSError:
                    return  # the client gave up: what it should do

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TricklingS3:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
