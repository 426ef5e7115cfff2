"""Manual controls of a progressive rollout: abort, promote (skipping the analysis), undo, pause, resume.

On Kubernetes a control is an annotation on the PolicyRollout (so ``kubectl annotate`` does the same):
``rlops.io/command`` holds a JSON command applied once per ``id``, ``rlops.io/paused: "true"`` pauses.
For ``rlops-rollout watch`` against a bare Ray cluster, the same two values live in a small JSON control
file that ``watch --control-file`` reads before every step::

    {"paused": false, "command": {"id": "abort-...", "action": "abort", "by": "alice"}}
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from .progressive import COMMAND_ANNOTATION, PAUSED_ANNOTATION, Command

GROUP, VERSION, PLURAL = "rlops.io", "v1alpha1", "policyrollouts"


class ControlError(RuntimeError):
    """A control could not be delivered (the message says what to do)."""


def who() -> str:
    """The user name recorded with a command."""
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (a container): say so rather than fail
        return os.environ.get("USER", "unknown")


def new_command(action: str, *, skip_analysis: bool = False, by: str = "", reason: str = "") -> Command:
    """A command with a fresh unique id (validated like one from an annotation)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Command.model_validate(
        {
            "id": f"{action}-{stamp}-{secrets.token_hex(3)}",
            "action": action,
            "skipAnalysis": skip_analysis,
            "by": by or who(),
            "reason": reason,
        }
    )


def command_json(command: Command) -> str:
    return json.dumps(command.model_dump(by_alias=True, mode="json"), sort_keys=True)


# ---------------------------------------------------------------------------------------- control file
def read_control_file(path: Path) -> dict[str, str]:
    """The annotations a control file stands for ({} when it does not exist).

    A file that is not the expected JSON is passed on as a command annotation as it is, so that the engine
    reports it once (an Event naming the expected form) and ignores it, like a bad annotation.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        return {COMMAND_ANNOTATION: f"unreadable control file {path}: {exc}"}
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        return {COMMAND_ANNOTATION: text[:500]}
    if not isinstance(data, dict):
        return {COMMAND_ANNOTATION: text[:500]}
    notes: dict[str, str] = {}
    if "paused" in data:
        paused = data["paused"]
        notes[PAUSED_ANNOTATION] = (
            ("true" if paused else "false") if isinstance(paused, bool) else str(paused)
        )
    if data.get("command") is not None:
        notes[COMMAND_ANNOTATION] = json.dumps(data["command"])
    return notes


def write_control_file(path: Path, *, paused: bool | None = None, command: Command | None = None) -> None:
    """Update the control file atomically (a reader never sees half a file)."""
    try:
        current = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        current = {}
    if not isinstance(current, dict):
        current = {}
    if paused is not None:
        current["paused"] = paused
    if command is not None:
        current["command"] = command.model_dump(by_alias=True, mode="json")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(current, f, indent=2)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ annotations
def annotate_rollout(name: str, namespace: str, annotations: dict[str, str | None], api: Any = None) -> None:
    """Merge-patch the PolicyRollout's annotations (None removes one)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from .rayservice import api_client

    try:
        custom = api or client.CustomObjectsApi(api_client())
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"annotations": annotations}},
            _content_type="application/merge-patch+json",
            _request_timeout=30,
        )
    except ApiException as exc:
        if exc.status == 404:
            raise ControlError(
                f"PolicyRollout {namespace}/{name} not found (kubectl get prl -n {namespace})"
            ) from None
        raise ControlError(f"the API refused the annotation: {exc.status} {exc.reason}") from None
    except Exception as exc:  # no kubeconfig, API unreachable
        raise ControlError(f"cannot reach the Kubernetes API: {type(exc).__name__}: {exc}") from None
