"""An in-memory Serve config standing in for KubeRay/Serve in engine-level tests, and a settable clock."""

from __future__ import annotations

from rlops_operator import serveconfig
from rlops_operator.targets import Health, Lineage, TargetError, TargetMissing

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

    def current_serving(self) -> serveconfig.Serving:
        return serveconfig.serving_of(self.text, "corridor", "PolicyServer")

    def apply_serving(self, serving: serveconfig.Serving, lineage: Lineage) -> None:
        assert serving.checkpoint_uri
        self.text = serveconfig.with_checkpoint(
            self.text, "corridor", "PolicyServer", serving.checkpoint_uri, serving
        )
        self.applied.append(serving.checkpoint_uri)
        self.servings = [*getattr(self, "servings", []), serving]


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class FlakyTarget(ConfigTarget):
    """A ConfigTarget whose calls can fail: ``down`` (a TargetError for every call), ``missing_reads``
    (the next N health reads find no application), and call counters."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.down: TargetError | None = None
        self.apply_down: TargetError | None = None
        self.missing_reads = 0
        self.calls: dict[str, int] = {"current": 0, "apply": 0, "health": 0}

    def _maybe_fail(self, what: str) -> None:
        self.calls[what] += 1
        if self.down is not None:
            raise self.down

    def current_checkpoint(self) -> str | None:
        self._maybe_fail("current")
        return super().current_checkpoint()

    def apply(self, checkpoint_uri: str, lineage: Lineage) -> None:
        self._maybe_fail("apply")
        if self.apply_down is not None:
            raise self.apply_down
        super().apply(checkpoint_uri, lineage)

    def health(self, checkpoint_uri: str) -> Health:
        self._maybe_fail("health")
        if self.missing_reads > 0:
            self.missing_reads -= 1
            raise TargetMissing("ApplicationMissing", "application corridor not found")
        return super().health(checkpoint_uri)

    def edit_by_hand(self, uri: str) -> None:
        """Someone changes the served checkpoint outside the operator."""
        self.text = serveconfig.with_checkpoint(self.text, "corridor", "PolicyServer", uri)
