"""Load a trained policy from a checkpoint and compute actions with the checkpoint's own connector pipelines.

A checkpoint is an RLlib ``Algorithm.save_to_path()`` directory (or a Tune trial checkpoint of one). The
server loads only the parts it needs: the RLModule and the env-to-module / module-to-env connector
pipelines that the env runners used in training, so served actions go through exactly the trained
preprocessing (a maze's ``Discrete`` observation is one-hot encoded there, not here).

Each request is one observation with no history: the server builds a one-step episode per observation,
which is what stateless (feed-forward) policies see at every step. When both pipelines are exactly
RLlib's defaults (``serving/fastpath.py``), the same work is done directly on the batch instead: same
observation tensor, same forward pass, same action distribution class, same numpy conversion and clipping.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlops_core import checkpoints, storage
from workloads.serving.fastpath import FAST, PIPELINES, FastPath, plan_fast_path

log = logging.getLogger("ray.serve")

MODULE_PATH = ("learner_group", "learner", "rl_module", "default_policy")
ENV_TO_MODULE_PATH = ("env_runner", "env_to_module_connector")
MODULE_TO_ENV_PATH = ("env_runner", "module_to_env_connector")


class PolicyLoadError(Exception):
    """A checkpoint could not be fetched, verified or loaded; the message says which step and why."""


@dataclass
class ActionResult:
    """What the policy produced for one observation (extras only when asked for)."""

    action: Any
    probabilities: list[float] | None = None
    log_prob: float | None = None
    action_dist_inputs: list[float] | None = None
    value: float | None = None


@dataclass
class Policy:
    """A loaded, verified policy: RLModule plus the connector pipelines, and where it came from."""

    checkpoint_uri: str
    manifest: checkpoints.Manifest
    module: Any
    env_to_module: Any
    module_to_env: Any
    loaded_at: str
    load_seconds: float
    fast_path: FastPath | None = None
    path_reason: str = "not inspected"

    @property
    def inference_path(self) -> str:
        """``fast`` (default pipelines done directly) or ``pipelines`` (the checkpoint's connectors run)."""
        return FAST if self.fast_path is not None else PIPELINES

    @property
    def observation_space(self) -> Any:
        """What the env emits, which clients send: the pipeline's input space, not the module's (a maze's
        ``Discrete(25)`` state, which the pipeline one-hot encodes into the module's ``Box(25)``)."""
        space = getattr(self.env_to_module, "input_observation_space", None)
        return space if space is not None else self.module.observation_space

    @property
    def action_space(self) -> Any:
        return self.module.action_space

    def act(self, observations: list[Any], *, explore: bool, extras: bool = False) -> list[ActionResult]:
        """Actions for a batch of already validated observations.

        ``explore=True`` samples from the action distribution (the default for serving), ``False`` is greedy.
        """
        import numpy as np
        import torch

        if self.fast_path is not None:
            with torch.no_grad():
                out = self.fast_path.run(observations, explore=explore, values=extras)
            _require_finite(out.actions)
            results = [ActionResult(action=_plain(a)) for a in out.env_actions]
            if extras:
                self._add_extras(results, out.dist_inputs, out.actions, out.values, np)
            return results
        return self._act_with_pipelines(observations, explore=explore, extras=extras)

    def _act_with_pipelines(
        self, observations: list[Any], *, explore: bool, extras: bool = False
    ) -> list[ActionResult]:
        """The checkpoint's own connector pipelines, one one-step episode per observation."""
        import numpy as np
        import torch
        from ray.rllib.core.columns import Columns
        from ray.rllib.env.single_agent_episode import SingleAgentEpisode

        episodes = []
        obs_space = self.observation_space
        for obs in observations:
            episode = SingleAgentEpisode(observation_space=obs_space, action_space=self.action_space)
            episode.add_env_reset(observation=obs)
            episodes.append(episode)
        shared: dict[str, Any] = {}
        with torch.no_grad():
            batch = self.env_to_module(
                rl_module=self.module, batch={}, episodes=episodes, explore=explore, shared_data=shared
            )
            out = (self.module.forward_exploration if explore else self.module.forward_inference)(batch)
            dist_inputs = out[Columns.ACTION_DIST_INPUTS]
            values = None
            if extras and hasattr(self.module, "compute_values"):
                values = self.module.compute_values(batch)
            to_env = self.module_to_env(
                rl_module=self.module, batch=out, episodes=episodes, explore=explore, shared_data=shared
            )
        _require_finite(to_env[Columns.ACTIONS])
        env_actions = to_env.get(Columns.ACTIONS_FOR_ENV, to_env[Columns.ACTIONS])
        results = [ActionResult(action=_plain(a)) for a in _unbatch(env_actions, len(observations))]
        if extras:
            self._add_extras(results, dist_inputs, to_env[Columns.ACTIONS], values, np)
        return results

    def _add_extras(
        self, results: list[ActionResult], dist_inputs: Any, actions: Any, values: Any, np: Any
    ) -> None:
        import torch

        dist_cls = self.module.get_exploration_action_dist_cls()
        inputs = dist_inputs.reshape(len(results), -1)
        dist = dist_cls.from_logits(inputs)
        action_tensor = torch.as_tensor(np.asarray(actions)).reshape(len(results), *self.action_space.shape)
        logps = dist.logp(action_tensor).reshape(len(results)).tolist()
        probs = torch.softmax(inputs, dim=-1).tolist() if _is_discrete(self.action_space) else None
        value_list = values.reshape(len(results)).tolist() if values is not None else None
        for i, result in enumerate(results):
            result.action_dist_inputs = [float(x) for x in inputs[i].tolist()]
            result.log_prob = float(logps[i])
            result.probabilities = [float(p) for p in probs[i]] if probs is not None else None
            result.value = float(value_list[i]) if value_list is not None else None


def _require_finite(actions: Any) -> None:
    """Raise on a NaN/infinite sampled action (a broken policy), whether or not torch validated the
    distribution's arguments: the failure stays inside ``act``, where a challenger's falls back."""
    import numpy as np

    array = np.asarray(actions)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError("the policy produced a NaN or infinite action (are its weights finite?)")


def _is_discrete(space: Any) -> bool:
    import gymnasium as gym

    return isinstance(space, gym.spaces.Discrete)


def _unbatch(actions: Any, n: int) -> list[Any]:
    if isinstance(actions, list | tuple):
        return list(actions)
    return [actions[i] for i in range(n)]


def _plain(value: Any) -> Any:
    """A JSON-ready action: a plain int/float, or a (nested) list of them."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_policy(checkpoint_uri: str, *, allowed_prefixes: list[str] | None = None) -> Policy:
    """Fetch, verify and load a checkpoint; raise PolicyLoadError naming the failed step."""
    started = time.perf_counter()
    try:
        location = storage.parse_uri(checkpoint_uri)
    except storage.StorageURIError as exc:
        raise PolicyLoadError(f"fetch: {exc}") from exc
    if allowed_prefixes and not storage.is_within(checkpoint_uri, allowed_prefixes):
        raise PolicyLoadError(f"fetch: {checkpoint_uri} is outside the allowed prefixes {allowed_prefixes}")
    try:
        manifest = checkpoints.verify_checkpoint(location.uri, max_hash_bytes=0)  # hashed while downloading
    except (checkpoints.CheckpointError, storage.StorageError) as exc:
        raise PolicyLoadError(f"verify: {exc}") from exc
    # A fresh private folder per load: every file is checked to stay inside it and hashed while it
    # streams in, and the folder is removed whether the load succeeds or fails.
    workdir = Path(tempfile.mkdtemp(prefix="rlops-policy-"))
    try:
        try:
            local = checkpoints.download_checkpoint(location.uri, manifest, workdir / "checkpoint")
        except checkpoints.CheckpointError as exc:
            raise PolicyLoadError(f"verify: {exc}") from exc
        except storage.StorageError as exc:
            raise PolicyLoadError(f"fetch: {exc}") from exc
        module, env_to_module, module_to_env = _load_parts(local)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    try:
        fast_path, reason = plan_fast_path(module, env_to_module, module_to_env)
    except Exception as exc:  # an unexpected connector layout: the pipelines always work
        fast_path, reason = None, f"could not inspect the pipelines ({type(exc).__name__}: {exc})"
    log.info("checkpoint %s: inference path %s (%s)", location.uri, FAST if fast_path else PIPELINES, reason)
    return Policy(
        checkpoint_uri=location.uri,
        manifest=manifest,
        module=module,
        env_to_module=env_to_module,
        module_to_env=module_to_env,
        loaded_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        load_seconds=time.perf_counter() - started,
        fast_path=fast_path,
        path_reason=reason,
    )


def _load_parts(local: Path) -> tuple[Any, Any, Any]:
    from ray.rllib.connectors.connector_pipeline_v2 import ConnectorPipelineV2
    from ray.rllib.core.rl_module.rl_module import RLModule

    module_dir = local.joinpath(*MODULE_PATH)
    e2m_dir = local.joinpath(*ENV_TO_MODULE_PATH)
    m2e_dir = local.joinpath(*MODULE_TO_ENV_PATH)
    for part in (module_dir, e2m_dir, m2e_dir):
        if not part.is_dir():
            raise PolicyLoadError(
                f"load: checkpoint has no {part.relative_to(local)} (expected an RLlib Algorithm checkpoint)"
            )
    try:
        module = RLModule.from_checkpoint(str(module_dir))
        module.eval()
        env_to_module = ConnectorPipelineV2.from_checkpoint(str(e2m_dir))
        module_to_env = ConnectorPipelineV2.from_checkpoint(str(m2e_dir))
    except Exception as exc:  # unpickling a broken checkpoint can raise anything
        raise PolicyLoadError(f"load: {type(exc).__name__}: {exc}") from exc
    return module, env_to_module, module_to_env
