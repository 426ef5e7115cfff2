"""Helpers for the end-to-end tests: checkpoint tampering, the user's serveConfigV2, served rollouts.

Fixtures that build on these live in ``tests/e2e/conftest.py``.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass
from typing import Any

import yaml

from rlops_core import checkpoints, storage
from rlops_core.serve_client import ServeError, get_json
from tests.e2e.kuberay import KubeRayStandIn
from tests.operator.kube import EmulatedCluster, rayservice_path, rollout_path
from tests.waiting import wait_for

NS = "default"
DEPLOYMENT = "PolicyServer"
_names = itertools.count(1)


# ---------------------------------------------------------------- checkpoints
@dataclass(frozen=True)
class TrainedCheckpoints:
    """Two committed corridor checkpoints from two runs of the training job under one storage root."""

    root: str
    a: str
    b: str


def largest_policy_file(checkpoint_uri: str) -> tuple[str, int]:
    """The largest file of the RL module's weights (path relative to the checkpoint, size)."""
    manifest = checkpoints.read_manifest(checkpoint_uri)
    weights = [f for f in manifest.files if "rl_module" in f.path]
    assert weights, f"no RL module files in {checkpoint_uri}"
    biggest = max(weights, key=lambda f: f.size)
    return biggest.path, biggest.size


def altered_after_manifest(good: str, dest: str) -> str:
    """A copy of ``good`` with its own valid manifest, whose largest weights file is then changed in
    place (same size, one byte flipped): sizes and small files still match, only a full hash fails."""
    source = checkpoints.read_manifest(good)
    shutil.copytree(storage.parse_uri(good).path, storage.parse_uri(dest).path)
    storage.parse_uri(storage.join_uri(dest, checkpoints.MANIFEST_NAME)).path.unlink()
    manifest = checkpoints.build_manifest(
        dest,
        metric_name=source.metric_name,
        metric_value=source.metric_value + 1.0,
        env_id=source.env_id,
        trial_id="altered",
        experiment="e2e-corrupt",
    )
    checkpoints.write_manifest(manifest)
    rel, _ = largest_policy_file(manifest.checkpoint_uri)
    path = storage.parse_uri(storage.join_uri(dest, rel)).path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return manifest.checkpoint_uri


def serve_config_text(app: str, checkpoint_uri: str, port: int, replicas: int) -> str:
    """A user's serveConfigV2 (YAML text, as in a RayService manifest) for one policy application.

    The proxy options match the shared Serve instance (loopback, its port); app and route are unique.
    """
    return f"""\
# serveConfigV2 of an end-to-end test; the operator may change only the checkpoint below
proxy_location: HeadOnly
http_options:
  host: 127.0.0.1
  port: {port}
applications:
- name: {app}
  route_prefix: /{app}
  import_path: workloads.serve_app:app
  deployments:
  - name: {DEPLOYMENT}
    num_replicas: {replicas}
    max_ongoing_requests: 32
    ray_actor_options:
      num_cpus: 0.25
    user_config:
      checkpoint_uri: {checkpoint_uri}
      max_batch_size: 8
"""


def configured_checkpoint(config: str | dict[str, Any], app: str) -> str:
    """The checkpoint URI a serveConfigV2 (YAML text or parsed) names for ``app``."""
    if isinstance(config, str):
        config = yaml.safe_load(config)
    application = next(a for a in config["applications"] if a["name"] == app)
    return application["deployments"][0]["user_config"]["checkpoint_uri"]


def metadata(endpoint: str) -> dict[str, Any] | None:
    """The endpoint's ``/metadata`` (None while it does not answer one)."""
    try:
        body = get_json(f"{endpoint}/metadata", timeout=10)
    except ServeError:
        return None
    return body if isinstance(body, dict) else None


class ServedRollout:
    """A RayService serving checkpoint ``initial`` through the stand-in, and a PolicyRollout on it."""

    def __init__(
        self,
        kube: EmulatedCluster,
        kuberay: KubeRayStandIn,
        endpoint_base: str,
        port: int,
        root: str,
        initial: str,
        *,
        replicas: int = 1,
        **rollout_spec: Any,
    ) -> None:
        n = next(_names)
        self.kube, self.kuberay = kube, kuberay
        self.app = f"e2e-app-{n}"
        self.rs, self.name = f"e2e-policy-{n}", f"e2e-rollout-{n}"
        self.endpoint = f"{endpoint_base}/{self.app}"
        self.pointer = checkpoints.pointer_uri(root, f"e2e-channel-{n}")
        self.initial_text = serve_config_text(self.app, initial, port, replicas)
        checkpoints.write_pointer(self.pointer, initial)
        body = {
            "apiVersion": "ray.io/v1",
            "kind": "RayService",
            "metadata": {"name": self.rs, "namespace": NS},
            "spec": {"serveConfigV2": self.initial_text},
        }
        kube.request("POST", rayservice_path(NS), body)
        wait_for(
            lambda: (metadata(self.endpoint) or {}).get("checkpoint_uri") == initial,
            timeout=180,
            interval=0.5,
            what=f"the stand-in to deploy {self.app} serving the initial checkpoint ({kuberay.errors[-3:]})",
        )
        spec = {
            "pointer": self.pointer,
            "target": {
                "rayService": self.rs,
                "application": self.app,
                "deployment": DEPLOYMENT,
                "endpointUrl": self.endpoint,
            },
            "pollIntervalSeconds": 1,
            "rolloutTimeoutSeconds": 90,
            **rollout_spec,
        }
        rollout = {
            "apiVersion": "rlops.io/v1alpha1",
            "kind": "PolicyRollout",
            "metadata": {"name": self.name, "namespace": NS},
            "spec": spec,
        }
        kube.request("POST", rollout_path(NS), rollout)
        self.wait(
            lambda st: st.get("phase") == "Live" and st["live"]["checkpointUri"] == initial,
            "the operator to see the initial checkpoint live",
        )

    # ---- reads
    def rayservice(self) -> dict[str, Any]:
        return self.kube.get(rayservice_path(NS, self.rs)) or {}

    def configured(self) -> str:
        return configured_checkpoint(self.rayservice()["spec"]["serveConfigV2"], self.app)

    def status(self) -> dict[str, Any]:
        return (self.kube.get(rollout_path(NS, self.name)) or {}).get("status") or {}

    def events(self) -> list[dict[str, Any]]:
        items = (self.kube.get(f"/api/v1/namespaces/{NS}/events") or {}).get("items", [])
        return [e for e in items if e.get("involvedObject", {}).get("name") == self.name]

    def spec_patches(self) -> list[dict[str, Any]]:
        assert self.kube.emulator is not None
        return [p for _, name, p in self.kube.emulator.spec_patches if name == self.rs]

    def wait(self, check: Any, what: str, timeout: float = 120) -> dict[str, Any]:
        return wait_for(
            lambda: (lambda st: st if check(st) else None)(self.status()), timeout, interval=0.3, what=what
        )

    def delete(self) -> None:
        """Delete both objects; the stand-in then removes the Serve application, as KubeRay would."""
        self.kube.request("DELETE", rollout_path(NS, self.name))
        self.kube.request("DELETE", rayservice_path(NS, self.rs))
