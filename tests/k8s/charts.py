"""Helpers for the Kubernetes packaging tests: pinned tools, helm rendering, the KubeRay CRD folder.

The tools are installed by ``make tools`` (scripts/install_tools.sh), which ``make test`` runs first.
Rendering uses the real helm binary; nothing here needs a cluster.

The KubeRay 1.7.0 CRDs (``ray.io_*.yaml``) are read from ``--kuberay-crds DIR`` (a pytest option), else
``$RLOPS_KUBERAY_CRDS``, else ``../shared/kuberay-crds``. Where they are missing, the schema checks skip
with the reason locally and fail under CI (``CI=true``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.paths import REPO_ROOT
from tests.k8s.schemas import load_crd

CHART = REPO_ROOT / "charts" / "rlops"
MANIFESTS = REPO_ROOT / "manifests"
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
TOOLS_PYTHON = REPO_ROOT / ".tools" / "venv" / "bin" / "python"
DEFAULT_KUBERAY_CRDS = REPO_ROOT.parent / "shared" / "kuberay-crds"
POLICYROLLOUT_CRD = CHART / "crds" / "policyrollouts.rlops.io.yaml"
KIND_VALUES = CHART / "values-kind.yaml"
CHECKPOINT = "s3://rlops/experiments/seed/PPO_corridor_00000/checkpoint_000002"

# Value sets that together switch on every template and every RBAC branch.
SCENARIOS: dict[str, list[str]] = {
    "defaults": [],
    "kind-full": [
        "--values", str(KIND_VALUES),
        "--set", "serve.enabled=true", "--set", "rollout.enabled=true",
        "--set", f"serve.checkpointUri={CHECKPOINT}",
    ],
    "gpu-full": [
        "--set", "serve.enabled=true", "--set", "rollout.enabled=true",
        "--set", f"serve.checkpointUri={CHECKPOINT}", "--set-json", "rollout.minMetric=5.5",
    ],
    "cluster-peering": ["--set", "operator.peering=rlops", "--set", "operator.replicas=2"],
    "namespaced": ["--set", "operator.namespaces={team-a,team-b}"],
    "namespaced-peering": [
        "--set", "operator.namespaces={team-a,team-b}", "--set", "operator.peering=rlops",
    ],
}  # fmt: skip


def tool(name: str) -> str:
    """Path of a pinned tool; skips when `make tools` has not been run."""
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.skip(f"{path} missing: run `make tools` (scripts/install_tools.sh)")
    return str(path)


def helm_env() -> dict[str, str]:
    """helm with its caches in a private folder (it writes nothing else for `template` and `lint`)."""
    home = Path(os.environ.get("RLOPS_HELM_HOME", "/tmp/rlops-helm-home"))
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("helm"), *args], capture_output=True, text=True, env=helm_env(), check=check, timeout=120
    )


def render(*args: str, release: str = "rlops", namespace: str = "rlops") -> str:
    """`helm template` output (with CRDs) for the given value arguments."""
    return run_helm("template", release, str(CHART), "--namespace", namespace, "--include-crds", *args).stdout


def load_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@dataclass(frozen=True)
class Rendered:
    """One rendered scenario."""

    name: str
    text: str
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc.get("kind") == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"{self.name}: expected one {kind}, found {len(found)}"
        return found[0]


def plain_manifest_docs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, document) for every document in manifests/."""
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in load_docs(path.read_text()):
            yield path.name, doc


_crds_option: Path | None = None


def use_kuberay_crds(path: str | Path | None) -> None:
    """Set the folder given with ``--kuberay-crds`` (called from ``pytest_configure``)."""
    global _crds_option
    _crds_option = Path(path).expanduser() if path else None


def kuberay_crds_dir() -> Path:
    """Where the KubeRay CRDs are: ``--kuberay-crds``, else ``$RLOPS_KUBERAY_CRDS``, else the default."""
    if _crds_option is not None:
        return _crds_option
    env = os.environ.get("RLOPS_KUBERAY_CRDS", "").strip()
    return Path(env).expanduser() if env else DEFAULT_KUBERAY_CRDS


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def kuberay_crd_path(kind: str) -> Path:
    """The CRD file for RayJob / RayService / RayCluster; skips (locally) or fails (CI) when missing."""
    folder = kuberay_crds_dir()
    path = folder / f"ray.io_{kind.lower()}s.yaml"
    if not path.exists():
        reason = (
            f"KubeRay CRD {path.name} not found in {folder}: pass --kuberay-crds DIR or set "
            "RLOPS_KUBERAY_CRDS to a folder with KubeRay 1.7.0's ray.io_*.yaml"
        )
        if under_ci():
            pytest.fail(f"{reason} (CI=true: missing schemas fail instead of skipping)", pytrace=False)
        pytest.skip(f"{reason}; schema check skipped")
    return path


def kuberay_crd(kind: str) -> dict[str, Any]:
    """KubeRay 1.7.0's CRD for ``kind`` (see :func:`kuberay_crd_path` for where it is read)."""
    return load_crd(str(kuberay_crd_path(kind)))
