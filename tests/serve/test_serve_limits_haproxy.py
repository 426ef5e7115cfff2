"""Ingress limits on the documented fast path (direct ingress + HAProxy, hardened), issue 14 §2-§4.

A second local Ray cluster (tests/serve/fast_ingress.py) runs Serve with
``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``,
``RAY_SERVE_ENABLE_HA_PROXY=1`` and ``RAY_SERVE_HAPROXY_BINARY_PATH=workloads/serving/haproxy-hardened``, with
HAProxy's ``maxconn`` at 256 and ``timeout http-request`` at 2 s so that floods and slow clients stay small.
Everything is real (Ray, Serve, HAProxy, uvicorn) and on loopback; each flood is bounded in sockets and
seconds. With Ray's stock HAProxy settings (``timeout client 3600s``, no ``timeout http-request``) the
flood and slow-client tests hang and fail.
"""

from __future__ import annotations

import json
import random
import re
import socket
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serve.fast_ingress import HTTP_REQUEST_TIMEOUT_S, MAXCONN, FastIngress, start_fast_ingress
from tests.serve.limits_helpers import exchange, host_port, request_head

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
CUT_OFF_S = 15.0  # generous bound: HAProxy's limit here is 2 s; without it these clients are never cut


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastIngress]:
    yield from start_fast_ingress(tmp_path_factory.mktemp("fast-ingress"))


@pytest.fixture(scope="module")
def fast_url(fast: FastIngress, corridor_checkpoints) -> str:
    return fast.deploy("fast", {"checkpoint_uri": corridor_checkpoints.final, "body_timeout_s": 3})


def _ok(url: str, timeout: float = 30.0) -> float:
    started = time.monotonic()
    resp = httpx.post(f"{url}/", json={"state": [1]}, timeout=timeout)
    assert resp.status_code == 200, resp.text
    return time.monotonic() - started


def _json_error(answer, status: int, kind: str) -> None:
    assert answer.status == status, (answer.status, answer.body[:300], answer.error)
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    assert json.loads(answer.body)["error"]["kind"] == kind


def test_idle_connection_flood_does_not_block_traffic(fast_url: str) -> None:
    host, port = host_port(fast_url)
    idle = [socket.create_connection((host, port), timeout=10) for _ in range(MAXCONN + 64)]
    try:
        slowest = max(_ok(fast_url, timeout=60) for _ in range(6))
        assert slowest < CUT_OFF_S, f"a request waited {slowest:.1f} s behind {len(idle)} idle connections"
        deadline = time.monotonic() + CUT_OFF_S
        for sock in idle:  # HAProxy closes every idle connection after timeout http-request
            sock.settimeout(max(deadline - time.monotonic(), 0.1))
            try:
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    finally:
        for sock in idle:
            sock.close()


def _trickle(url: str, head: bytes, parts: list[bytes], pause_s: float = 0.5):
    return exchange(url, head, parts, pause_s=pause_s, read_timeout_s=CUT_OFF_S * 2)


def test_trickled_headers_are_cut_off_while_others_are_served(fast_url: str) -> None:
    host, port = host_port(fast_url)
    results: list = []
    head = f"GET /fast/healthz HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
    threads = [
        threading.Thread(target=lambda: results.append(_trickle(fast_url, head, [b"X-Slow: 1\r\n"] * 60)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    _ok(fast_url)
    for t in threads:
        t.join(CUT_OFF_S * 3)
    assert len(results) == 8
    for answer in results:
        assert answer.seconds < CUT_OFF_S, f"a header trickle was held {answer.seconds:.1f} s"
        assert answer.status in (0, 408), answer  # 408 page or a closed socket, never a 200


@pytest.mark.parametrize(
    ("parts", "pause"),
    [([b"{"] + [b" "] * 60, 0.5), ([b'{"state": [1'], 0.0)],
    ids=["body-trickled-a-byte-at-a-time", "content-length-promises-more-than-sent"],
)
def test_slow_or_short_bodies_get_a_json_408(fast_url: str, parts: list[bytes], pause: float) -> None:
    head = request_head(
        f"{fast_url}/", headers={"Content-Type": "application/json", "Content-Length": "1000"}
    )
    answer = exchange(f"{fast_url}/", head, parts, pause_s=pause, read_timeout_s=CUT_OFF_S * 2)
    assert answer.seconds < CUT_OFF_S, f"held {answer.seconds:.1f} s"
    _json_error(answer, 408, "timeout")
    _ok(fast_url)


def test_body_stalled_after_the_first_buffer_gets_408_from_the_replica(fast_url: str) -> None:
    """Past HAProxy's 16 KiB buffer the body streams to the replica; its body_timeout_s (3 s) ends it."""
    head = request_head(
        f"{fast_url}/", headers={"Content-Type": "application/json", "Content-Length": "100000"}
    )
    answer = exchange(f"{fast_url}/", head, [b" " * 40_000], read_timeout_s=60)
    _json_error(answer, 408, "timeout")
    _ok(fast_url)


def test_oversized_bodies_get_413_through_haproxy(fast_url: str) -> None:
    declared = request_head(
        f"{fast_url}/", headers={"Content-Type": "application/json", "Content-Length": str(50 * MIB)}
    )
    answer = exchange(f"{fast_url}/", declared, [b" " * 65536] * 64, read_timeout_s=30)
    _json_error(answer, 413, "too_large")
    assert answer.seconds < CUT_OFF_S
    chunked = request_head(
        f"{fast_url}/", headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    )
    block = b" " * (256 * 1024)
    parts = [b"%x\r\n%s\r\n" % (len(block), block)] * 128 + [b"0\r\n\r\n"]
    _json_error(exchange(f"{fast_url}/", chunked, parts, read_timeout_s=60), 413, "too_large")
    _ok(fast_url)


def _random_methods(n: int) -> list[str]:
    rng = random.Random(14)
    return ["X" + "".join(rng.choices(string.ascii_uppercase, k=10)) for _ in range(n)]


def _http_request_series(fast: FastIngress) -> str:
    discovery = json.loads((fast.cluster.temp_dir / "prom_metrics_service_discovery.json").read_text())
    text = ""
    for target in discovery[0]["targets"]:
        try:
            text += httpx.get(f"http://{target}/metrics", timeout=10).text
        except httpx.HTTPError:
            continue
    return "\n".join(line for line in text.splitlines() if line.startswith("ray_serve_num_http_requests"))


def test_unknown_methods_get_a_json_405_and_add_no_metric_series(
    fast: FastIngress, fast_url: str, wait
) -> None:
    methods = _random_methods(30)
    for method in methods:
        resp = httpx.request(method, f"{fast_url}/", timeout=30)
        assert resp.status_code == 405, (method, resp.text)
        assert resp.json()["error"]["kind"] == "method_not_allowed"
    for _ in range(3):
        _ok(fast_url)
    # Serve's HTTP metrics (from HAProxy's per-request log) show the normal requests ...
    series = wait(lambda: (s := _http_request_series(fast)) and 'method="POST"' in s and s, timeout=90)
    # ... and not one of the unknown methods: each would be a new series.
    labels = set(re.findall(r'method="([^"]*)"', series))
    assert not labels & set(methods), labels
    assert labels <= {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "<BADREQ>"}, labels


def _non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = probe.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


@pytest.mark.parametrize("variable", ["RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"])
def test_haproxy_stats_and_metrics_listen_on_loopback_only(
    fast: FastIngress, fast_url: str, variable: str
) -> None:
    port = int(fast.env[variable])
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass  # listening on loopback
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback address to try")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ip, port), timeout=10).close()
    for config in fast.haproxy_configs():
        text = config.read_text()
        assert f"bind 127.0.0.1:{port}" in text and f"*:{port}" not in text and f" :{port}" not in text


@pytest.mark.parametrize("where", ["url", "header"])
def test_over_long_url_or_header_is_refused_quickly(fast_url: str, where: str) -> None:
    """HAProxy answers these itself, before any app: 400 at once (its own HTML page: see docs/serving.md)."""
    host, port = host_port(fast_url)
    path = "/fast/" + ("a" * 20_000 if where == "url" else "")
    extra = f"X-Long: {'a' * 20_000}\r\n" if where == "header" else ""
    head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    answer = exchange(fast_url, head, read_timeout_s=30)
    assert answer.status == 400 and answer.seconds < CUT_OFF_S, answer
    _ok(fast_url)


def test_haproxy_config_carries_the_hardening(fast: FastIngress, fast_url: str) -> None:
    configs = fast.haproxy_configs()
    assert configs, f"no haproxy.cfg under {fast.state_dir}"
    for config in configs:
        text = config.read_text()
        assert f"timeout http-request {HTTP_REQUEST_TIMEOUT_S}s" in text
        assert "timeout client 10s" in text and f"maxconn {MAXCONN}" in text
        assert "timeout http-keep-alive 5s" in text
        assert Path(config.parent / "rlops-pages" / "405.json").is_file()
