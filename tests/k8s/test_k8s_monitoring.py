"""Monitoring in the chart: the Grafana dashboard ConfigMap, the ServiceMonitor and the PodMonitor.

Static checks with the real helm binary: off by default (so manifests/ do not change), what each
object selects really matches the operator's metrics Service and the RayService's Ray pods, the
dashboard JSON has Grafana's structure, and every query names a metric the code exports
(tests/dashboard_queries.py reads the names from the code). The queries run against a real
Prometheus in tests/test_grafana_prometheus.py. No Prometheus Operator CRD schemas are available
offline, so ServiceMonitor/PodMonitor are checked field by field here, not by schema.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.dashboard_queries import (
    DASHBOARD,
    all_panels,
    exported_names,
    load_dashboard,
    metric_names,
    queries,
)
from tests.k8s.conftest import CHECKPOINT, load_docs, render, run_helm

ON = ["--set", "monitoring.enabled=true"]
SERVE = ["--set", "serve.enabled=true", "--set", f"serve.checkpointUri={CHECKPOINT}"]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def test_monitoring_is_off_by_default() -> None:
    docs = load_docs(render(*SERVE))
    assert not of_kind(docs, "ServiceMonitor") and not of_kind(docs, "PodMonitor")
    assert not [d for d in of_kind(docs, "ConfigMap") if "grafana" in d["metadata"]["name"]]


def test_dashboard_configmap_is_labelled_for_grafanas_sidecar_and_carries_the_json() -> None:
    docs = load_docs(render(*ON))
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-grafana-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "rlops"
    assert json.loads(cm["data"]["rlops-rollout.json"]) == load_dashboard()


def test_dashboard_label_namespace_and_folder_annotation_are_settable() -> None:
    args = [
        *ON,
        "--set",
        "monitoring.dashboard.label=my_dashboards",
        "--set",
        "monitoring.dashboard.labelValue=yes",
    ]
    args += ["--set", "monitoring.dashboard.namespace=monitoring"]
    args += ["--set", "monitoring.dashboard.annotations.grafana_folder=rlops"]
    (cm,) = [d for d in of_kind(load_docs(render(*args)), "ConfigMap") if "grafana" in d["metadata"]["name"]]
    assert cm["metadata"]["labels"]["my_dashboards"] == "yes"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "rlops"}


def test_servicemonitor_selects_the_operators_metrics_service() -> None:
    docs = load_docs(render(*ON, "--set", "monitoring.labels.release=kube-prometheus-stack"))
    (sm,) = of_kind(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    services = [
        s
        for s in of_kind(docs, "Service")
        if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert len(services) == 1, [s["metadata"]["name"] for s in services]
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"] and "metrics" in port_names
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [services[0]["metadata"]["namespace"]]
    # and the Service really reaches the operator pod's metrics port
    (deployment,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")]
    pod = deployment["spec"]["template"]
    assert services[0]["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container_ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert "metrics" in container_ports


def test_servicemonitor_without_the_metrics_service_fails_with_a_clear_message() -> None:
    result = run_helm(
        "template", "r", str(DASHBOARD.parents[1]), *ON, "--set", "operator.metricsService=false", check=False
    )
    assert result.returncode != 0
    assert "operator.metricsService" in result.stderr


def test_podmonitor_selects_every_ray_pod_of_the_rayservice() -> None:
    docs = load_docs(render(*ON, *SERVE))
    (pm,) = of_kind(docs, "PodMonitor")
    (rs,) = of_kind(docs, "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        assert pm["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    # KubeRay names Ray's metrics container port `metrics` (8080) on head and workers.
    assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["metrics"]
    # without a RayService there is nothing to scrape: no PodMonitor
    assert not of_kind(load_docs(render(*ON)), "PodMonitor")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "monitoring.interval=soon"], "interval"),
        (["--set", "monitoring.scrapeEverything=true"], "scrapeEverything"),
        (["--set", "monitoring.dashboard.namespace=Not_A_Namespace"], "namespace"),
    ],
)
def test_values_schema_refuses_bad_monitoring_values(args: list[str], message: str) -> None:
    result = run_helm("template", "r", str(DASHBOARD.parents[1]), *args, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_dashboard_has_grafanas_structure() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "rlops-rollout" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    panels = list(all_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("decisions", "rollout duration", "requests", "errors", "latency", "stale checkpoint"):
        assert topic in titles, f"no panel about {topic}"


def test_every_query_names_metrics_the_code_exports() -> None:
    exported = set().union(*exported_names().values())
    found = set()
    for query in queries(load_dashboard()):
        names = metric_names(query.expr)
        assert names, f"{query.panel}/{query.ref_id} selects no metric: {query.expr}"
        unknown = names - exported
        assert not unknown, f"{query.panel}/{query.ref_id} uses metrics nothing exports: {unknown}"
        found |= names
    sources = exported_names()
    assert found & sources["operator"] and found & sources["serving"] and found & sources["ray_serve"]
    assert "ray_rlops_serve_checkpoint_stale" in found


def test_the_name_check_can_fail() -> None:
    """A made-up or mistyped metric is caught (and labels, functions and windows are not names)."""
    exported = set().union(*exported_names().values())
    expr = (
        "histogram_quantile(0.9, sum by (le, application) "
        '(rate(ray_serve_deployment_processing_latency_ms_bucket{application=~"x"}[5m])))'
    )
    assert metric_names(expr) == {"ray_serve_deployment_processing_latency_ms_bucket"}
    assert metric_names("sum(rate(rlops_promotion_total[1m]))") - exported == {"rlops_promotion_total"}
    assert metric_names("ray_rlops_serve_checkpoint_stale > bool 0") == {"ray_rlops_serve_checkpoint_stale"}
