"""The Grafana dashboard's PromQL queries, the metric names they use, and the names the code exports.

Exported names are read from the code that defines the metrics (ast, no imports), with the exposition
rules of each library:

- the operator (``prometheus_client``): a Counter named ``x_total`` is exposed as ``x_total``, a
  Histogram ``h`` as ``h_bucket``/``h_sum``/``h_count``, a Gauge as its name;
- ``ray.serve.metrics`` in ``workloads/serving/metrics.py`` and Ray Serve's own metrics (Ray's code in
  the venv): Ray's Prometheus endpoint prefixes ``ray_``, adds ``_total`` to counters and
  ``_bucket``/``_sum``/``_count`` to histograms (checked against a live scrape in
  tests/test_grafana_prometheus.py).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "charts" / "rlops" / "dashboards" / "rlops-rollout.json"
OPERATOR_METRICS = ROOT / "operator" / "rlops_operator" / "metrics.py"
SERVE_METRICS = ROOT / "workloads" / "serving" / "metrics.py"

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_PROMQL_WORDS |= {"and", "or", "unless", "inf", "nan"}


@dataclass(frozen=True)
class Query:
    panel: str
    ref_id: str
    expr: str


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(panel["title"], target["refId"], target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels and literals removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range windows
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function
        if match.group(0) in _PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


def grafana_to_promql(expr: str, rate_interval: str = "30s", application: str = ".*") -> str:
    """The query Grafana would send: its variables replaced by concrete values."""
    return expr.replace("$__rate_interval", rate_interval).replace("$application", application)


def _defined(path: Path, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(kind, name) for every ``Counter``/``Gauge``/``Histogram`` call with a literal name in ``path``."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        kind = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if kind not in ("Counter", "Gauge", "Histogram") or not node.args:
            continue
        first = node.args[0]
        if (
            isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and first.value.startswith(prefix)
        ):
            yield kind, first.value


def _samples(kind: str, name: str, *, ray: bool) -> set[str]:
    if ray:
        name = f"ray_{name}"
        if kind == "Counter":
            return {f"{name}_total"}
    elif kind == "Counter":
        return {name if name.endswith("_total") else f"{name}_total"}
    if kind == "Histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def ray_serve_metric_files() -> list[Path]:
    import ray.serve

    return sorted(Path(ray.serve.__file__).parent.rglob("*.py"))


def exported_names() -> dict[str, set[str]]:
    """Exposed sample names by source: the operator, the policy server, Ray Serve."""
    operator = {s for k, n in _defined(OPERATOR_METRICS) for s in _samples(k, n, ray=False)}
    serving = {s for k, n in _defined(SERVE_METRICS) for s in _samples(k, n, ray=True)}
    ray_serve: set[str] = set()
    for path in ray_serve_metric_files():
        ray_serve |= {s for k, n in _defined(path, prefix="serve_") for s in _samples(k, n, ray=True)}
    return {"operator": operator, "serving": serving, "ray_serve": ray_serve}
