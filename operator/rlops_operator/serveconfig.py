"""Edit a Serve config (``serveConfigV2``) so that only one deployment's checkpoint changes.

The YAML is edited with ruamel.yaml's round-trip mode, so the user's comments, key order, quoting and
anchors survive. Where the target deployment's ``user_config`` (or the deployment, its list or its
application) is a YAML anchor shared through aliases with another place, the edited node gets its own
copy first: changing one deployment never changes another. The result is re-read and compared with
the input to prove that the checkpoint URI is the only difference.

Every shape problem (no ``applications`` list, an application without ``name``, ``deployments`` as a
mapping, ``user_config`` as a string, ...) is a :class:`ServeConfigError` that says what is wrong.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator, Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent


class ServeConfigError(ValueError):
    """The Serve config is malformed or lacks the target application."""


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def _type(value: Any) -> str:
    """A YAML-level name for the value's type (round-trip subclasses say what they are)."""
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (str, "a string"), (Mapping, "a mapping"), (list, "a list")):
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, int | float) else type(value).__name__


def load(text: str | Mapping[str, Any]) -> Any:
    """Parse a serveConfigV2 YAML string (round-trip types); a mapping passes through as a deep copy."""
    if isinstance(text, Mapping):
        return copy.deepcopy(dict(text))
    if not isinstance(text, str):
        raise ServeConfigError(f"serveConfigV2 must be a YAML string, got {_type(text)}")
    try:
        data = _yaml().load(text or "")
    except YAMLError as exc:
        raise ServeConfigError(f"serveConfigV2 is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ServeConfigError("serveConfigV2 must be a mapping with an 'applications' list")
    return data


def plain(node: Any) -> Any:
    """The data without YAML round-trip types (for comparisons)."""
    if isinstance(node, Mapping):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def _applications(config: Mapping[str, Any]) -> list[Any]:
    apps = config.get("applications")
    if not isinstance(apps, list):
        raise ServeConfigError(f"serveConfigV2 'applications' must be a list, got {_type(apps)}")
    return apps


def _application_index(config: Mapping[str, Any], app: str) -> int:
    apps = _applications(config)
    found = [i for i, e in enumerate(apps) if isinstance(e, Mapping) and e.get("name") == app]
    if len(found) > 1:
        raise ServeConfigError(f"application {app!r} appears {len(found)} times in serveConfigV2")
    if not found:
        names = [e.get("name") if isinstance(e, Mapping) else f"<{_type(e)}>" for e in apps]
        nameless = " (an application without 'name' cannot be matched)" if None in names else ""
        raise ServeConfigError(f"application {app!r} is not in serveConfigV2 (found {names}){nameless}")
    return found[0]


def _deployments(application: Mapping[str, Any]) -> list[Any] | None:
    deps = application.get("deployments")
    if deps is not None and not isinstance(deps, list):
        raise ServeConfigError(
            f"deployments of application {application.get('name')!r} must be a list, got {_type(deps)}"
        )
    return deps


def _deployment_index(deps: list[Any], deployment: str, app: str) -> int | None:
    found = [i for i, e in enumerate(deps) if isinstance(e, Mapping) and e.get("name") == deployment]
    if len(found) > 1:
        raise ServeConfigError(f"deployment {deployment!r} appears {len(found)} times in application {app!r}")
    return found[0] if found else None


def _user_config(dep: Mapping[str, Any], deployment: str) -> Mapping[str, Any] | None:
    user_config = dep.get("user_config")
    if user_config is not None and not isinstance(user_config, Mapping):
        raise ServeConfigError(f"user_config of {deployment!r} must be a mapping, got {_type(user_config)}")
    return user_config


def checkpoint_of(config: str | Mapping[str, Any], app: str, deployment: str) -> str | None:
    """The ``user_config.checkpoint_uri`` the config gives the deployment, or None."""
    data = load(config)
    application = _applications(data)[_application_index(data, app)]
    deps = _deployments(application) or []
    index = _deployment_index(deps, deployment, app)
    if index is None:
        return None
    user_config = _user_config(deps[index], deployment) or {}
    uri = user_config.get("checkpoint_uri")
    if uri is not None and not isinstance(uri, str):
        raise ServeConfigError(f"checkpoint_uri of {deployment!r} must be a string, got {_type(uri)}")
    return str(uri) if uri else None


def _walk(node: Any) -> Iterator[Any]:
    """Every mapping and list in the tree, once per place it is referenced (aliases count again)."""
    if isinstance(node, Mapping):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        yield node
        for value in node:
            yield from _walk(value)


def _unshared_copy(node: Any) -> Any:
    """A deep copy of ``node`` without YAML anchors (so the copy is emitted as plain content)."""
    clone = copy.deepcopy(node)
    for part in _walk(clone):
        anchor = getattr(part, "anchor", None)
        if anchor is not None and getattr(anchor, "value", None) is not None:
            part.yaml_set_anchor(None)
            anchor.value = None
            anchor.always_dump = False
    return clone


def _own(parent: Any, key: Any, refs: dict[int, int]) -> Any:
    """``parent[key]``, replaced first by its own copy when an alias shares it with another place."""
    node = parent[key]
    if refs.get(id(node), 0) > 1:
        node = parent[key] = _unshared_copy(node)
    return node


def _set_checkpoint(data: Any, app: str, deployment: str, uri: str, slots: Serving | None = None) -> None:
    refs: dict[int, int] = {}
    for node in _walk(data):
        refs[id(node)] = refs.get(id(node), 0) + 1
    apps = _own(data, "applications", refs) if isinstance(data.get("applications"), list) else None
    if apps is None:
        _applications(data)  # raises the shape error
    index = _application_index(data, app)
    application = _own(apps, index, refs)
    deps = _deployments(application)
    if deps is None:
        deps = application["deployments"] = []
    else:
        deps = _own(application, "deployments", refs)
    dep_index = _deployment_index(deps, deployment, app)
    if dep_index is None:
        deps.append(CommentedMap(name=deployment) if isinstance(deps, list) else {"name": deployment})
        dep_index = len(deps) - 1
    dep = _own(deps, dep_index, refs)
    if _user_config(dep, deployment) is None:
        dep["user_config"] = CommentedMap() if isinstance(dep, CommentedMap) else {}
    user_config = _own(dep, "user_config", refs)
    uri_before = user_config.get("checkpoint_uri")
    if uri_before is not None and not isinstance(uri_before, str):
        raise ServeConfigError(f"checkpoint_uri of {deployment!r} must be a string, got {_type(uri_before)}")
    user_config["checkpoint_uri"] = uri
    if slots is None:
        return
    if slots.challenger is None:
        if user_config.get("challenger") is not None:
            user_config["challenger"] = None
    else:
        user_config["challenger"] = _mapping_like(user_config, dict(slots.challenger))
    if slots.decision_log_root is not None:
        log_config = user_config.get("decision_log")
        if log_config is not None and not isinstance(log_config, Mapping):
            raise ServeConfigError(
                f"user_config.decision_log of {deployment!r} must be a mapping, got {_type(log_config)}"
            )
        if log_config is None:
            user_config["decision_log"] = _mapping_like(user_config, {"root": slots.decision_log_root})
        elif log_config.get("root") != slots.decision_log_root:
            log_config = _own(user_config, "decision_log", refs)
            log_config["root"] = slots.decision_log_root


def _mapping_like(parent: Any, values: dict[str, Any]) -> Any:
    """A new mapping of the same kind as ``parent`` (round-trip or plain)."""
    if isinstance(parent, CommentedMap):
        out = CommentedMap()
        out.update(values)
        return out
    return dict(values)


class Serving:
    """What one deployment serves: the champion, the challenger slot (None: champion only) and where
    the decision log goes (None: leave ``user_config.decision_log`` as it is)."""

    def __init__(
        self,
        checkpoint_uri: str | None,
        challenger: Mapping[str, Any] | None = None,
        decision_log_root: str | None = None,
    ) -> None:
        self.checkpoint_uri = checkpoint_uri
        self.challenger = dict(challenger) if challenger is not None else None
        self.decision_log_root = decision_log_root

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Serving):
            return NotImplemented
        return (self.checkpoint_uri, self.challenger) == (other.checkpoint_uri, other.challenger)

    def __repr__(self) -> str:
        return f"Serving({self.checkpoint_uri!r}, challenger={self.challenger!r})"


def serving_of(config: str | Mapping[str, Any], app: str, deployment: str) -> Serving:
    """The champion and challenger slot the config gives the deployment (and its decision-log root)."""
    uri = checkpoint_of(config, app, deployment)
    data = load(config)
    application = _applications(data)[_application_index(data, app)]
    deps = _deployments(application) or []
    index = _deployment_index(deps, deployment, app)
    user_config = (_user_config(deps[index], deployment) if index is not None else None) or {}
    challenger = user_config.get("challenger")
    if challenger is not None and not isinstance(challenger, Mapping):
        raise ServeConfigError(
            f"user_config.challenger of {deployment!r} must be a mapping, got {_type(challenger)}"
        )
    log_config = user_config.get("decision_log")
    root = log_config.get("root") if isinstance(log_config, Mapping) else None
    return Serving(uri, plain(challenger) if challenger is not None else None, str(root) if root else None)


def with_checkpoint_dict(
    config: str | Mapping[str, Any], app: str, deployment: str, uri: str, slots: Serving | None = None
) -> dict[str, Any]:
    """A plain copy of the config in which only the deployment's ``user_config.checkpoint_uri`` is ``uri``
    (and, with ``slots``, its ``challenger`` and ``decision_log.root``)."""
    data = load(config)
    _set_checkpoint(data, app, deployment, uri, slots)
    return plain(data)


def _expected(before: Any, app: str, deployment: str, uri: str, slots: Serving | None = None) -> Any:
    """What the plain data must be after the edit: ``before`` with only the checkpoint URI set."""
    expected = plain(before)
    _set_checkpoint(expected, app, deployment, uri, slots)
    return expected


def with_checkpoint(text: str, app: str, deployment: str, uri: str, slots: Serving | None = None) -> str:
    """The serveConfigV2 YAML with only the checkpoint URI changed (checked by re-reading it); with
    ``slots``, also the challenger slot and the decision-log root, nothing else."""
    load(text)  # shape and syntax errors first, with their own messages
    try:
        data, indent, block_seq_indent = load_yaml_guess_indent(text, yaml=_yaml())
    except (YAMLError, IndexError) as exc:
        raise ServeConfigError(f"serveConfigV2 is not valid YAML: {exc}") from None
    expected = _expected(data, app, deployment, uri, slots)
    _set_checkpoint(data, app, deployment, uri, slots)
    yaml = _yaml()
    offset = max(block_seq_indent or 0, 0)
    sequence = max(indent or 2, offset + 2)
    yaml.indent(mapping=max(sequence - offset, 1), sequence=sequence, offset=offset)
    out = io.StringIO()
    yaml.dump(data, out)
    rendered = out.getvalue()
    if plain(load(rendered)) != expected:
        raise ServeConfigError("serveConfigV2 does not survive a YAML round trip; refusing to rewrite it")
    return rendered
