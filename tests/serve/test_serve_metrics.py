"""Metrics that stay true (issue 14 §4): the stale gauge keeps reporting while ``last_error`` holds, each
answer's ``count`` is its own, and ``/metadata.capture.written`` is cumulative across settings changes.

Real Ray Serve on the shared cluster; the gauge is read from Ray's own Prometheus endpoint on the node.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _metrics_text() -> str:
    import ray

    texts = []
    for node in ray.nodes():
        if node.get("Alive") and node.get("MetricsExportPort"):
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            texts.append(httpx.get(url, timeout=30).text)
    return "\n".join(texts)


def _stale_values(app: str) -> list[float]:
    pattern = re.compile(r"^ray_rlops_serve_checkpoint_stale\{([^}]*)\} (\S+)$", re.MULTILINE)
    return [float(v) for labels, v in pattern.findall(_metrics_text()) if f'application="{app}"' in labels]


def test_stale_gauge_keeps_reporting_while_last_error_is_set(
    serve_apps, corridor_checkpoints, tmp_path: Path, wait
) -> None:
    url = serve_apps.deploy("stalegauge", {"checkpoint_uri": corridor_checkpoints.final})
    bad = str(tmp_path / "never-written")
    serve_apps.deploy("stalegauge", {"checkpoint_uri": bad})
    wait(lambda: httpx.get(f"{url}/metadata", timeout=30).json()["last_error"])
    wait(lambda: _stale_values("stalegauge") == [1.0], timeout=60)
    failed_at = time.monotonic()
    # Ray evicts a gauge not re-reported within two export intervals (about 20 s): watch well past that.
    seen = []
    while time.monotonic() - failed_at < 45:
        seen.append(_stale_values("stalegauge"))
        assert httpx.get(f"{url}/metadata", timeout=30).json()["last_error"], "last_error was cleared"
        time.sleep(3)
    assert all(values == [1.0] for values in seen), seen
    serve_apps.deploy("stalegauge", {"checkpoint_uri": corridor_checkpoints.final})
    wait(lambda: httpx.get(f"{url}/metadata", timeout=30).json()["last_error"] is None)
    wait(lambda: _stale_values("stalegauge") == [0.0], timeout=60)
    serve_apps.remove("stalegauge")


def test_each_concurrent_answer_has_its_own_count(corridor_url: str) -> None:
    counts: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(timeout=60) as c:
            for j in range(25):
                body = {"observations": [[1], [6]]} if (i + j) % 5 == 0 else {"state": [1 + j % 6]}
                resp = c.post(f"{corridor_url}/", json=body)
                with lock:
                    if resp.status_code == 200:
                        counts.append(resp.json()["count"])
                    else:
                        failures.append(resp.text[:200])

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures, failures[:3]
    assert len(counts) == 16 * 25
    duplicates = len(counts) - len(set(counts))
    assert duplicates == 0, f"{duplicates} of {len(counts)} concurrent answers shared a count"


def test_capture_written_is_cumulative_across_settings_changes(
    serve_apps, corridor_checkpoints, tmp_path: Path, wait
) -> None:
    def configure(flush_records: int) -> str:
        capture = {"enabled": True, "root": str(tmp_path / "capture"), "sample_rate": 1.0}
        capture.update(flush_seconds=0.3, flush_records=flush_records)
        return serve_apps.deploy(
            "capturecount", {"checkpoint_uri": corridor_checkpoints.final, "capture": capture}
        )

    def written() -> int:
        return httpx.get(f"{url}/metadata", timeout=30).json()["capture"]["written"]

    url = configure(200)
    for _ in range(5):
        assert httpx.post(f"{url}/", json={"state": [1]}, timeout=30).status_code == 200
    wait(lambda: written() == 5)
    configure(100)  # a settings change: a new writer
    for _ in range(3):
        assert httpx.post(f"{url}/", json={"state": [1]}, timeout=30).status_code == 200

    def capture_status() -> dict:
        return httpx.get(f"{url}/metadata", timeout=30).json()["capture"]

    status = wait(lambda: (s := capture_status())["written"] >= 8 and s)
    assert status["written"] == 8 and status["current_writer"]["written"] == 3, status
    files = list((tmp_path / "capture").rglob("*.jsonl"))
    assert sum(len(f.read_text().splitlines()) for f in files) == 8
    serve_apps.remove("capturecount")
