"""Edit a Serve config (``serveConfigV2``) so that only one deployment's checkpoint changes.

Everything else in the user's config survives: keys, their order and values. The YAML is parsed
and dumped again, so comments and quoting style are not kept; the result is re-read and compared
with the input to prove that the checkpoint URI is the only difference.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml


class ServeConfigError(ValueError):
    """The Serve config is malformed or lacks the target application."""


def load(text: str | dict[str, Any]) -> dict[str, Any]:
    """Parse a serveConfigV2 YAML string (a dict passes through as a deep copy)."""
    if isinstance(text, dict):
        return copy.deepcopy(text)
    try:
        data = yaml.safe_load(text or "")
    except yaml.YAMLError as exc:
        raise ServeConfigError(f"serveConfigV2 is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ServeConfigError("serveConfigV2 must be a mapping with an 'applications' list")
    return data


def dump(config: dict[str, Any]) -> str:
    """Render a config as block-style YAML, keys in their original order."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096)


def _application(config: dict[str, Any], app: str) -> dict[str, Any]:
    apps = config.get("applications")
    if not isinstance(apps, list):
        raise ServeConfigError("serveConfigV2 has no 'applications' list")
    for entry in apps:
        if isinstance(entry, dict) and entry.get("name") == app:
            return entry
    names = [e.get("name") for e in apps if isinstance(e, dict)]
    raise ServeConfigError(f"application {app!r} is not in serveConfigV2 (found {names})")


def _deployment(application: dict[str, Any], deployment: str, create: bool) -> dict[str, Any] | None:
    deps = application.get("deployments")
    if deps is None:
        if not create:
            return None
        deps = application["deployments"] = []
    if not isinstance(deps, list):
        raise ServeConfigError(f"deployments of application {application.get('name')!r} must be a list")
    for entry in deps:
        if isinstance(entry, dict) and entry.get("name") == deployment:
            return entry
    if not create:
        return None
    entry = {"name": deployment}
    deps.append(entry)
    return entry


def checkpoint_of(config: str | dict[str, Any], app: str, deployment: str) -> str | None:
    """The ``user_config.checkpoint_uri`` the config gives the deployment, or None."""
    data = load(config)
    dep = _deployment(_application(data, app), deployment, create=False)
    user_config = (dep or {}).get("user_config") or {}
    if not isinstance(user_config, dict):
        raise ServeConfigError(f"user_config of {deployment!r} must be a mapping")
    uri = user_config.get("checkpoint_uri")
    return str(uri) if uri else None


def with_checkpoint_dict(config: str | dict[str, Any], app: str, deployment: str, uri: str) -> dict[str, Any]:
    """A copy of the config in which only the deployment's ``user_config.checkpoint_uri`` is ``uri``."""
    data = load(config)
    dep = _deployment(_application(data, app), deployment, create=True)
    assert dep is not None
    user_config = dep.get("user_config")
    if user_config is None:
        user_config = dep["user_config"] = {}
    if not isinstance(user_config, dict):
        raise ServeConfigError(f"user_config of {deployment!r} must be a mapping")
    user_config["checkpoint_uri"] = uri
    return data


def with_checkpoint(text: str, app: str, deployment: str, uri: str) -> str:
    """The serveConfigV2 YAML with only the checkpoint URI changed (checked by re-reading it)."""
    original = load(text)
    updated = with_checkpoint_dict(original, app, deployment, uri)
    rendered = dump(updated)
    reread = load(rendered)
    if reread != updated:
        raise ServeConfigError("serveConfigV2 does not survive a YAML round trip; refusing to rewrite it")
    return rendered
