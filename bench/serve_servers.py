"""The servers the serving benchmark compares with this app; each answers ``{"state": [x]}`` with an action.

- ``make_bare_app``: what a user would otherwise write: one uvicorn + FastAPI process following RLlib's
  documented inference pattern (``RLModule.from_checkpoint`` plus the checkpoint's env-to-module and
  module-to-env pipelines, a ``SingleAgentEpisode`` per request). It shares no code with this app.
- ``build_rllib_example``: RLlib's Ray Serve example (``rllib/examples/ray_serve``): the RLModule from its
  checkpoint, ``forward_inference`` on the raw observation, one request at a time, Serve's defaults.
- ``build_empty``: a Serve deployment that does no work (Serve's own floor per request).
- ``build_empty_fastapi``: the same behind a FastAPI ingress (what FastAPI inside Serve adds).
- ``build_tutorial``: the reference tutorial's pattern (a full ``Algorithm`` per replica), optional.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

MODULE_PARTS = ("learner_group", "learner", "rl_module", "default_policy")
BENCH_ACTOR = {"num_cpus": 0.5}


class Observation(BaseModel):
    """The request body the bare server and the empty FastAPI deployment declare."""

    state: list[float]


def make_bare_app() -> Any:
    """``uvicorn --factory bench.serve_servers:make_bare_app`` with ``RLOPS_BENCH_CHECKPOINT`` set."""
    import torch
    from fastapi import FastAPI
    from ray.rllib.connectors.env_to_module import EnvToModulePipeline
    from ray.rllib.connectors.module_to_env import ModuleToEnvPipeline
    from ray.rllib.core import (
        COMPONENT_ENV_RUNNER,
        COMPONENT_ENV_TO_MODULE_CONNECTOR,
        COMPONENT_LEARNER,
        COMPONENT_LEARNER_GROUP,
        COMPONENT_MODULE_TO_ENV_CONNECTOR,
        COMPONENT_RL_MODULE,
        DEFAULT_MODULE_ID,
        Columns,
    )
    from ray.rllib.core.rl_module.rl_module import RLModule
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    torch.set_num_threads(1)  # the same as this app's replicas (RLOPS_TORCH_THREADS=1)
    checkpoint = Path(os.environ["RLOPS_BENCH_CHECKPOINT"])
    module = RLModule.from_checkpoint(
        checkpoint / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID
    )
    env_to_module = EnvToModulePipeline.from_checkpoint(
        checkpoint / COMPONENT_ENV_RUNNER / COMPONENT_ENV_TO_MODULE_CONNECTOR
    )
    module_to_env = ModuleToEnvPipeline.from_checkpoint(
        checkpoint / COMPONENT_ENV_RUNNER / COMPONENT_MODULE_TO_ENV_CONNECTOR
    )

    app = FastAPI()

    async def act(body: Observation) -> dict[str, Any]:
        episode = SingleAgentEpisode(
            observations=[body.state],
            observation_space=module.observation_space,
            action_space=module.action_space,
        )
        shared: dict[str, Any] = {}
        with torch.no_grad():
            batch = env_to_module(episodes=[episode], rl_module=module, explore=True, shared_data=shared)
            out = module.forward_exploration(batch)
            to_env = module_to_env(
                batch=out, episodes=[episode], rl_module=module, explore=True, shared_data=shared
            )
        return {"action": int(to_env[Columns.ACTIONS_FOR_ENV][0])}

    app.post("/")(act)
    return app


def build_rllib_example(args: dict[str, str]) -> Any:
    """RLlib's own Serve example: the RLModule from its checkpoint, one request at a time."""
    import json

    import numpy as np
    import torch
    from ray import serve
    from ray.rllib.core import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule
    from starlette.requests import Request

    @serve.deployment(name="RLlibExample", ray_actor_options=BENCH_ACTOR)
    class RLlibExample:
        def __init__(self, rl_module_checkpoint: str) -> None:
            self.rl_module = RLModule.from_checkpoint(rl_module_checkpoint)

        async def __call__(self, request: Request) -> dict[str, int]:
            body = json.loads((await request.body()).decode("utf-8"))
            obs = body["state"] if "state" in body else body["observation"]
            out = self.rl_module.forward_inference(
                batch={"obs": torch.from_numpy(np.array([obs], np.float32))}
            )
            return {"action": int(np.argmax(out[Columns.ACTION_DIST_INPUTS][0]))}

    return RLlibExample.bind(str(Path(args["checkpoint"], *MODULE_PARTS)))


def build_empty(args: dict[str, str]) -> Any:
    """A deployment that reads the body and answers a constant: what Serve costs per request."""
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(name="Empty", max_ongoing_requests=64, ray_actor_options=BENCH_ACTOR)
    class Empty:
        async def __call__(self, request: Request) -> dict[str, int]:
            await request.body()
            return {"action": 0}

    return Empty.bind()


def build_empty_fastapi(args: dict[str, str]) -> Any:
    """The empty handler behind a FastAPI ingress with a pydantic body (this app's shape, no policy)."""
    from fastapi import FastAPI
    from ray import serve

    app = FastAPI()

    @serve.deployment(name="EmptyFastAPI", max_ongoing_requests=64, ray_actor_options=BENCH_ACTOR)
    @serve.ingress(app)
    class EmptyFastAPI:
        async def act(self, body: Observation) -> dict[str, int]:
            return {"action": 0}

        # Real classes, not this module's postponed strings: Serve pickles the class by value.
        act.__annotations__ = {"body": Observation, "return": dict}
        act = app.post("/")(act)

    return EmptyFastAPI.bind()


def build_tutorial(args: dict[str, str]) -> Any:
    """The reference tutorial's pattern: a full Algorithm restored in every replica, no batching."""
    import torch
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(name="TutorialPolicy", ray_actor_options=BENCH_ACTOR)
    class TutorialPolicy:
        def __init__(self, checkpoint: str) -> None:
            from ray.rllib.algorithms.algorithm import Algorithm

            from workloads.envs import register_with_ray

            register_with_ray()
            started = time.perf_counter()
            self.algo = Algorithm.from_checkpoint(checkpoint)
            self.load_seconds = time.perf_counter() - started

        async def __call__(self, request: Request) -> dict[str, Any]:
            body = await request.json()
            module = self.algo.get_module()
            with torch.no_grad():
                out = module.forward_inference({"obs": torch.tensor([body["state"]], dtype=torch.float32)})
            action = int(torch.distributions.Categorical(logits=out["action_dist_inputs"]).sample()[0])
            return {"action": action, "load_seconds": self.load_seconds}

    return TutorialPolicy.bind(args["checkpoint"])
