"""A direct route through the RLModule for checkpoints whose connector pipelines are RLlib's defaults.

RLlib's default env-to-module pipeline, for a stateless single-agent module, turns a list of one-step
episodes into ``{"obs": tensor}``: (optionally one-hot/flatten the observation) → observations → time
rank (a no-op without state) → states (a no-op) → batch (``np.stack``) → tensor (float64 → float32). The
default module-to-env pipeline samples (or argmaxes) the module's own action distribution from the logits,
converts to numpy, unbatches, removes the time rank (a no-op) and unsquashes or clips per item.

:func:`plan_fast_path` inspects the loaded pipelines; when every connector is exactly one of those (by
class, with the default settings) it returns a :class:`FastPath` that does the same work with the same
RLlib functions on the whole batch at once, without building a ``SingleAgentEpisode`` per observation.
Anything else (a custom connector, a filter, a stateful module, a multi-agent module, a device) gets
``None`` and a reason, and the policy keeps running the pipelines.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

PIPELINES = "pipelines"
FAST = "fast"


@dataclass(frozen=True)
class FastOutput:
    """What both paths produce for a batch: env actions per item, plus what the extras are built from."""

    env_actions: list[Any]
    dist_inputs: Any  # torch tensor, the module's ACTION_DIST_INPUTS
    actions: Any  # numpy actions before unsquash/clip (the pipeline's ``actions`` column)
    values: Any  # torch tensor or None


@dataclass(frozen=True)
class FastPath:
    """The default pipelines' work done directly (see the module docstring); built by plan_fast_path."""

    module: Any
    flatten_struct: Any  # the FlattenObservations connector's input space struct, or None without one
    action_struct: Any
    normalize_actions: bool
    clip_actions: bool
    box_actions: bool = True  # False: no Box in the action space, so unsquash/clip change nothing
    plain_forward: bool = False  # the module keeps TorchRLModule's forward_* (an eval() around _forward_*)

    def observation_batch(self, observations: list[Any]) -> dict[str, Any]:
        """``{"obs": tensor}`` as the default env-to-module pipeline builds it from one-step episodes."""
        import numpy as np
        import torch
        from ray.rllib.core.columns import Columns
        from ray.rllib.utils.spaces.space_utils import batch as batch_items
        from ray.rllib.utils.torch_utils import convert_to_torch_tensor

        if self.flatten_struct is not None:
            from ray.rllib.utils.numpy import flatten_inputs_to_1d_tensor

            observations = [
                flatten_inputs_to_1d_tensor(inputs=o, spaces_struct=self.flatten_struct, batch_axis=False)
                for o in observations
            ]
        stacked = batch_items(observations)
        if isinstance(stacked, np.ndarray) and stacked.dtype.kind in "fiub":
            tensor = torch.from_numpy(stacked)  # what convert_to_torch_tensor does with one numeric array
            return {Columns.OBS: tensor.float() if tensor.is_floating_point() else tensor}
        return {Columns.OBS: convert_to_torch_tensor(stacked)}

    def run(self, observations: list[Any], *, explore: bool, values: bool) -> FastOutput:
        """Actions for already validated observations (call under ``torch.no_grad()``)."""
        from ray.rllib.core.columns import Columns
        from ray.rllib.utils.numpy import convert_to_numpy

        module = self.module
        batch = self.observation_batch(observations)
        if self.plain_forward and not module.training:
            # TorchRLModule.forward_* is eval() (a walk over every submodule) around _forward_*; the
            # loaded module is in eval mode already, so the walk changes nothing and is skipped
            out = (module._forward_exploration if explore else module._forward_inference)(batch)
        else:
            out = (module.forward_exploration if explore else module.forward_inference)(batch)
        dist_inputs = out[Columns.ACTION_DIST_INPUTS]
        value_tensor = module.compute_values(batch) if values and hasattr(module, "compute_values") else None
        if Columns.ACTIONS in out:  # a module that picks its own actions: GetActions leaves them alone
            actions = out[Columns.ACTIONS]
        else:
            dist_cls = (
                module.get_exploration_action_dist_cls()
                if explore
                else module.get_inference_action_dist_cls()
            )
            dist = dist_cls.from_logits(dist_inputs)
            if not explore:
                dist = dist.to_deterministic()
            actions = dist.sample()
        actions_np = convert_to_numpy(actions)
        return FastOutput(
            env_actions=self._for_env(actions_np),
            dist_inputs=dist_inputs,
            actions=actions_np,
            values=value_tensor,
        )

    def _for_env(self, actions: Any) -> list[Any]:
        """Unbatch, then unsquash or clip each item as NormalizeAndClipActions does."""
        items = [actions[i] for i in range(len(actions))]
        if not (self.normalize_actions or self.clip_actions) or not self.box_actions:
            return items
        from ray.rllib.utils.spaces.space_utils import clip_action, unsquash_action

        fix = unsquash_action if self.normalize_actions else clip_action
        return [fix(copy.deepcopy(a), self.action_struct) for a in items]


E2M_DEFAULT = (
    "AddObservationsFromEpisodesToBatch",
    "AddTimeDimToBatchAndZeroPad",
    "AddStatesFromEpisodesToBatch",
    "BatchIndividualItems",
    "NumpyToTensor",
)
M2E_DEFAULT = (
    "GetActions",
    "TensorToNumpy",
    "UnBatchToIndividualItems",
    "RemoveSingleTsTimeRankFromBatch",
    "NormalizeAndClipActions",
    "ListifyDataForVectorEnv",
)


def _default_classes() -> tuple[tuple[type, ...], tuple[type, ...], type, type, type]:
    from ray.rllib.connectors import common
    from ray.rllib.connectors.common.flatten_observations import FlattenObservations
    from ray.rllib.connectors.env_to_module import EnvToModulePipeline
    from ray.rllib.connectors.module_to_env import (
        GetActions,
        ListifyDataForVectorEnv,
        ModuleToEnvPipeline,
        NormalizeAndClipActions,
        RemoveSingleTsTimeRankFromBatch,
        UnBatchToIndividualItems,
    )

    e2m = tuple(getattr(common, name) for name in E2M_DEFAULT)
    m2e = (
        GetActions,
        common.TensorToNumpy,
        UnBatchToIndividualItems,
        RemoveSingleTsTimeRankFromBatch,
        NormalizeAndClipActions,
        ListifyDataForVectorEnv,
    )
    return e2m, m2e, FlattenObservations, EnvToModulePipeline, ModuleToEnvPipeline


def plan_fast_path(module: Any, env_to_module: Any, module_to_env: Any) -> tuple[FastPath | None, str]:
    """A FastPath when both pipelines are exactly RLlib's defaults for this module, else None; and why."""
    import gymnasium as gym
    import torch
    import tree
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

    e2m_classes, m2e_classes, flatten_cls, e2m_pipeline_cls, m2e_pipeline_cls = _default_classes()
    if isinstance(module, MultiRLModule) or not isinstance(module, torch.nn.Module):
        return None, f"module {type(module).__name__} is not a single-agent torch RLModule"
    if module.is_stateful():
        return None, "the module is stateful (time rank and state connectors do real work)"
    if type(env_to_module) is not e2m_pipeline_cls or type(module_to_env) is not m2e_pipeline_cls:
        return None, "the connector pipelines are not RLlib's EnvToModulePipeline / ModuleToEnvPipeline"
    e2m = list(env_to_module.connectors)
    flatten_struct = None
    if e2m and type(e2m[0]) is flatten_cls:
        reason = _flatten_unsupported(e2m[0], env_to_module.input_observation_space, gym)
        if reason:
            return None, reason
        flatten_struct = e2m[0]._input_obs_base_struct
        e2m = e2m[1:]
    if tuple(type(c) for c in e2m) != e2m_classes:
        return None, "env-to-module connectors " + _names(env_to_module.connectors) + " are not the default"
    if tuple(type(c) for c in module_to_env.connectors) != m2e_classes:
        return None, "module-to-env connectors " + _names(module_to_env.connectors) + " are not the default"
    batcher, to_tensor = e2m[3], e2m[4]
    if getattr(batcher, "_multi_agent", False):
        return None, "BatchIndividualItems is multi-agent"
    if (to_tensor._device is not None and str(to_tensor._device) != "cpu") or to_tensor._pin_memory:
        return None, "NumpyToTensor moves tensors to a device or pins memory"
    if flatten_struct is None and not isinstance(env_to_module.input_observation_space, gym.spaces.Box):
        return None, f"observation space {env_to_module.input_observation_space} is not a Box"
    clipper = module_to_env.connectors[4]
    path = FastPath(
        module=module,
        flatten_struct=flatten_struct,
        action_struct=clipper._action_space_struct,
        normalize_actions=bool(clipper.normalize_actions),
        clip_actions=bool(clipper.clip_actions),
        box_actions=any(isinstance(s, gym.spaces.Box) for s in tree.flatten(clipper._action_space_struct)),
        plain_forward=_plain_forward(module),
    )
    what = "one-hot/flatten + default" if flatten_struct is not None else "default"
    return path, f"{what} connector pipelines: observation tensor built directly, sampled from the module"


def _plain_forward(module: Any) -> bool:
    """The module's forward_* are TorchRLModule's own, and every submodule is in eval mode."""
    from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

    cls = type(module)
    return (
        cls.forward_exploration is TorchRLModule.forward_exploration
        and cls.forward_inference is TorchRLModule.forward_inference
        and not any(m.training for m in module.modules())
    )


def _flatten_unsupported(connector: Any, space: Any, gym: Any) -> str:
    if connector._multi_agent or connector._agent_ids or connector._keys_to_remove:
        return "FlattenObservations is set up for multi-agent or removes keys"
    if connector._as_learner_connector:
        return "FlattenObservations runs as a learner connector"
    if not isinstance(space, gym.spaces.Box | gym.spaces.Discrete):
        return f"FlattenObservations input space {space} is not a Box or Discrete"
    return ""


def _names(connectors: list[Any]) -> str:
    return "[" + ", ".join(type(c).__name__ for c in connectors) + "]"
