"""Where the repository is and how to get a free loopback port (shared by every test tier)."""

from __future__ import annotations

from pathlib import Path

from rlops_demo.cluster import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["REPO_ROOT", "free_port"]
