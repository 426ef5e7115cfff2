"""A RayService as a target, through the Kubernetes API.

The patch is a JSON merge patch that carries the resourceVersion it was computed from, so the API
server refuses it (409) if someone changed the RayService meanwhile; the engine re-reads and retries.
KubeRay then sends the new serveConfigV2 to the running cluster in place.
"""

from __future__ import annotations

import time
from typing import Any

from . import serveconfig
from .targets import Health, Lineage, TargetError, TargetMissing, judge_application

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayservices"
ANNOTATION_PREFIX = "rlops.io/"


def api_client() -> Any:
    """A Kubernetes API client: in-cluster credentials, else the kubeconfig (``KUBECONFIG``)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def lineage_annotations(lineage: Lineage) -> dict[str, str]:
    """The ``rlops.io/*`` annotations that say which checkpoint a RayService serves and why."""
    notes = {
        "checkpoint-uri": lineage.checkpoint_uri,
        "metric": f"{lineage.metric_name}={lineage.metric_value:g}"
        if lineage.metric_value is not None
        else "",
        "experiment": lineage.experiment,
        "trial": lineage.trial_id,
        "promoted-at": lineage.promoted_at,
        "policyrollout": lineage.rollout,
        **lineage.extra,
    }
    return {ANNOTATION_PREFIX + k: str(v) for k, v in notes.items()}


class RayServiceTarget:
    """One deployment of one application in a RayService's ``serveConfigV2``."""

    def __init__(
        self,
        name: str,
        namespace: str,
        application: str,
        deployment: str,
        api: Any | None = None,
        retries: int = 5,
        backoff_s: float = 0.5,
    ) -> None:
        from kubernetes import client

        self.name = name
        self.namespace = namespace
        self.application = application
        self.deployment = deployment
        self.api = client.CustomObjectsApi(api or api_client())
        self.retries = retries
        self.backoff_s = backoff_s

    def describe(self) -> str:
        return f"RayService {self.namespace}/{self.name} app {self.application}/{self.deployment}"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the API, retrying 5xx and connection errors a few times; 404 → TargetMissing."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        for attempt in range(self.retries):
            try:
                return fn(*args, _request_timeout=15, **kwargs)
            except ApiException as exc:
                if exc.status == 404:
                    raise TargetMissing(
                        "RayServiceMissing", f"RayService {self.namespace}/{self.name} not found"
                    ) from exc
                if exc.status == 409 or (exc.status or 0) < 500 or attempt == self.retries - 1:
                    raise
            except HTTPError as exc:
                if attempt == self.retries - 1:
                    raise TargetError("APIUnreachable", f"Kubernetes API unreachable: {exc}") from exc
            time.sleep(self.backoff_s * (attempt + 1))
        raise AssertionError("unreachable")

    def get(self) -> dict[str, Any]:
        """The RayService object."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self._call(
                self.api.get_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, self.name
            )
        except ApiException as exc:
            raise TargetError(
                f"HTTP{exc.status}", f"reading {self.describe()}: {exc.status} {exc.reason}"
            ) from exc

    def current_checkpoint(self) -> str | None:
        obj = self.get()
        text = (obj.get("spec") or {}).get("serveConfigV2")
        if not text:
            raise TargetError("NoServeConfig", f"{self.describe()} has no spec.serveConfigV2")
        try:
            return serveconfig.checkpoint_of(text, self.application, self.deployment)
        except serveconfig.ServeConfigError as exc:
            raise TargetError("BadServeConfig", str(exc)) from exc

    def apply(self, checkpoint_uri: str, lineage: Lineage) -> None:
        """Patch serveConfigV2 and the lineage annotations, with a resourceVersion precondition."""
        from kubernetes.client.exceptions import ApiException

        last: Exception | None = None
        for attempt in range(self.retries):
            obj = self.get()
            meta = obj.get("metadata") or {}
            text = (obj.get("spec") or {}).get("serveConfigV2")
            if not text:
                raise TargetError("NoServeConfig", f"{self.describe()} has no spec.serveConfigV2")
            try:
                new_text = serveconfig.with_checkpoint(
                    text, self.application, self.deployment, checkpoint_uri
                )
            except serveconfig.ServeConfigError as exc:
                raise TargetError("BadServeConfig", str(exc)) from exc
            body = {
                "metadata": {
                    "resourceVersion": meta.get("resourceVersion"),
                    "annotations": lineage_annotations(lineage),
                },
                "spec": {"serveConfigV2": new_text},
            }
            try:
                self._call(
                    self.api.patch_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    self.name,
                    body,
                    _content_type="application/merge-patch+json",
                )
                return
            except ApiException as exc:
                last = exc
                if exc.status != 409:
                    raise TargetError(
                        f"HTTP{exc.status}", f"patching {self.describe()}: {exc.status} {exc.reason}"
                    ) from exc
            time.sleep(self.backoff_s * (attempt + 1))
        raise TargetError("Conflict", f"patching {self.describe()} kept conflicting: {last}")

    def health(self, checkpoint_uri: str) -> Health:
        obj = self.get()
        text = (obj.get("spec") or {}).get("serveConfigV2") or ""
        try:
            configured = serveconfig.checkpoint_of(text, self.application, self.deployment)
        except serveconfig.ServeConfigError as exc:
            return Health("failed", str(exc))
        if configured != checkpoint_uri:
            return Health("pending", f"serveConfigV2 names {configured}, waiting for {checkpoint_uri}")
        status = obj.get("status") or {}
        generation = (obj.get("metadata") or {}).get("generation")
        observed = status.get("observedGeneration")
        if generation is not None and observed is not None and int(observed) < int(generation):
            return Health(
                "pending", f"KubeRay has not seen generation {generation} yet (observed {observed})"
            )
        apps = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
        app = apps.get(self.application) or {}
        deps = app.get("serveDeploymentStatuses") or {}
        message = app.get("message") or (deps.get(self.deployment) or {}).get("message") or ""
        return judge_application(str(app.get("status", "")), deps, self.deployment, message)
