"""Load generation for the serving benchmark: ``wrk`` against a loopback URL, parsed into numbers."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

WRK_SCRIPT = (
    'wrk.method = "POST"\nwrk.body = \'{"state": [1]}\'\nwrk.headers["Content-Type"] = "application/json"\n'
)


def wrk_ms(text: str) -> float:
    """A wrk latency (``812.00us``, ``2.21ms``, ``1.02s``) in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def parse_wrk(out: str) -> dict[str, Any]:
    """req/s, p50/p99 in ms, the request count and errors (non-2xx plus socket errors) from wrk's output."""

    def need(pattern: str) -> re.Match[str]:
        match = re.search(pattern, out, re.M)
        if match is None:
            raise ValueError(f"wrk output has no {pattern!r}:\n{out[-2000:]}")
        return match

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return {
        "rps": round(float(need(r"Requests/sec:\s+([\d.]+)").group(1)), 1),
        "p50_ms": round(wrk_ms(need(r"^\s+50%\s+(\S+)").group(1)), 3),
        "p99_ms": round(wrk_ms(need(r"^\s+99%\s+(\S+)").group(1)), 3),
        "requests": int(need(r"(\d+) requests in").group(1)),
        "errors": errors,
    }


def run_wrk(url: str, connections: int, duration: float, prefix: list[str] | None = None) -> dict[str, Any]:
    """One wrk run on a loopback URL (``prefix``: e.g. ``taskset -c 0`` to pin the load generator)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk (make bench does it)")
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the benchmark only loads loopback servers, not {url}")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        threads = 1 if connections == 1 else 2
        cmd = [*(prefix or []), wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s"]
        cmd += ["--latency", "-s", str(script), url.rstrip("/") + "/"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return parse_wrk(done.stdout)


def warm_up(
    url: str,
    requests: int = 50,
    seconds: float = 2.0,
    prefix: list[str] | None = None,
    connect_timeout: float = 60.0,
) -> None:
    """Wait until the route accepts connections, then single requests that must each answer 200, then a
    short wrk burst at 16 connections (not recorded).

    Refused connections are retried for up to ``connect_timeout`` seconds: with direct ingress, Serve's
    HAProxy reloads its configuration as applications are added, and a port can refuse for a moment.
    """
    import httpx

    endpoint = url.rstrip("/") + "/"
    deadline = time.monotonic() + connect_timeout
    while True:
        try:
            httpx.post(endpoint, json={"state": [1]}, timeout=60).raise_for_status()
            break
        except httpx.TransportError as exc:
            if time.monotonic() > deadline:
                refused = f"{endpoint} refused connections for {connect_timeout:.0f} s: {exc}"
                raise RuntimeError(refused) from exc
            time.sleep(0.5)
    for _ in range(requests):
        httpx.post(endpoint, json={"state": [1]}, timeout=60).raise_for_status()
    run_wrk(url, 16, seconds, prefix)
