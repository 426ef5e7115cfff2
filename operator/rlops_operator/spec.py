"""What a PolicyRollout asks for, validated (from a custom resource's spec or from the CLI)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rlops_core import storage

from .progressive import ProgressiveSpec, ProgressiveSpecError
from .status import TargetRef


class SpecError(ValueError):
    """A PolicyRollout spec is invalid; the message names the field."""


@dataclass(frozen=True)
class TargetSpec:
    """A RayService (KubeRay) or a bare Ray cluster's dashboard, and the deployment to update."""

    application: str = "corridor"
    deployment: str = "PolicyServer"
    ray_service: str | None = None
    namespace: str | None = None
    dashboard_url: str | None = None
    endpoint_url: str | None = None

    @property
    def kind(self) -> str:
        return "rayservice" if self.ray_service else "dashboard"

    def ref(self) -> TargetRef:
        """The target as the status records it."""
        return TargetRef(
            kind="rayservice" if self.ray_service else "dashboard",
            namespace=(self.namespace or "default") if self.ray_service else None,
            ray_service=self.ray_service,
            dashboard_url=self.dashboard_url,
            application=self.application,
            deployment=self.deployment,
            endpoint_url=self.endpoint_url,
        )

    @classmethod
    def from_ref(cls, ref: TargetRef) -> TargetSpec:
        return cls(
            application=ref.application,
            deployment=ref.deployment,
            ray_service=ref.ray_service,
            namespace=ref.namespace,
            dashboard_url=ref.dashboard_url,
            endpoint_url=ref.endpoint_url,
        )


@dataclass(frozen=True)
class RolloutSpec:
    """The pointer to watch, where to roll it out, and the gates."""

    pointer: str
    target: TargetSpec
    allowed_prefixes: tuple[str, ...] = ()
    poll_interval_s: float = 10.0
    min_metric: float | None = None
    require_improvement: bool = False
    rollout_timeout_s: float = 300.0
    max_hash_bytes: int = 16 * 1024 * 1024
    paused: bool = False
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    strategy: ProgressiveSpec = field(default_factory=ProgressiveSpec)
    log_root_uri: str | None = None

    @property
    def progressive(self) -> bool:
        """Whether new checkpoints go through shadow, the off-policy gate and canary steps."""
        return self.strategy.progressive

    @property
    def log_root(self) -> str:
        """The storage root of the Serve app's decision logs (``spec.logRoot``; default: the first
        allowed prefix, i.e. the storage root above the pointer)."""
        return self.log_root_uri or self.prefixes[0]

    def __post_init__(self) -> None:
        try:
            storage.parse_uri(self.pointer)
            for prefix in self.allowed_prefixes:
                storage.parse_uri(prefix)
        except storage.StorageURIError as exc:
            raise SpecError(str(exc)) from exc
        if not (self.target.ray_service or self.target.dashboard_url):
            raise SpecError("target needs rayService or dashboardUrl")
        if self.target.ray_service and self.target.dashboard_url:
            raise SpecError("target takes rayService or dashboardUrl, not both")
        for label, value in (
            ("pollIntervalSeconds", self.poll_interval_s),
            ("rolloutTimeoutSeconds", self.rollout_timeout_s),
            ("minMetric", self.min_metric),
        ):
            if value is not None and not math.isfinite(value):
                raise SpecError(f"{label} must be a finite number, not {value!r}")
        if self.poll_interval_s <= 0 or self.rollout_timeout_s <= 0:
            raise SpecError("pollIntervalSeconds and rolloutTimeoutSeconds must be positive")
        if self.max_hash_bytes < 0:
            raise SpecError("maxHashBytes must not be negative")
        if self.log_root_uri is not None:
            try:
                storage.parse_uri(self.log_root_uri)
            except storage.StorageURIError as exc:
                raise SpecError(f"logRoot: {exc}") from exc

    @property
    def prefixes(self) -> list[str]:
        """Allowed checkpoint prefixes; by default the storage root above ``<root>/<channel>/pointer``."""
        if self.allowed_prefixes:
            return list(self.allowed_prefixes)
        loc = storage.parse_uri(self.pointer)
        if loc.scheme == "s3":
            parts = loc.key.split("/")
            return [storage.Location("s3", loc.bucket, "/".join(parts[:-2])).uri]
        return [str(loc.path.parent.parent)]

    @classmethod
    def from_resource(
        cls, spec: dict[str, Any], *, name: str = "", namespace: str | None = None
    ) -> RolloutSpec:
        """Build from a PolicyRollout's ``spec`` (camelCase keys, as in the CRD)."""
        if not isinstance(spec, dict):
            raise SpecError("spec must be a mapping")
        target = spec.get("target") or {}
        if not isinstance(target, dict):
            raise SpecError("spec.target must be a mapping")
        pointer = spec.get("pointer")
        if not isinstance(pointer, str) or not pointer.strip():
            raise SpecError("spec.pointer is required")
        for key in ("pollIntervalSeconds", "rolloutTimeoutSeconds", "minMetric", "maxHashBytes"):
            if isinstance(spec.get(key), bool):
                raise SpecError(f"spec.{key} must be a number, not a boolean")
        log_root = spec.get("logRoot")
        if log_root is not None and (not isinstance(log_root, str) or not log_root.strip()):
            raise SpecError("spec.logRoot must be a storage URI (s3://bucket/prefix or a local path)")
        try:
            strategy = ProgressiveSpec.from_resource(spec.get("strategy"))
        except ProgressiveSpecError as exc:
            raise SpecError(f"spec.{exc}") from exc
        try:
            min_metric = spec.get("minMetric")
            return cls(
                pointer=pointer.strip(),
                target=TargetSpec(
                    application=str(target.get("application") or "corridor"),
                    deployment=str(target.get("deployment") or "PolicyServer"),
                    ray_service=target.get("rayService") or None,
                    namespace=namespace,
                    dashboard_url=target.get("dashboardUrl") or None,
                    endpoint_url=target.get("endpointUrl") or None,
                ),
                allowed_prefixes=tuple(str(p) for p in spec.get("allowedPrefixes") or ()),
                poll_interval_s=float(spec.get("pollIntervalSeconds", 10)),
                min_metric=None if min_metric is None else float(min_metric),
                require_improvement=bool(spec.get("requireImprovement", False)),
                rollout_timeout_s=float(spec.get("rolloutTimeoutSeconds", 300)),
                max_hash_bytes=int(spec.get("maxHashBytes", 16 * 1024 * 1024)),
                paused=bool(spec.get("paused", False)),
                name=name,
                strategy=strategy,
                log_root_uri=log_root.strip() if log_root else None,
            )
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"invalid spec: {exc}") from exc

    @classmethod
    def for_unfinished_rollout(cls, ref: TargetRef, pointer: str, timeout_s: float, name: str) -> RolloutSpec:
        """The spec saved with a rollout in flight: enough to verify or roll it back when the current
        spec is invalid (held: never used to start a new promotion)."""
        return cls(
            pointer=pointer,
            target=TargetSpec.from_ref(ref),
            rollout_timeout_s=timeout_s,
            paused=True,
            name=name,
        )
