"""Run the engine outside Kubernetes: poll at an interval, step quickly while a rollout is in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .engine import Decision, Engine


def run(
    engine: Engine,
    *,
    status: dict[str, Any] | None = None,
    on_decision: Callable[[Decision, dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
    verify_tick_s: float = 0.25,
    until: Callable[[dict[str, Any], list[Decision]], bool] | None = None,
    deadline_s: float | None = None,
    annotations: Callable[[], dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Step the engine until ``stop`` is set, ``until(status, decisions)`` is true or the deadline passes.

    Returns the last status (the same dict shape a PolicyRollout's ``.status`` holds). ``annotations``
    gives the manual controls of a progressive rollout before each step (``rlops.io/command``,
    ``rlops.io/paused``), as a PolicyRollout's annotations would.
    """
    stop = stop or threading.Event()
    st: dict[str, Any] = dict(status or {})
    started = time.monotonic()
    while not stop.is_set():
        result = engine.step(st, annotations=annotations() if annotations is not None else None)
        st = result.status
        for decision in result.decisions:
            if on_decision is not None:
                on_decision(decision, st)
        if until is not None and until(st, result.decisions):
            break
        if deadline_s is not None and time.monotonic() - started > deadline_s:
            break
        stop.wait(verify_tick_s if st.get("rollout") else engine.spec.poll_interval_s)
    return st
