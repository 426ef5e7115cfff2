"""The connector short-circuit (``workloads/serving/fastpath.py``) serves exactly what the pipelines serve.

Checkpoints here are built without Ray from RLlib's own config builders (the same
``build_env_to_module_connector`` / ``build_module_to_env_connector`` / RLModule spec an env runner and a
learner use) and saved with each component's ``save_to_path`` into an Algorithm checkpoint's layout, then
loaded through the real ``load_policy``. Weights are random (scaled up so the action distributions are far
from uniform); equivalence does not depend on training. The trained corridor checkpoint of the serving
fixture is compared too (slow: it trains on Ray).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlops_core import checkpoints
from workloads.envs import make_env
from workloads.serving.fastpath import FAST, PIPELINES, plan_fast_path
from workloads.serving.policy import MODULE_PATH, Policy, load_policy

N_OBS = 400


def _env(name: str) -> gym.Env:
    return gym.make("Pendulum-v1") if name == "pendulum" else make_env(name)


def build_checkpoint(root: Path, name: str, *, e2m_connector: Callable[..., Any] | None = None) -> str:
    """An Algorithm-shaped checkpoint (module + both pipelines + manifest) for env ``name``."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core import DEFAULT_MODULE_ID

    env = _env(name)
    config = (
        PPOConfig()
        .environment("Pendulum-v1" if name == "pendulum" else name)
        .framework("torch")
        .rl_module(model_config={"fcnet_hiddens": [20, 20], "vf_share_layers": True})
    )
    if e2m_connector is not None:
        config = config.env_runners(env_to_module_connector=e2m_connector)
    e2m = config.build_env_to_module_connector(env=env)
    m2e = config.build_module_to_env_connector(env=env)
    spec = config.get_rl_module_spec(spaces={DEFAULT_MODULE_ID: (e2m.observation_space, env.action_space)})
    torch.manual_seed(0)
    module = spec.build()
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn_like(param) * 0.7)  # sharp, varied distributions
    ck = root / name
    module.save_to_path(str(ck.joinpath(*MODULE_PATH)))
    _save_pipeline(e2m, ck / "env_runner" / "env_to_module_connector")
    _save_pipeline(m2e, ck / "env_runner" / "module_to_env_connector")
    manifest = checkpoints.build_manifest(str(ck), metric_name="m", metric_value=0.0, env_id=name)
    checkpoints.write_manifest(manifest)
    return str(ck)


def _save_pipeline(pipeline: Any, path: Path) -> None:
    """``save_to_path`` with every connector's state named (stateless ones have an empty one)."""
    state = {name: conn.get_state() for name, conn in pipeline.get_checkpointable_components()}
    pipeline.save_to_path(str(path), state=state)


def _one_hot() -> Any:
    from ray.rllib.connectors.env_to_module import FlattenObservations

    return lambda env=None, spaces=None, device=None: FlattenObservations()


def _observations(name: str, n: int = N_OBS) -> list[Any]:
    """Observations as ``parse_observation`` hands them to the policy (what the env produces)."""
    rng = np.random.default_rng(1)
    if name == "maze":
        return [int(x) for x in rng.integers(0, 25, n)]
    space = _env(name).observation_space
    low = np.where(np.isfinite(space.low), space.low, -3.0)
    high = np.where(np.isfinite(space.high), space.high, 3.0)
    return [rng.uniform(low, high).astype(space.dtype) for _ in range(n)]


CASES = {
    "corridor": None,  # Box(0, 6, (1,)), Discrete(2) actions
    "cartpole": None,  # Box(4), Discrete(2)
    "maze": _one_hot,  # Discrete(25) observations one-hot encoded by FlattenObservations, Discrete(4)
    "pendulum": None,  # Box(3), Box(1) actions in [-2, 2]: Gaussian sample, then unsquash/clip
}


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Policy]:
    root = tmp_path_factory.mktemp("fastpath")
    out = {}
    for name, connector in CASES.items():
        out[name] = load_policy(
            build_checkpoint(root, name, e2m_connector=connector() if connector else None)
        )
    return out


def _pipelines(policy: Policy) -> Policy:
    """The same loaded policy with the short-circuit turned off: it runs the checkpoint's pipelines."""
    return dataclasses.replace(policy, fast_path=None, path_reason="forced off by the test")


@pytest.mark.parametrize("name", list(CASES))
def test_default_pipelines_take_the_fast_path(policies: dict[str, Policy], name: str) -> None:
    policy = policies[name]
    assert policy.inference_path == FAST, policy.path_reason
    assert _pipelines(policy).inference_path == PIPELINES
    if name == "maze":
        assert "one-hot" in policy.path_reason and policy.fast_path.flatten_struct is not None
    assert policy.fast_path.plain_forward, "a loaded module is in eval mode with TorchRLModule's forwards"
    assert policy.fast_path.box_actions == (name == "pendulum")


def test_module_switched_to_training_mode_still_matches(tmp_path: Path) -> None:
    """The eval() walk is skipped only while the module is in eval mode; otherwise forward_* runs."""
    policy = load_policy(build_checkpoint(tmp_path, "cartpole"))
    policy.module.train()
    obs = _observations("cartpole", 50)
    torch.manual_seed(9)
    fast = [dataclasses.astuple(r) for r in policy.act(obs, explore=True, extras=True)]
    assert policy.module.training, "forward_exploration evaluates in eval mode and restores training mode"
    torch.manual_seed(9)
    slow = [dataclasses.astuple(r) for r in _pipelines(policy).act(obs, explore=True, extras=True)]
    assert fast == slow


@pytest.mark.parametrize("name", list(CASES))
def test_observation_tensor_is_the_pipelines(policies: dict[str, Policy], name: str) -> None:
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    policy = policies[name]
    obs = _observations(name)
    episodes = []
    for o in obs:
        episode = SingleAgentEpisode(
            observation_space=policy.observation_space, action_space=policy.action_space
        )
        episode.add_env_reset(observation=o)
        episodes.append(episode)
    want = policy.env_to_module(
        rl_module=policy.module, batch={}, episodes=episodes, explore=True, shared_data={}
    )
    got = policy.fast_path.observation_batch(obs)
    assert set(got) == set(want) == {"obs"}
    assert got["obs"].dtype == want["obs"].dtype and got["obs"].shape == want["obs"].shape
    assert torch.equal(got["obs"], want["obs"])


@pytest.mark.parametrize("explore", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_logits_probabilities_values_identical(policies: dict[str, Policy], name: str, explore: bool) -> None:
    policy = policies[name]
    obs = _observations(name)
    torch.manual_seed(7)
    fast = policy.act(obs, explore=explore, extras=True)
    torch.manual_seed(7)
    slow = _pipelines(policy).act(obs, explore=explore, extras=True)
    for f, s in zip(fast, slow, strict=True):
        assert f.action_dist_inputs == s.action_dist_inputs  # exact: same tensor through the same forward
        assert f.probabilities == s.probabilities and f.log_prob == s.log_prob and f.value == s.value
        assert f.action == s.action and type(f.action) is type(s.action)
    spread = np.std([r.action_dist_inputs for r in fast], axis=0)
    assert np.all(spread > 0.01), "observations must give different logits, or the comparison proves little"


@pytest.mark.parametrize("name", list(CASES))
def test_seeded_samples_are_identical(policies: dict[str, Policy], name: str) -> None:
    """Same generator state, same distribution class, same batch shape: the very same samples."""
    policy = policies[name]
    obs = _observations(name)
    for seed in range(5):
        torch.manual_seed(seed)
        fast = [r.action for r in policy.act(obs, explore=True)]
        torch.manual_seed(seed)
        slow = [r.action for r in _pipelines(policy).act(obs, explore=True)]
        assert fast == slow
    single_fast = []
    single_slow = []
    for seed in range(50):  # one observation per call, as a lone HTTP request is evaluated
        torch.manual_seed(seed)
        single_fast.append(policy.act([obs[seed]], explore=True)[0].action)
        torch.manual_seed(seed)
        single_slow.append(_pipelines(policy).act([obs[seed]], explore=True)[0].action)
    assert single_fast == single_slow


@pytest.mark.parametrize("name", ["corridor", "cartpole", "maze"])
def test_sampled_action_frequencies_agree(policies: dict[str, Policy], name: str) -> None:
    """Independent seeds: both paths' frequencies match each other and the softmax (5 sigma)."""
    policy = policies[name]
    obs = _observations(name, 3)
    n = 4000
    for o in obs:
        probs = np.array(policy.act([o], explore=False, extras=True)[0].probabilities)
        torch.manual_seed(100)
        fast = np.bincount([r.action for r in policy.act([o] * n, explore=True)], minlength=len(probs))
        torch.manual_seed(200)
        slow = np.bincount(
            [r.action for r in _pipelines(policy).act([o] * n, explore=True)], minlength=len(probs)
        )
        sigma = np.sqrt(n * probs * (1 - probs)) + 1.0
        assert np.all(np.abs(fast - n * probs) <= 5 * sigma), (fast, n * probs)
        assert np.all(np.abs(fast - slow) <= 5 * np.sqrt(2) * sigma), (fast, slow)


def test_box_actions_unsquashed_and_clipped_like_the_pipeline(policies: dict[str, Policy]) -> None:
    policy = policies["pendulum"]
    obs = _observations("pendulum")
    torch.manual_seed(3)
    actions = [r.action for r in policy.act(obs, explore=True)]
    assert all(isinstance(a, list) and len(a) == 1 and -2.0 <= a[0] <= 2.0 for a in actions)
    assert sum(a[0] in (-2.0, 2.0) for a in actions) > 0, "some samples must hit the bounds (clipped)"


def test_non_default_pipeline_falls_back(tmp_path: Path) -> None:
    """A MeanStdFilter (stateful, changes observations) must keep the checkpoint's pipelines."""
    from ray.rllib.connectors.env_to_module import MeanStdFilter

    ck = build_checkpoint(
        tmp_path, "corridor", e2m_connector=lambda env=None, spaces=None, device=None: MeanStdFilter()
    )
    policy = load_policy(ck)
    assert policy.inference_path == PIPELINES and policy.fast_path is None
    assert "MeanStdFilter" in policy.path_reason
    results = policy.act([np.array([3.0], np.float32)] * 3, explore=True, extras=True)
    assert len(results) == 3 and all(r.action in (0, 1) and r.probabilities for r in results)


def test_subclassed_or_extra_connectors_fall_back(policies: dict[str, Policy]) -> None:
    """Exact classes only: a subclass of a default connector may change what it does."""
    from ray.rllib.connectors.common import NumpyToTensor
    from ray.rllib.connectors.module_to_env import GetActions

    policy = policies["corridor"]

    class MyNumpyToTensor(NumpyToTensor):
        pass

    class MyGetActions(GetActions):
        pass

    e2m_copy = _copy_pipeline(policy.env_to_module)
    e2m_copy.connectors[-1] = MyNumpyToTensor()
    path, reason = plan_fast_path(policy.module, e2m_copy, policy.module_to_env)
    assert path is None and "MyNumpyToTensor" in reason
    m2e_copy = _copy_pipeline(policy.module_to_env)
    m2e_copy.connectors[0] = MyGetActions()
    path, reason = plan_fast_path(policy.module, policy.env_to_module, m2e_copy)
    assert path is None and "MyGetActions" in reason
    m2e_copy = _copy_pipeline(policy.module_to_env)
    m2e_copy.connectors.pop(4)  # no NormalizeAndClipActions
    assert plan_fast_path(policy.module, policy.env_to_module, m2e_copy)[0] is None


def _copy_pipeline(pipeline: Any) -> Any:
    """The same pipeline object with its own connector list (the loaded policy's stays untouched)."""
    import copy

    clone = copy.copy(pipeline)
    clone.connectors = list(pipeline.connectors)
    return clone


@pytest.mark.slow
def test_trained_corridor_checkpoint_identical(corridor_checkpoints: Any) -> None:
    """The serving fixture's trained corridor policy (Algorithm.save_to_path): fast path, same outputs."""
    policy = load_policy(corridor_checkpoints.final)
    assert policy.inference_path == FAST, policy.path_reason
    obs = [np.array([s], np.float32) for s in np.linspace(0.0, 6.0, 61)]
    for explore in (True, False):
        torch.manual_seed(11)
        fast = policy.act(obs, explore=explore, extras=True)
        torch.manual_seed(11)
        slow = _pipelines(policy).act(obs, explore=explore, extras=True)
        assert [dataclasses.astuple(r) for r in fast] == [dataclasses.astuple(r) for r in slow]


@pytest.fixture
def no_arg_validation() -> Any:
    """torch's distribution argument checks off, as the Serve replica runs (restored afterwards)."""
    before = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    yield
    torch.distributions.Distribution.set_default_validate_args(before)


@pytest.mark.parametrize("name", list(CASES))
def test_samples_identical_without_torch_argument_validation(policies: dict[str, Policy], name: str) -> None:
    """The replica turns torch's argument validation off: same samples, log-probs and probabilities."""
    policy = policies[name]
    obs = _observations(name)
    runs = []
    for validate in (True, False):
        before = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(validate)
        try:
            torch.manual_seed(5)
            runs.append([dataclasses.astuple(r) for r in policy.act(obs, explore=True, extras=True)])
        finally:
            torch.distributions.Distribution.set_default_validate_args(before)
    assert runs[0] == runs[1]


def test_nan_weights_still_fail_inside_act(tmp_path: Path, no_arg_validation: Any) -> None:
    """Without torch's checks a NaN policy must still raise in ``act`` (a failing challenger falls back)."""
    for name in ("corridor", "pendulum"):
        policy = load_policy(build_checkpoint(tmp_path, name))
        with torch.no_grad():
            for param in policy.module.parameters():
                param.fill_(float("nan"))
        obs = _observations(name, 4)
        for candidate in (policy, _pipelines(policy)):
            with pytest.raises((ValueError, RuntimeError)):
                candidate.act(obs, explore=True)
