"""An in-memory Serve config standing in for KubeRay/Serve in engine-level tests, and a settable clock."""

from __future__ import annotations

from rlops_operator import serveconfig
from rlops_operator.targets import Health, Lineage

from tests.operator.conftest import SERVE_CONFIG


class ConfigTarget:
    """A Serve config in memory; ``state`` is what health() reports for the configured checkpoint."""

    def __init__(self, uri: str) -> None:
        self.text = SERVE_CONFIG.format(uri=uri)
        self.applied: list[str] = []
        self.state = "healthy"

    def describe(self) -> str:
        return "in-memory config"

    def current_checkpoint(self) -> str | None:
        return serveconfig.checkpoint_of(self.text, "corridor", "PolicyServer")

    def apply(self, checkpoint_uri: str, lineage: Lineage) -> None:
        self.text = serveconfig.with_checkpoint(self.text, "corridor", "PolicyServer", checkpoint_uri)
        self.applied.append(checkpoint_uri)

    def health(self, checkpoint_uri: str) -> Health:
        return Health(self.state, f"state {self.state}")


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t
