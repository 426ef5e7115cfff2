"""The Grafana dashboard's queries against a real Prometheus (Debian's 2.42) scraping real targets.

Real parts: the shared Ray cluster with the policy server deployed through the dashboard's Serve REST
API and under load (good and invalid requests); the kopf operator as a process (its Kubernetes API is
kmock's emulator, as in tests/operator) promoting a second checkpoint on that Serve app through the
dashboard target and refusing a pointer outside its allowed prefixes; Prometheus scraping Ray's
metrics endpoints (from Ray's own service-discovery file, addresses moved to 127.0.0.1) and the
operator's ``/metrics``, every second, on loopback only.

Every query of every panel, with Grafana's variables filled in (``$application`` = this test's app),
must run without error; the queries on metrics that must exist by now must return data. Skips, with
the reason, when no ``prometheus`` binary is installed (``apt-get install prometheus``).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench.rollout_bench import build_ppo_checkpoints, deploy_app, wait_live
from rlops_core import checkpoints
from rlops_demo.cluster import free_port
from tests.dashboard_queries import grafana_to_promql, load_dashboard, metric_names, queries
from tests.operator.conftest import OperatorProcess
from tests.operator.kube import EmulatedCluster, rollout_path
from tests.waiting import wait_for

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus binary (apt-get install -y prometheus)"),
]
APP, ROUTE, NS, ROLLOUT = "grafana-corridor", "/grafana-corridor", "default", "grafana"
# Metrics that must have data once the app served requests (some rejected) and the operator promoted
# one checkpoint and refused one pointer. Rollbacks, poll errors and replica exceptions need faults
# this test does not cause: their queries must still run without error.
MUST_HAVE_DATA = {
    "rlops_promotions_total",
    "rlops_refusals_total",
    "rlops_rollout_duration_seconds_bucket",
    "rlops_rollout_duration_seconds_sum",
    "rlops_rollout_duration_seconds_count",
    "ray_serve_deployment_request_counter_total",
    "ray_serve_deployment_processing_latency_ms_bucket",
    "ray_rlops_serve_requests_total",
    "ray_rlops_serve_request_errors_total",
    "ray_rlops_serve_checkpoint_stale",
    "ray_rlops_serve_checkpoint_swaps_total",
    "ray_rlops_serve_checkpoint_load_seconds_bucket",
}


class Load:
    """Requests against the app until stopped: every tenth one invalid (a 422 the server counts)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.stop = threading.Event()
        self.codes: dict[int, int] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while not self.stop.is_set():
                body = {"state": [n % 7]} if n % 10 else {"state": ["not a number"]}
                try:
                    code = client.post(self.endpoint + "/", json=body).status_code
                except httpx.HTTPError:
                    code = 0
                self.codes[code] = self.codes.get(code, 0) + 1
                n += 1
                self.stop.wait(0.02)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


class Prometheus:
    """``prometheus`` on a loopback port with its own data folder, in its own process group."""

    def __init__(self, config: dict[str, Any], work: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work = work
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        assert PROMETHEUS
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.work / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=(self.work / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._ready, timeout=60, what="Prometheus /-/ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError((self.work / "prometheus.log").read_text()[-3000:])
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, promql: str) -> dict[str, Any]:
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        return resp.json()

    def targets(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def ray_targets(temp_dir: Path, work: Path) -> Path:
    """Ray's service-discovery file with every address moved to 127.0.0.1 (Ray listens on all)."""
    found = json.loads((temp_dir / "prom_metrics_service_discovery.json").read_text())
    for group in found:
        group["targets"] = [f"127.0.0.1:{t.rsplit(':', 1)[1]}" for t in group["targets"]]
    path = work / "ray_targets.json"
    path.write_text(json.dumps(found))
    return path


@pytest.fixture
def operator(tmp_path: Path, ray_cluster: Any) -> Iterator[tuple[EmulatedCluster, OperatorProcess]]:
    kube = EmulatedCluster(free_port())
    kube.start()
    host = ray_cluster.dashboard_url.removeprefix("http://")
    proc = OperatorProcess(
        kube.write_kubeconfig(tmp_path / "kubeconfig"),
        tmp_path,
        extra_env={"RLOPS_DASHBOARD_ALLOWED_HOSTS": host, "RAY_AUTH_TOKEN": ray_cluster.token},
    )
    proc.start()
    yield kube, proc
    proc.stop()
    kube.stop()


def _has_data(result: dict[str, Any]) -> bool:
    return result["status"] == "success" and bool(result["data"]["result"])


def test_every_dashboard_query_runs_on_prometheus_and_the_live_ones_return_data(
    ray_cluster: Any, serve_endpoint: Any, operator: tuple[EmulatedCluster, OperatorProcess], tmp_path: Path
) -> None:
    kube, op = operator
    root = tmp_path / "store"
    a, b = build_ppo_checkpoints(str(root), 2, experiment="grafana")
    deploy_app(ray_cluster.dashboard_url, ray_cluster.token, a, name=APP, route=ROUTE)
    endpoint = serve_endpoint.url + ROUTE
    wait_live(endpoint, a)
    pointer = checkpoints.pointer_uri(str(root), "grafana-channel")
    checkpoints.write_pointer(pointer, a)
    spec = {
        "pointer": pointer,
        "target": {
            "dashboardUrl": ray_cluster.dashboard_url,
            "application": APP,
            "deployment": "PolicyServer",
            "endpointUrl": endpoint,
        },
        "allowedPrefixes": [str(root)],
        "pollIntervalSeconds": 1,
        "rolloutTimeoutSeconds": 60,
    }
    meta = {"name": ROLLOUT, "namespace": NS}
    body = {"apiVersion": "rlops.io/v1alpha1", "kind": "PolicyRollout", "metadata": meta, "spec": spec}
    kube.request("POST", rollout_path(NS), body)

    prometheus = Prometheus(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "ray",
                    "file_sd_configs": [{"files": [str(ray_targets(ray_cluster.temp_dir, tmp_path))]}],
                },
                {
                    "job_name": "rlops-operator",
                    "static_configs": [{"targets": [f"127.0.0.1:{op.metrics_port}"]}],
                },
            ],
        },
        tmp_path,
    ).start()
    try:
        with Load(endpoint) as load:
            checkpoints.write_pointer(pointer, b)
            wait_live(endpoint, b, timeout=120)
            wait_for(
                lambda: "rlops_promotions_total{" in op.metrics(), timeout=60, what="a promotion counted"
            )
            checkpoints.write_pointer(pointer, str(tmp_path / "outside" / "checkpoint_000001"))
            wait_for(lambda: "rlops_refusals_total{" in op.metrics(), timeout=60, what="a refusal counted")

            def all_up() -> bool:
                targets = prometheus.targets()
                return bool(targets) and all(t["health"] == "up" for t in targets)

            wait_for(all_up, timeout=60, what="every scrape target up")
            dashboard = load_dashboard()
            required = [
                q
                for q in queries(dashboard)
                if metric_names(q.expr) <= MUST_HAVE_DATA and metric_names(q.expr)
            ]
            assert len(required) >= 10

            missing: list[str] = []

            rate_query = next(
                q for q in queries(dashboard) if (q.panel, q.ref_id) == ("Requests per second", "A")
            )

            def required_have_data() -> bool:
                missing[:] = [
                    f"{q.panel}/{q.ref_id}"
                    for q in required
                    if not _has_data(prometheus.query(grafana_to_promql(q.expr, application=APP)))
                ]
                # The request rate must be seen above 0 while the load still runs (a rate window can
                # slide past the load's end on a slow machine before the final queries below).
                rate = prometheus.query(grafana_to_promql(rate_query.expr, application=APP))
                if not any(float(r["value"][1]) > 0 for r in rate["data"]["result"]):
                    missing.append("Requests per second/A above 0")
                return not missing

            try:
                wait_for(required_have_data, timeout=180, interval=2, what="data for every required query")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; still without data: {missing}") from None
            results = {
                (q.panel, q.ref_id): prometheus.query(grafana_to_promql(q.expr, application=APP))
                for q in queries(dashboard)
            }
        assert load.codes.get(200, 0) > 50 and load.codes.get(422, 0) > 5, load.codes
    finally:
        prometheus.stop()

    for (panel, ref_id), result in results.items():
        assert result["status"] == "success", f"{panel}/{ref_id}: {result}"
    rps = results[("Requests per second", "A")]["data"]["result"]
    assert {r["metric"]["application"] for r in rps} == {APP}
    rejected = results[("Errors per second", "A")]["data"]["result"]
    assert {r["metric"].get("kind") for r in rejected} - {None}
    stale = results[("Stale checkpoint", "A")]["data"]["result"]
    assert stale and all(float(r["value"][1]) == 0 for r in stale)
    promotions = results[("Promotions (total)", "A")]["data"]["result"]
    assert [(r["metric"]["rollout"], float(r["value"][1])) for r in promotions] == [(f"{NS}/{ROLLOUT}", 1.0)]
    mean = results[("Rollout duration (applied → verified live)", "C")]["data"]["result"]
    assert mean and all(math.isfinite(float(r["value"][1])) and float(r["value"][1]) > 0 for r in mean)
