"""The import-linter contracts of issue 9 hold for the repository, and they do catch a forbidden import.

The second test runs the real ``lint-imports`` on a copy of the contracts with a probe module added,
so a contract that can never fail (a misspelt package, a missing ``include_external_packages``) is caught.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _run(cwd: Path, env_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(env_path) if env_path else ""}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_contracts_are_configured_and_kept() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert config["include_external_packages"] is True
    forbidden = {c["source_modules"][0]: set(c["forbidden_modules"]) for c in config["contracts"]}
    assert {"workloads", "rlops_operator", "ray", "torch"} <= forbidden["rlops_core"]
    assert {"workloads", "ray", "torch"} <= forbidden["rlops_operator"]
    result = _run(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize(
    ("package", "probe", "broken"),
    [
        ("rlops_core", "import torch\n", "rlops_core is not allowed to import torch"),
        ("rlops_core", "import ray\n", "rlops_core is not allowed to import ray"),
        ("rlops_core", "from workloads import serving\n", "rlops_core is not allowed to import workloads"),
        ("rlops_operator", "import workloads\n", "rlops_operator is not allowed to import workloads"),
        ("rlops_operator", "import torch\n", "rlops_operator is not allowed to import torch"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, package: str, probe: str, broken: str) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "rlops_core", tree / "rlops_core", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("workloads", "rlops_operator", "rlops_demo", "bench"):
        (tree / name).mkdir(exist_ok=True)
        (tree / name / "__init__.py").touch()
    (tree / "workloads" / "serving.py").touch()
    (tree / "pyproject.toml").write_text("[tool.importlinter]" + _importlinter_section())
    assert _run(tree, tree).returncode == 0  # the clean copy keeps every contract
    (tree / package / "layering_probe.py").write_text(probe)
    result = _run(tree, tree)
    assert result.returncode != 0 and broken in result.stdout, result.stdout[-3000:]


def _importlinter_section() -> str:
    """The ``[tool.importlinter]`` tables of pyproject.toml, verbatim."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[tool.importlinter]", 1)[1]
    end = section.find("\n[tool.")  # the next table that is not one of its [[...contracts]]
    return section if end == -1 else section[:end]
