"""Ingress limits enforced in the replica before a request body is parsed: size and read time.

:class:`BodyLimitMiddleware` is a pure ASGI middleware. A declared ``Content-Length`` above the limit is
answered 413 at once, without reading a byte of the body. A body without a length (chunked) is read in
the chunks the server hands over, counting as it goes, and refused with 413 as soon as it passes the
limit. A body that does not arrive within ``body_timeout_s`` (a client trickling, or promising more than
it sends) gets 408. Nothing above the limit is ever held in memory, and the body reaches the app only
once it is complete and within bounds.

The limits come from the deployment's ``user_config`` (``max_body_bytes``, ``body_timeout_s``) through
:func:`configure`; each replica is its own process, so the module-level value is per replica.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BodyLimits:
    """The largest body accepted, and how long reading it may take."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S


_current: list[BodyLimits] = [BodyLimits()]
_on_reject: list[Callable[[str], None]] = []


def configure(limits: BodyLimits, on_reject: Callable[[str], None] | None = None) -> None:
    """Set this replica's limits (and a callback counting rejections by kind)."""
    _current[0] = limits
    _on_reject[:] = [on_reject] if on_reject else []


def current() -> BodyLimits:
    return _current[0]


def error_body(kind: str, message: str, field: str | None = None) -> bytes:
    """The documented error object, serialised."""
    return json.dumps({"error": {"kind": kind, "message": message, "field": field}}).encode()


class BodyLimitMiddleware:
    """Refuse oversized or slow request bodies before the app parses them (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = current()
        declared = _content_length(scope)
        if declared == -1:
            await _reject(send, 400, "invalid_request", "Content-Length: not a non-negative integer")
            return
        if declared is not None and declared > limits.max_body_bytes:
            await _reject(
                send,
                413,
                "too_large",
                f"body: Content-Length {declared} bytes, at most {limits.max_body_bytes}",
            )
            return
        body = await self._read_body(receive, send, limits)
        if body is None:
            return  # already answered (413 / 408) or the client went away
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive, send: Send, limits: BodyLimits) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + limits.body_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(remaining, 0.0))
            except TimeoutError:
                await _reject(
                    send,
                    408,
                    "timeout",
                    f"body: not complete after {limits.body_timeout_s:g} s; send the whole body at once",
                )
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limits.max_body_bytes:
                await _reject(send, 413, "too_large", f"body: more than {limits.max_body_bytes} bytes")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _content_length(scope: Scope) -> int | None:
    """The declared length; None if absent, -1 if malformed."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            if not text.isdigit() or len(text) > 18:
                return -1
            return int(text)
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the whole body once, then defers to the server (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reject(send: Send, status: int, kind: str, message: str) -> None:
    """Answer with the error object and close the connection (the unread body is not wanted)."""
    for callback in _on_reject:
        callback(kind)
    payload = error_body(kind, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})
