"""A Kubernetes API for the operator tests: kmock's KubernetesEmulator on a loopback port.

The emulator keeps objects in memory and serves list/watch/get/create/patch like a real API server.
This subclass adds what the operator relies on and the stock emulator leaves out: ``resourceVersion``
and ``generation`` bookkeeping, the optimistic-lock precondition (a patch carrying a stale
resourceVersion gets 409 Conflict, before anything is stored), and injectable failures (a given
status code for the next N matching requests, also answered before anything is stored).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import yaml
from kmock import KubernetesEmulator, KubernetesError, ResourceInfo, Server, action

VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


@dataclass
class Fault:
    """Answer the next ``times`` requests with this method on this plural with ``status``.

    Only requests whose User-Agent contains ``agent`` count (by default the Kubernetes Python client's,
    which the operator's targets use), so the test's own reads are not affected.
    """

    method: str
    plural: str
    status: int
    times: int
    agent: str = "OpenAPI-Generator"


class StrictEmulator(KubernetesEmulator):
    """KubernetesEmulator + resourceVersion/generation + 409 on stale patches + injected failures."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.rv_counter = itertools.count(100)
        self.faults: list[Fault] = []
        self.faults_lock = threading.Lock()
        self.spec_patches: list[tuple[str, str, dict[str, Any]]] = []

    def _take_fault(self, method: str, plural: str, agent: str) -> Fault | None:
        with self.faults_lock:
            for fault in self.faults:
                if (
                    fault.method == method
                    and fault.plural == plural
                    and fault.times > 0
                    and fault.agent in agent
                ):
                    fault.times -= 1
                    return fault
        return None

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        res = request.resource
        if res is not None:
            agent = str(request.headers.get("User-Agent", ""))
            fault = self._take_fault(str(request.method.value).upper(), res.plural, agent)
            if fault is not None:
                return await self._render_error(
                    KubernetesError(
                        status=fault.status, reason="Injected", message=f"injected {fault.status}"
                    )
                )
            data = request.data if isinstance(request.data, dict) else None
            if request.action == action.UPDATE and data is not None and request.name:
                key = (res, request.namespace, request.name)
                if key in self._objects and not self._objects[key].deleted:
                    meta = self._objects[key].raw.get("metadata", {})
                    sent = (data.get("metadata") or {}).get("resourceVersion")
                    if sent and sent != meta.get("resourceVersion"):
                        return await self._render_error(
                            KubernetesError(
                                status=409, reason="Conflict", message="the object has been modified"
                            )
                        )
                    new_meta = data.setdefault("metadata", {})
                    new_meta["resourceVersion"] = str(next(self.rv_counter))
                    if request.subresource is None and "spec" in data:
                        new_meta["generation"] = int(meta.get("generation", 1)) + 1
                        self.spec_patches.append(
                            (request.namespace, request.name, json.loads(json.dumps(data)))
                        )
            elif request.action == action.CREATE and data is not None:
                meta = data.setdefault("metadata", {})
                meta["resourceVersion"] = str(next(self.rv_counter))
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{meta['resourceVersion']}"
                meta.setdefault("generation", 1)
                meta.setdefault("uid", f"uid-{meta['resourceVersion']}")
                meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        return await super()._handle(request)


def declare(emu: KubernetesEmulator) -> None:
    """The resources kopf needs (namespaces, events, CRDs) and the two the operator uses."""
    emu.resources["v1/namespaces"] = ResourceInfo(kind="Namespace", namespaced=False, verbs=VERBS)
    emu.resources["v1/events"] = ResourceInfo(kind="Event", namespaced=True, verbs=VERBS)
    emu.resources["events.k8s.io/v1/events"] = ResourceInfo(kind="Event", namespaced=True, verbs=VERBS)
    emu.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=VERBS
    )
    emu.resources["rlops.io/v1alpha1/policyrollouts"] = ResourceInfo(
        kind="PolicyRollout", singular="policyrollout", namespaced=True, verbs=VERBS, subresources={"status"}
    )
    emu.resources["ray.io/v1/rayservices"] = ResourceInfo(
        kind="RayService", singular="rayservice", namespaced=True, verbs=VERBS, subresources={"status"}
    )


class EmulatedCluster:
    """The emulator served from a background thread, and a small JSON client for the tests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.emulator: StrictEmulator | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with StrictEmulator() as emu, Server(emu, port=self.port):
            declare(emu)
            self.emulator = emu
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the Kubernetes emulator did not start")

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def fail_next(self, method: str, plural: str, status: int, times: int) -> Fault:
        assert self.emulator is not None
        fault = Fault(method.upper(), plural, status, times)
        with self.emulator.faults_lock:
            self.emulator.faults.append(fault)
        return fault

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emu", "cluster": {"server": self.url}}],
            "users": [{"name": "emu", "user": {"token": "test-token"}}],
            "contexts": [
                {"name": "emu", "context": {"cluster": "emu", "user": "emu", "namespace": "default"}}
            ],
            "current-context": "emu",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # ---- a tiny JSON client (what kubectl would do) ----
    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {
            "Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"
        }
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def get(self, path: str) -> Any | None:
        try:
            return self.request("GET", path)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


def rollout_path(ns: str, name: str = "") -> str:
    base = f"/apis/rlops.io/v1alpha1/namespaces/{ns}/policyrollouts"
    return f"{base}/{name}" if name else base


def rayservice_path(ns: str, name: str = "") -> str:
    base = f"/apis/ray.io/v1/namespaces/{ns}/rayservices"
    return f"{base}/{name}" if name else base
