"""A stand-in for KubeRay's RayService controller, Serve part only, for the end-to-end tests.

What it does, as KubeRay 1.7 does for a RayService whose cluster is already running: it watches the
RayService objects in the Kubernetes API (here kmock's emulator, polled a few times a second), and
when a ``spec.serveConfigV2`` changes it sends the whole config to the Ray dashboard with
``PUT /api/serve/applications/`` (an in-place update, no new cluster). It then reads the applications'
statuses from the dashboard and writes them into the RayService's status subresource:
``observedGeneration``, ``activeServiceStatus.applicationStatuses.<app>.status`` with its
``serveDeploymentStatuses``, and the ``Ready`` and ``UpgradeInProgress`` conditions.

What it does not do (and no test here relies on): create or upgrade Ray clusters, pods, Services,
or any of KubeRay's blue/green logic. Two simplifications because several tests share one real Ray
cluster: applications that the RayService does not name are kept in the PUT (a real RayService owns
its whole cluster), and ``Ready`` is True when every application is RUNNING (KubeRay derives it
from the number of ready serve endpoints).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import yaml

from rlops_core.serve_client import ServeClient, ServeDetails
from tests.operator.kube import EmulatedCluster, rayservice_path


@dataclass(frozen=True)
class Forwarded:
    """One serveConfigV2 sent to the dashboard: which RayService, which generation, what config."""

    rayservice: str
    generation: int
    config: dict[str, Any]


class KubeRayStandIn:
    """Forwards RayServices' ``serveConfigV2`` to a real Ray cluster and writes their status back."""

    def __init__(
        self,
        kube: EmulatedCluster,
        serve: ServeClient,
        namespace: str = "default",
        interval_s: float = 0.3,
    ) -> None:
        self.kube = kube
        self.serve = serve
        self.namespace = namespace
        self.interval_s = interval_s
        self.forwarded: list[Forwarded] = []
        self.errors: list[str] = []
        self.statuses: list[dict[str, Any]] = []  # every status written, for schema checks
        self._applied: dict[str, str] = {}  # RayService name -> the serveConfigV2 text last sent
        self._apps: dict[str, list[str]] = {}  # RayService name -> its application names
        self._written: dict[str, dict[str, Any]] = {}
        self._since: dict[tuple[str, str], tuple[str, str]] = {}  # (rs, condition) -> (status, time)
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="kuberay-stand-in")
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> KubeRayStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reconciling, after one last pass so that deleted RayServices lose their applications."""
        self._stop.set()
        self._thread.join(timeout=30)
        self.sync_once()

    def pause(self) -> None:
        """Stop reconciling for a while (a slow or restarting KubeRay); ``resume()`` catches up."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def forwarded_for(self, rayservice: str) -> list[Forwarded]:
        with self._lock:
            return [f for f in self.forwarded if f.rayservice == rayservice]

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._paused.is_set():
                self._stop.wait(self.interval_s)
                continue
            try:
                self.sync_once()
            except Exception as exc:  # keep reconciling, as a controller does; tests read .errors
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval_s)

    # ------------------------------------------------------------------ reconcile
    def sync_once(self) -> None:
        """One reconcile pass over every RayService in the namespace."""
        listing = self.kube.get(rayservice_path(self.namespace)) or {}
        objects = {o["metadata"]["name"]: o for o in listing.get("items", [])}
        for name in [n for n in self._applied if n not in objects]:
            self._forget(name)
        if not objects:
            return
        details: ServeDetails | None = None
        for name, obj in objects.items():
            text = (obj.get("spec") or {}).get("serveConfigV2")
            if not text:
                continue
            if self._applied.get(name) != text:
                self._forward(name, obj, text)
                details = None
            if details is None:
                details = self._details()
            self._write_status(name, obj, details)

    def _details(self) -> ServeDetails:
        return self.serve.details()

    def _forward(self, name: str, obj: dict[str, Any], text: str) -> None:
        config = yaml.safe_load(text)
        apps = [a["name"] for a in config.get("applications") or []]
        body = dict(config)
        others = self._details().declarative_configs(skip=set(apps))
        body["applications"] = [*others, *config.get("applications", [])]
        self.serve.put(body)
        generation = int(obj["metadata"].get("generation", 1))
        with self._lock:
            self._applied[name] = text
            self._apps[name] = apps
            self.forwarded.append(Forwarded(name, generation, config))

    def _forget(self, name: str) -> None:
        """The RayService was deleted: its applications go away (KubeRay would delete the cluster)."""
        apps = set(self._apps.pop(name, []))
        self._applied.pop(name, None)
        self._written.pop(name, None)
        details = self._details()
        if apps & set(details.applications):
            others = details.declarative_configs(skip=apps)
            self.serve.deploy(others, http_options=details.http_options)

    # ------------------------------------------------------------------ status
    def _condition(
        self, name: str, ctype: str, ok: bool, reason: str, message: str, now: str
    ) -> dict[str, str]:
        value = "True" if ok else "False"
        prev = self._since.get((name, ctype))
        since = prev[1] if prev and prev[0] == value else now
        self._since[(name, ctype)] = (value, since)
        return {
            "type": ctype,
            "status": value,
            "reason": reason,
            "message": message,
            "lastTransitionTime": since,
        }

    def _write_status(self, name: str, obj: dict[str, Any], details: ServeDetails) -> None:
        from datetime import UTC, datetime

        statuses: dict[str, Any] = {}
        for app_name in self._apps.get(name, []):
            app = details.applications.get(app_name)
            if app is None:
                continue
            statuses[app_name] = {
                "status": app.status,
                "message": app.message,
                "serveDeploymentStatuses": {
                    dep: {"status": d.status, "message": d.message} for dep, d in app.deployments.items()
                },
            }
        ready = bool(statuses) and all(s["status"] == "RUNNING" for s in statuses.values())
        ready_reason = "NonZeroServeEndpoints" if ready else "Initializing"
        ready_message = "every application is RUNNING" if ready else "waiting for the applications"
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        generation = int(obj["metadata"].get("generation", 1))  # this pass reconciled that generation
        status = {
            "observedGeneration": generation,
            "serviceStatus": "Running" if ready else "",
            "activeServiceStatus": {
                "rayClusterName": f"{name}-raycluster-standin",
                "applicationStatuses": statuses,
            },
            "conditions": [
                self._condition(name, "Ready", ready, ready_reason, ready_message, now),
                self._condition(
                    name, "UpgradeInProgress", False, "NoPendingCluster", "in-place Serve update", now
                ),
            ],
        }
        if self._written.get(name) == status:
            return
        self.kube.request("PATCH", rayservice_path(self.namespace, name) + "/status", {"status": status})
        self._written[name] = status
        self.statuses.append(status)
