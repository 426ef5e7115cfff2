"""Fixtures for the Kubernetes packaging tests; the helpers live in ``tests/k8s/charts.py``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.k8s import charts
from tests.k8s.charts import (  # re-exported: other test modules still import them from here
    CHART,
    CHECKPOINT,
    KIND_VALUES,
    MANIFESTS,
    POLICYROLLOUT_CRD,
    REPO_ROOT,
    SCENARIOS,
    TOOLS_BIN,
    TOOLS_PYTHON,
    Rendered,
    helm_env,
    kuberay_crd,
    load_docs,
    plain_manifest_docs,
    render,
    run_helm,
    tool,
)

__all__ = [
    "CHART",
    "CHECKPOINT",
    "KIND_VALUES",
    "MANIFESTS",
    "POLICYROLLOUT_CRD",
    "REPO_ROOT",
    "SCENARIOS",
    "TOOLS_BIN",
    "TOOLS_PYTHON",
    "Rendered",
    "helm_env",
    "kuberay_crd",
    "load_docs",
    "plain_manifest_docs",
    "render",
    "run_helm",
    "tool",
]


def __getattr__(name: str) -> Any:
    """``KUBERAY_CRDS``: resolved when imported, so that ``--kuberay-crds`` is already known."""
    if name == "KUBERAY_CRDS":
        return charts.kuberay_crds_dir()
    raise AttributeError(name)


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    """Every scenario in SCENARIOS, rendered once per session."""
    out: dict[str, Rendered] = {}
    for name, args in SCENARIOS.items():
        text = render(*args)
        out[name] = Rendered(name, text, load_docs(text))
    return out
