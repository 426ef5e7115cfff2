"""Data the operator tests build on: the user's serve config and small manifested checkpoints."""

from __future__ import annotations

import os

from rlops_core import checkpoints, storage

SERVE_CONFIG = """\
# the user's serve config: the operator must keep everything but the checkpoint
proxy_location: EveryNode
http_options:
  host: 0.0.0.0
  port: 8000
applications:
- name: corridor
  route_prefix: /
  import_path: workloads.serve_app:app
  runtime_env:
    env_vars:
      OMP_NUM_THREADS: "1"
  deployments:
  - name: PolicyServer
    num_replicas: 2
    ray_actor_options:
      num_cpus: 0.5
    user_config:
      checkpoint_uri: {uri}
      capture:
        enabled: true
        sample_rate: 0.1
- name: other
  route_prefix: /other
  import_path: somewhere:app
"""


def make_checkpoint(
    root: str, experiment: str, trial: str, metric: float, *, files: dict[str, bytes] | None = None
) -> str:
    """Write a small checkpoint directory and its manifest under ``<root>/<experiment>/<trial>``."""
    uri = storage.join_uri(root, experiment, trial, "checkpoint_000001")
    body = files or {
        "algorithm_state.pkl": os.urandom(2048),
        "learner_group/learner/rl_module/default_policy/module_state.pt": os.urandom(4096),
        "env_runner/connector.pkl": b"connector state",
    }
    for rel, data in body.items():
        storage.write_bytes(storage.join_uri(uri, rel), data)
    manifest = checkpoints.build_manifest(
        uri,
        metric_name="env_runners/episode_return_mean",
        metric_value=metric,
        env_id="corridor",
        trial_id=trial,
        experiment=experiment,
    )
    checkpoints.write_manifest(manifest)
    return manifest.checkpoint_uri
