"""The maze end to end: trained with the project's own PPO config, served, asked with the env's state.

The maze's observation is ``Discrete(25)``; RLlib's default encoders take only ``Box`` observations, so
training adds the FlattenObservations connector (``tune_setup.needs_flattening``), which one-hot encodes
the state and is saved with the checkpoint. Clients send what the env emits (``{"state": 12}``), never
the module's one-hot ``Box(25)`` tensor. Real Ray (RLlib on the shared test cluster, Serve deployed
through the dashboard's REST API) and real HTTP; nothing is emulated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.serve_apps import ServeApps

pytestmark = pytest.mark.slow

APP = "maze-http"


@pytest.fixture(scope="module")
def maze_checkpoint(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One PPO iteration on the maze, from ``build_algo_config`` (what ``train_job --env maze`` runs)."""
    from ray.rllib.algorithms.ppo import PPO

    from rlops_core.checkpoints import build_manifest, write_manifest
    from workloads.envs import register_with_ray
    from workloads.training.settings import TrainSettings
    from workloads.training.tune_setup import build_algo_config

    register_with_ray()
    settings = TrainSettings.model_validate(
        {
            "env": "maze",
            "seed": 0,
            "stop": {"iters": 1},
            "resources": {"num_env_runners": 0},
            "ppo": {"train_batch_size_per_learner": 400},
        }
    )
    algo = PPO(config=build_algo_config(settings))
    try:
        result = algo.train()
        path = Path(tmp_path_factory.mktemp("maze")) / "checkpoint"
        algo.save_to_path(str(path))
    finally:
        algo.stop()
    manifest = build_manifest(
        str(path),
        metric_name="env_runners/episode_return_mean",
        metric_value=float(result["env_runners"]["episode_return_mean"]),
        env_id="maze",
        trial_id="maze-http",
        experiment="maze-http",
    )
    write_manifest(manifest)
    return str(path)


@pytest.fixture(scope="module")
def maze_url(serve_apps: ServeApps, maze_checkpoint: str) -> Any:
    url = serve_apps.deploy(APP, {"checkpoint_uri": maze_checkpoint})
    yield url
    serve_apps.remove(APP)


def test_metadata_names_the_envs_space_not_the_modules(maze_url: str) -> None:
    meta = httpx.get(f"{maze_url}/metadata", timeout=30).json()
    assert meta["observation_space"] == "Discrete(25)", meta
    assert meta["inference"]["path"] == "fast" and "one-hot" in meta["inference"]["reason"]


@pytest.mark.parametrize("state", [0, 12, [12], 24])
def test_a_maze_state_is_answered_with_a_move(maze_url: str, state: Any) -> None:
    answer = httpx.post(f"{maze_url}/", json={"state": state}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["action"] in (0, 1, 2, 3)


def test_a_batch_of_maze_states_is_answered(maze_url: str) -> None:
    answer = httpx.post(f"{maze_url}/", json={"observations": [0, 6, 12, 18, 24]}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["actions"]) == 5 and set(answer.json()["actions"]) <= {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("state", "kind"),
    [(25, "range"), (-1, "range"), (2.5, "type"), ([0.0] * 25, "shape"), ([3, 4], "shape")],
)
def test_what_the_maze_does_not_emit_is_refused(maze_url: str, state: Any, kind: str) -> None:
    """Out-of-range cells, fractions and the module's own one-hot tensor get a 422 naming the space."""
    answer = httpx.post(f"{maze_url}/", json={"state": state}, timeout=30)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["kind"] == kind and "Discrete(25)" in error["message"], error
    assert httpx.post(f"{maze_url}/", json={"state": 3}, timeout=30).status_code == 200


@pytest.mark.parametrize("state", ["12", True, {"cell": 12}])
def test_what_is_not_a_number_is_refused_by_the_schema(maze_url: str, state: Any) -> None:
    answer = httpx.post(f"{maze_url}/", json={"state": state}, timeout=30)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == "state", answer.text
