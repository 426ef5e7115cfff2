"""The README's promise: its commands are the Makefile's targets, and CI runs every one of them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_commands_are_make_targets_that_ci_runs():
    commands = _readme_commands()
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        target = command.split()[1]
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"Makefile has no {target} target"
        assert command in ci, f".ci/run does not run {command!r}"


def test_readme_links_point_at_files():
    text = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in link:
            assert (ROOT / link).exists(), f"README links to missing {link}"
