"""A RayService as a target, through the Kubernetes API.

The patch is a JSON merge patch that carries the resourceVersion it was computed from, so the API
server refuses it (409) if someone changed the RayService meanwhile; the target re-reads and retries
(tenacity). KubeRay then sends the new serveConfigV2 to the running cluster in place. Every shape the
RayService could have that is not KubeRay's (a status that is not a mapping, ``observedGeneration:
"x"``, deployment statuses as strings, a serve config without names) is a :class:`TargetError`.
"""

from __future__ import annotations

from typing import Any

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_incrementing,
)

from . import serveconfig
from .targets import (
    Health,
    Lineage,
    TargetError,
    TargetMissing,
    TargetReason,
    deployment_statuses,
    judge_application,
    text_field,
)

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayservices"
ANNOTATION_PREFIX = "rlops.io/"
REQUEST_TIMEOUT_S = 15


def api_client() -> Any:
    """A Kubernetes API client: in-cluster credentials, else the kubeconfig (``KUBECONFIG`` as it is now,
    not as it was when the kubernetes package was imported)."""
    import os

    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
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


def _transient(exc: BaseException) -> bool:
    """Worth another try right away: a 5xx answer or no answer at all (not 404/409/4xx)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ApiException):
        return (exc.status or 0) >= 500
    return isinstance(exc, HTTPError)


def _conflict(exc: BaseException) -> bool:
    from kubernetes.client.exceptions import ApiException

    return isinstance(exc, ApiException) and exc.status == 409


def _generation(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TargetError(
            TargetReason.UNEXPECTED_STATUS,
            f"{where} must be an integer, got {type(value).__name__} {value!r}",
        )
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    """``value`` when it is a mapping, {} when absent; anything else is ``UnexpectedStatus``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TargetError(
            TargetReason.UNEXPECTED_STATUS, f"{where} must be a mapping, got {type(value).__name__}"
        )
    return value


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
        self.retries = max(1, retries)
        self.backoff_s = backoff_s

    def describe(self) -> str:
        return f"RayService {self.namespace}/{self.name} app {self.application}/{self.deployment}"

    def _retrying(self, retry: Any) -> Retrying:
        return Retrying(
            retry=retry,
            stop=stop_after_attempt(self.retries),
            wait=wait_incrementing(start=self.backoff_s, increment=self.backoff_s),
            reraise=True,
        )

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the API, retrying 5xx and connection errors; 404 → TargetMissing, others → TargetError."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return self._retrying(retry_if_exception(_transient))(
                fn, *args, _request_timeout=REQUEST_TIMEOUT_S, **kwargs
            )
        except ApiException as exc:
            if exc.status == 404:
                raise TargetMissing(
                    TargetReason.RAY_SERVICE_MISSING, f"RayService {self.namespace}/{self.name} not found"
                ) from exc
            if exc.status == 409:
                raise
            raise TargetError(
                f"HTTP{exc.status}", f"{self.describe()}: Kubernetes API answered {exc.status} {exc.reason}"
            ) from exc
        except HTTPError as exc:
            raise TargetError(TargetReason.API_UNREACHABLE, f"Kubernetes API unreachable: {exc}") from exc

    def get(self) -> dict[str, Any]:
        """The RayService object (a mapping; anything else is ``UnexpectedStatus``)."""
        obj = self._call(
            self.api.get_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, self.name
        )
        return _mapping(obj, f"{self.describe()}: the object")

    def _serve_config(self, obj: dict[str, Any]) -> str:
        spec = _mapping(obj.get("spec"), f"{self.describe()}: spec")
        text = spec.get("serveConfigV2")
        if not text:
            raise TargetError(TargetReason.NO_SERVE_CONFIG, f"{self.describe()} has no spec.serveConfigV2")
        if not isinstance(text, str):
            raise TargetError(
                TargetReason.INVALID_SERVE_CONFIG,
                f"{self.describe()}: spec.serveConfigV2 must be a YAML string, got {type(text).__name__}",
            )
        return text

    def _checkpoint_in(self, text: str) -> str | None:
        try:
            return serveconfig.checkpoint_of(text, self.application, self.deployment)
        except serveconfig.ServeConfigError as exc:
            raise TargetError(TargetReason.INVALID_SERVE_CONFIG, f"{self.describe()}: {exc}") from None

    def current_checkpoint(self) -> str | None:
        return self._checkpoint_in(self._serve_config(self.get()))

    def current_serving(self) -> serveconfig.Serving:
        """The champion and the challenger slot serveConfigV2 gives the deployment now."""
        try:
            return serveconfig.serving_of(self._serve_config(self.get()), self.application, self.deployment)
        except serveconfig.ServeConfigError as exc:
            raise TargetError(TargetReason.INVALID_SERVE_CONFIG, f"{self.describe()}: {exc}") from None

    def apply_serving(self, serving: serveconfig.Serving, lineage: Lineage) -> None:
        """Patch the champion, the challenger slot and the decision-log root in one patch."""
        assert serving.checkpoint_uri, "a serving config names a champion"
        self.apply(serving.checkpoint_uri, lineage, serving)

    def _patch_once(self, checkpoint_uri: str, lineage: Lineage, slots: serveconfig.Serving | None) -> None:
        obj = self.get()
        meta = _mapping(obj.get("metadata"), f"{self.describe()}: metadata")
        text = self._serve_config(obj)
        try:
            new_text = serveconfig.with_checkpoint(
                text, self.application, self.deployment, checkpoint_uri, slots
            )
        except serveconfig.ServeConfigError as exc:
            raise TargetError(TargetReason.INVALID_SERVE_CONFIG, f"{self.describe()}: {exc}") from None
        body = {
            "metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "annotations": lineage_annotations(lineage),
            },
            "spec": {"serveConfigV2": new_text},
        }
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

    def apply(self, checkpoint_uri: str, lineage: Lineage, slots: serveconfig.Serving | None = None) -> None:
        """Patch serveConfigV2 and the lineage annotations, with a resourceVersion precondition.

        A 409 (someone changed the RayService since it was read) re-reads and retries, a few times.
        """
        from kubernetes.client.exceptions import ApiException

        retrying = self._retrying(retry_if_exception(_conflict))
        retrying.reraise = False
        try:
            retrying(self._patch_once, checkpoint_uri, lineage, slots)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            reason = getattr(last, "reason", "") if isinstance(last, ApiException) else last
            raise TargetError(
                TargetReason.CONFLICT,
                f"patching {self.describe()} kept conflicting ({self.retries} tries): 409 {reason}",
            ) from None

    def health(self, checkpoint_uri: str) -> Health:
        obj = self.get()
        configured = self._checkpoint_in(self._serve_config(obj))
        if configured != checkpoint_uri:
            return Health("pending", f"serveConfigV2 names {configured}, waiting for {checkpoint_uri}")
        where = f"{self.describe()}: status"
        status = _mapping(obj.get("status"), where)
        meta = _mapping(obj.get("metadata"), f"{self.describe()}: metadata")
        generation = _generation(meta.get("generation"), f"{self.describe()}: metadata.generation")
        observed = _generation(status.get("observedGeneration"), f"{where}.observedGeneration")
        if generation is not None and observed is not None and observed < generation:
            return Health(
                "pending", f"KubeRay has not seen generation {generation} yet (observed {observed})"
            )
        active = _mapping(status.get("activeServiceStatus"), f"{where}.activeServiceStatus")
        apps = _mapping(active.get("applicationStatuses"), f"{where}.activeServiceStatus.applicationStatuses")
        app_where = f"{where} of application {self.application!r}"
        app = _mapping(apps.get(self.application), app_where)
        deps = deployment_statuses(app.get("serveDeploymentStatuses"), app_where)
        message = text_field(app, "message", app_where) or (deps.get(self.deployment) or {}).get(
            "message", ""
        )
        return judge_application(text_field(app, "status", app_where), deps, self.deployment, message)
