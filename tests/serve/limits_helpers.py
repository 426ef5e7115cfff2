"""Raw-socket clients for the ingress-limit tests: exact control over what is sent, and when.

httpx always sends a whole body before it reads the answer, so it cannot show that a server answers an
oversized or stalled body early. These helpers speak HTTP/1.1 over a plain socket on loopback, with a
deadline on every read.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawAnswer:
    """What came back: status (0 if none), headers, body, and how long the exchange took."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float
    error: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", int(parts.port or 80)


def path_of(url: str) -> str:
    return urlsplit(url).path or "/"


def parse_answer(data: bytes, seconds: float, error: str = "") -> RawAnswer:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = 0
    if lines and lines[0].startswith("HTTP/"):
        status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(status, headers, body, seconds, error)


def exchange(
    url: str,
    head: bytes,
    body_parts: list[bytes] = (),  # type: ignore[assignment]
    *,
    pause_s: float = 0.0,
    read_timeout_s: float = 30.0,
) -> RawAnswer:
    """Send ``head`` then each body part (``pause_s`` apart, stopping if the server answers); read all."""
    started = time.monotonic()
    error = ""
    data = b""
    with socket.create_connection(host_port(url), timeout=read_timeout_s) as sock:
        try:
            sock.sendall(head)
            for part in body_parts:
                if pause_s:
                    time.sleep(pause_s)
                if _answered(sock):
                    break
                sock.sendall(part)
            sock.settimeout(read_timeout_s)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if _complete(data):
                    break
        except OSError as exc:  # the server may close (or reset) a connection it refused early
            error = f"{type(exc).__name__}: {exc}"
            data += _drain(sock)
    return parse_answer(data, time.monotonic() - started, error)


def request_head(url: str, method: str = "POST", headers: dict[str, str] | None = None) -> bytes:
    host, port = host_port(url)
    lines = [f"{method} {path_of(url)} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _answered(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return len(body) >= int(value.strip())
    return False


def _drain(sock: socket.socket) -> bytes:
    out = b""
    try:
        sock.settimeout(2.0)
        while chunk := sock.recv(65536):
            out += chunk
    except OSError:
        pass
    return out
