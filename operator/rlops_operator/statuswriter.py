"""Write a PolicyRollout's ``.status`` through the API, and survive the API saying no.

kopf applies ``patch.status`` after the handler; when the API server refuses that patch (400/422) the
failure ends the handler's cycle. The operator writes the status itself instead: a JSON merge patch on
the ``status`` subresource, checked to be valid JSON (no NaN/inf) before it is sent. A refused write
is reported and retried with backoff; the engine goes on from its in-memory state meanwhile, so a
rollout is always verified or rolled back whether or not its status could be stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

GROUP, VERSION, PLURAL = "rlops.io", "v1alpha1", "policyrollouts"
BACKOFF_MAX_S = 60.0


@dataclass(frozen=True)
class WriteFailure:
    """Why a status write failed: the HTTP code (0 when the API was not reached) and a message."""

    code: int
    message: str

    @property
    def reason(self) -> str:
        return f"HTTP{self.code}" if self.code else "Unreachable"


def backoff_s(failures: int) -> float:
    """1 s, 2 s, 4 s, ... up to a minute between attempts."""
    return min(2.0 ** max(failures - 1, 0), BACKOFF_MAX_S)


def full_patch(status: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A merge patch that makes the stored status equal ``status`` whatever is stored now."""
    return {key: status.get(key) for key in keys}


class StatusWriter:
    """Merge-patches ``.status`` of one PolicyRollout with the Kubernetes Python client."""

    def __init__(self, api: Any | None = None) -> None:
        self._api = api

    def api(self) -> Any:
        if self._api is None:
            from kubernetes import client

            from .rayservice import api_client

            self._api = client.CustomObjectsApi(api_client())
        return self._api

    def write(self, namespace: str, name: str, patch: dict[str, Any]) -> WriteFailure | None:
        """Send the patch; None when stored, else why not (never raises)."""
        try:
            json.dumps(patch, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return WriteFailure(0, f"status is not valid JSON, not sent: {exc}")
        try:
            from kubernetes.client.exceptions import ApiException
        except ImportError as exc:  # pragma: no cover - the kubernetes client is a dependency
            return WriteFailure(0, str(exc))
        try:
            self.api().patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": patch},
                _content_type="application/merge-patch+json",
                _request_timeout=30,
            )
        except ApiException as exc:
            body = str(exc.body or exc.reason or "")[:300]
            return WriteFailure(
                int(exc.status or 0), f"the API refused the status patch: {exc.status} {body}"
            )
        except Exception as exc:  # connection errors, timeouts: retried like any refusal
            return WriteFailure(0, f"cannot reach the API to write the status: {type(exc).__name__}: {exc}")
        return None
