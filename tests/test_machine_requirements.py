"""What a machine needs, said up front: the Makefile refuses a wrong Python and a missing wrk clearly.

These run the real ``make`` on the repository's Makefile. The venv goes to a temporary folder
(``VENV=``) so nothing of the checkout's ``.venv`` is touched; ``make bench`` runs with ``-o install``
(the install step is not redone) and a PATH on which wrk is missing and apt-get fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert MAKE, "make is not installed"
    return subprocess.run(
        [MAKE, "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or dict(os.environ),
    )


def test_make_refuses_a_python_that_is_not_3_11(tmp_path: Path) -> None:
    fake = _script(tmp_path / "python3.12", "echo 3.12")
    venv = tmp_path / "venv"
    result = _make("install", f"PYTHON={fake}", f"VENV={venv}")
    assert result.returncode != 0
    assert "rlops needs Python 3.11" in result.stderr and "is 3.12" in result.stderr
    assert "make PYTHON=python3.11" in result.stderr
    assert not venv.exists()  # failed before creating anything


def test_make_refuses_a_missing_python(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    result = _make("install", f"PYTHON={tmp_path / 'no-such-python'}", f"VENV={venv}")
    assert result.returncode != 0
    assert "not a working Python" in result.stderr
    assert not venv.exists()


def test_make_accepts_python_3_11_by_name() -> None:
    """``make PYTHON=python3.11`` passes the check (dry run: nothing is installed)."""
    python311 = shutil.which("python3.11")
    assert python311, "python3.11 is this project's Python and must be on PATH"
    result = _make("-n", "install", "PYTHON=python3.11", "VENV=/nonexistent/venv")
    assert result.returncode == 0, result.stderr
    version_check = result.stdout.split("python3.11 -m venv")[0]
    check = subprocess.run(["bash", "-c", version_check], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def test_make_bench_says_it_runs_apt_get_and_fails_clearly_without_wrk(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "apt-get", 'echo "E: Could not open lock file (are you root?)" >&2; exit 100')
    env = {**os.environ, "PATH": str(bin_dir)}
    result = _make("-o", "install", "bench", env=env)
    assert result.returncode != 0
    assert "installing Debian's wrk package with apt-get" in result.stdout
    assert "could not install wrk with apt-get" in result.stderr
    assert "apt-get install wrk" in result.stderr


def test_readme_says_what_a_machine_needs() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## What a machine needs")[1].split("\n## ")[0]
    for needed in ("Python 3.11", "make PYTHON=python3.11", "wrk", "apt-get", "chromium", "prometheus"):
        assert needed in section, f"README's machine section does not mention {needed!r}"
