"""Start a local Ray head for a benchmark and make sure it stays up (``rlops_demo.cluster`` starts it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

START_ATTEMPTS, HEAD_SETTLE_S = 3, 5.0


def settled(head: Any, timeout: float = 180.0) -> bool:
    """True once ``ray start`` has launched every daemon and the head is still up a moment later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and head.process is not None and head.process.poll() is None:
        log = head.log_path.read_text(errors="replace") if head.log_path and head.log_path.exists() else ""
        if "will now block forever" in log:
            time.sleep(HEAD_SETTLE_S)
            return head.process.poll() is None
        time.sleep(0.5)
    return False


def start_head(make: Callable[[], Any], attempts: int = START_ATTEMPTS) -> Any:
    """``make().start()``, retried when the head exits right after starting.

    ``ray start --block`` ends the whole head when one daemon (e.g. ``ray_client_server``) times out,
    which happens on a busy machine seconds after the dashboard first answers. ``make`` must return a
    ``LocalRayCluster`` with a ``log_path`` (that is where ``ray start`` says it is up).
    """
    for attempt in range(1, attempts + 1):
        head = make().start()
        if settled(head):
            return head
        head.stop()
        print(f"[bench] Ray head exited while starting (log: {head.log_path}); attempt {attempt}/{attempts}")
    raise RuntimeError(f"the Ray head exited right after starting, {attempts} times (log: {head.log_path})")
