"""The leaner request path through real Serve and HTTP: which inference path is live, lone requests
evaluated at once and concurrent ones gathered by ``@serve.batch``, and the per-request counters (tallied
as ints, pushed every second) exported under the same series and labels as before.

Real Ray Serve on the shared test cluster, deployed through the dashboard's REST API; the counters are read
from Ray's own Prometheus endpoint on the node.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import httpx
import pytest

from workloads.serving.fastpath import FAST

pytestmark = pytest.mark.slow


def _metrics_text() -> str:
    import ray

    texts = []
    for node in ray.nodes():
        if node.get("Alive") and node.get("MetricsExportPort"):
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            texts.append(httpx.get(url, timeout=30).text)
    return "\n".join(texts)


def _series(name: str, app: str) -> dict[str, float]:
    """``{label set without the app: value}`` of one counter for one application."""
    pattern = re.compile(rf"^{name}\{{([^}}]*)\}} (\S+)$", re.MULTILINE)
    out: dict[str, float] = {}
    for labels, value in pattern.findall(_metrics_text()):
        if f'application="{app}"' in labels:
            own = ",".join(sorted(p for p in labels.split(",") if re.match(r"(shape|action|slot)=", p)))
            out[own] = out.get(own, 0.0) + float(value)
    return out


def _inference(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/metadata", timeout=30).json()["inference"]


def test_metadata_names_the_inference_path(corridor_url: str) -> None:
    """``/metadata.inference`` says which path the live champion takes, and why."""
    inference = _inference(corridor_url)
    assert inference["path"] == FAST and "default" in inference["reason"]
    body = {"observations": [[1.0], [6.0]], "deterministic": True}
    answer = httpx.post(f"{corridor_url}/", json=body, timeout=30)
    assert answer.status_code == 200 and answer.json()["actions"] == [1, 0], answer.text


def _burst(url: str, clients: int, each: int) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(timeout=60) as c:
            for j in range(each):
                resp = c.post(f"{url}/", json={"state": [(i + j) % 7]})
                with lock:
                    (answers if resp.status_code == 200 else failures).append(
                        resp.json() if resp.status_code == 200 else resp.text[:200]
                    )

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures, failures[:3]
    return answers


def test_lone_requests_direct_concurrent_batched_and_counted(serve_apps, corridor_checkpoints, wait) -> None:
    app = "fp-batch"
    url = serve_apps.deploy(app, {"checkpoint_uri": corridor_checkpoints.final})
    try:
        assert _inference(url)["single_requests"] == {"direct": 0, "batched": 0}
        with httpx.Client(timeout=60) as c:
            for s in range(7):
                resp = c.post(f"{url}/", json={"state": [s], "deterministic": True})
                assert resp.status_code == 200 and resp.json()["action"] in (0, 1), resp.text
        assert _inference(url)["single_requests"] == {"direct": 7, "batched": 0}, "one client: never batched"

        singles = 7
        for _ in range(10):  # concurrency is up to the scheduler: burst until two requests met
            answers = _burst(url, clients=16, each=8)
            singles += len(answers)
            assert all(a["action"] in (0, 1) and a["policy"] == "champion" for a in answers)
            if _inference(url)["single_requests"]["batched"] > 0:
                break
        counts = _inference(url)["single_requests"]
        assert counts["batched"] > 0, f"16 concurrent clients were never gathered into a batch: {counts}"
        assert counts["direct"] + counts["batched"] == singles

        with httpx.Client(timeout=60) as c:
            for _ in range(3):
                resp = c.post(f"{url}/", json={"observations": [[1], [6]], "deterministic": True})
                assert resp.status_code == 200 and resp.json()["actions"] == [1, 0], resp.text

        # the tallies reach Ray's counters under the same names and labels as one inc per request did
        def exported() -> bool:
            requests = _series("ray_rlops_serve_requests_total", app)
            slots = _series("ray_rlops_serve_slot_requests_total", app)
            actions = _series("ray_rlops_serve_actions_total", app)
            return (
                requests == {'shape="single"': singles, 'shape="batch"': 3}
                and slots == {'slot="champion"': singles + 3}
                and set(actions) <= {'action="0"', 'action="1"'}
                and sum(actions.values()) == singles + 6
                and actions.get('action="0"', 0) >= 3
                and actions.get('action="1"', 0) >= 3
            )

        wait(exported, timeout=90)

        # a batch asked to wait for company (batch_wait_timeout_s > 0) gathers even a lone request
        serve_apps.deploy(app, {"checkpoint_uri": corridor_checkpoints.final, "batch_wait_timeout_s": 0.002})
        wait(lambda: _lone_request_is_batched(url))
    finally:
        serve_apps.remove(app)


def _lone_request_is_batched(url: str) -> bool:
    before = _inference(url)["single_requests"]
    resp = httpx.post(f"{url}/", json={"state": [2]}, timeout=60)
    after = _inference(url)["single_requests"]
    return resp.status_code == 200 and after == {"direct": before["direct"], "batched": before["batched"] + 1}
