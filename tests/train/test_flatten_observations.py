"""Which envs get RLlib's FlattenObservations connector in training (``tune_setup.needs_flattening``).

RLlib's default encoders take only ``Box`` observations: without the connector, ``--env maze`` failed in
the first trial with "No default encoder config for obs space=Discrete(25)". The end-to-end check (train,
serve, ask with a maze state over HTTP) is tests/serve/test_serve_maze_http.py.
"""

from __future__ import annotations

import pytest

from workloads.training.settings import TrainSettings
from workloads.training.tune_setup import build_algo_config, needs_flattening


@pytest.mark.parametrize(
    ("env", "flattened"),
    [
        ("maze", True),
        ("corridor", False),
        ("corridor-sim", False),
        ("cartpole", False),
        ("basketball", False),
    ],
)
def test_only_non_box_observations_are_flattened(env: str, flattened: bool) -> None:
    assert needs_flattening(env, {}) is flattened


def test_an_env_rllib_makes_itself_is_left_alone() -> None:
    assert needs_flattening("Pendulum-v1", {}) is False


def test_the_maze_config_builds_a_module_on_the_one_hot_space() -> None:
    """The connector reaches the config: the module is built on Box(25), the pipeline takes Discrete(25)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from workloads.envs import make_env

    settings = TrainSettings.model_validate({"env": "maze", "stop": {"iters": 1}})
    config = build_algo_config(settings)
    env = make_env("maze")
    pipeline = config.build_env_to_module_connector(env=env)
    assert str(pipeline.input_observation_space) == "Discrete(25)"
    assert pipeline.observation_space.shape == (25,)
    spaces = {DEFAULT_MODULE_ID: (pipeline.observation_space, env.action_space)}
    spec = config.get_rl_module_spec(spaces=spaces)
    assert spec.build().observation_space.shape == (25,)


def test_the_corridor_config_keeps_the_default_pipeline() -> None:
    from workloads.envs import make_env

    settings = TrainSettings.model_validate({"env": "corridor", "stop": {"iters": 1}})
    pipeline = build_algo_config(settings).build_env_to_module_connector(env=make_env("corridor"))
    assert pipeline.observation_space == pipeline.input_observation_space
