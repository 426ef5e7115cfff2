"""Operator settings from environment variables (documented in docs/operator.md)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorSettings:
    """How the kopf operator runs: which namespaces, peering, ports, event posting level."""

    namespaces: tuple[str, ...] = ()
    peering: str = ""
    health_port: int = 8080
    metrics_port: int = 9090
    posting_level: int = logging.INFO
    tick_s: float = 1.0

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        env = dict(os.environ if env is None else env)
        names = tuple(n.strip() for n in env.get("RLOPS_NAMESPACES", "").split(",") if n.strip())
        level_name = env.get("RLOPS_POSTING_LEVEL", "INFO").strip().upper() or "INFO"
        level = logging.getLevelName(level_name)
        if not isinstance(level, int):
            raise ValueError(f"RLOPS_POSTING_LEVEL={level_name!r} is not a logging level")
        try:
            return cls(
                namespaces=names,
                peering=env.get("RLOPS_PEERING", "").strip(),
                health_port=int(env.get("RLOPS_HEALTH_PORT", "8080")),
                metrics_port=int(env.get("RLOPS_METRICS_PORT", "9090")),
                posting_level=level,
                tick_s=float(env.get("RLOPS_TICK_SECONDS", "1")),
            )
        except ValueError as exc:
            raise ValueError(f"bad operator setting: {exc}") from exc
