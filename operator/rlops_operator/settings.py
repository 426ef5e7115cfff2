"""Operator settings from environment variables (pydantic-settings; documented in docs/operator.md)."""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rlops_core.serve_client import host_allowed, host_of


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class OperatorSettings(BaseSettings):
    """How the kopf operator runs, and where it may send the dashboard token.

    ``dashboard_allowed_hosts`` (``RLOPS_DASHBOARD_ALLOWED_HOSTS``, comma list of ``host`` or
    ``host:port``): the dashboards the operator sends ``RAY_AUTH_TOKEN`` to. Empty (the default) means
    the token goes to no dashboard at all: a PolicyRollout can name any ``dashboardUrl``, so only the
    operator's administrator decides where the cluster token may go.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    namespaces: Annotated[tuple[str, ...], NoDecode] = Field((), validation_alias="RLOPS_NAMESPACES")
    peering: str = Field("", validation_alias="RLOPS_PEERING")
    health_port: int = Field(8080, ge=1, le=65535, validation_alias="RLOPS_HEALTH_PORT")
    metrics_port: int = Field(9090, ge=1, le=65535, validation_alias="RLOPS_METRICS_PORT")
    posting_level: int = Field(logging.INFO, validation_alias="RLOPS_POSTING_LEVEL")
    tick_s: float = Field(1.0, gt=0, validation_alias="RLOPS_TICK_SECONDS")
    dashboard_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias="RLOPS_DASHBOARD_ALLOWED_HOSTS"
    )
    dashboard_token: SecretStr = Field(SecretStr(""), validation_alias="RAY_AUTH_TOKEN")

    _split = field_validator("namespaces", "dashboard_allowed_hosts", mode="before")(_comma_list)

    @field_validator("peering", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("posting_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        if isinstance(value, str):
            name = value.strip().upper() or "INFO"
            level = logging.getLevelName(name)
            if not isinstance(level, int):
                raise ValueError(f"{name!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
            return level
        return value

    @field_validator("tick_s")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        return value

    @field_validator("dashboard_allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if "/" in entry or "@" in entry or " " in entry:
                raise ValueError(f"{entry!r} is not host or host:port (no scheme, path or user)")
        return tuple(entry.lower() for entry in value)

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    def token_allowed_for(self, url: str) -> bool:
        """Whether the dashboard token may be sent to ``url``."""
        return host_allowed(url, self.dashboard_allowed_hosts)

    def allowing(self, url: str) -> OperatorSettings:
        """A copy that also allows ``url``'s host: for a CLI user who typed that URL themselves."""
        hosts = (*self.dashboard_allowed_hosts, host_of(url))
        return self.model_copy(update={"dashboard_allowed_hosts": hosts})

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        """Settings from ``env`` (only that mapping) or the process environment; ValueError when bad."""
        try:
            if env is None:
                return cls()
            return cls.model_validate(dict(env))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}={err.get('input')!r}: {err['msg']}"
                if not str(err["loc"][0]).startswith("RAY_AUTH")
                else f"{err['loc'][0]}: {err['msg']}"
                for err in exc.errors()
            )
            raise ValueError(f"bad operator setting: {problems}") from None
