"""Turn TrainSettings into RLlib's PPOConfig and Tune's TuneConfig / RunConfig / CheckpointConfig."""

from __future__ import annotations

from typing import Any

from workloads.training.settings import METRIC, SEARCHABLE, TrainSettings


def build_algo_config(settings: TrainSettings) -> Any:
    """The PPO algorithm config (new API stack, torch) for one trial, before any search space."""
    from ray.rllib.algorithms.ppo import PPOConfig

    res = settings.resources
    config = (
        PPOConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment(settings.env, env_config=dict(settings.env_config))
        .framework("torch")
        .env_runners(
            num_env_runners=res.num_env_runners,
            num_envs_per_env_runner=res.num_envs_per_env_runner,
            num_cpus_per_env_runner=res.num_cpus_per_env_runner,
            rollout_fragment_length=res.rollout_fragment_length,
        )
        .learners(num_learners=res.num_learners, num_gpus_per_learner=res.num_gpus_per_learner)
        .resources(num_cpus_for_main_process=res.num_cpus_for_main_process)
        .training(**settings.ppo.rllib_kwargs())
    )
    if needs_flattening(settings.env, settings.env_config):
        config = config.env_runners(env_to_module_connector=_flatten_observations)
    model = settings.model.rllib_dict()
    if model:
        config = config.rl_module(model_config=model)
    if settings.seed is not None:
        config = config.debugging(seed=settings.seed)
    return config


def needs_flattening(env: str, env_config: Any) -> bool:
    """Whether the env's observations need RLlib's FlattenObservations connector to reach the module.

    RLlib's default encoders take only ``Box`` observations; a ``Discrete`` state (the maze) is one-hot
    encoded, and a ``Dict``/``Tuple`` one flattened, by that connector, which is saved with the
    checkpoint, so serving applies it too.
    """
    import gymnasium as gym

    from workloads.envs import ENV_CREATORS, make_env

    if env not in ENV_CREATORS:
        return False  # a Gymnasium id RLlib makes itself: its spaces are RLlib's concern
    space = make_env(env, dict(env_config or {})).observation_space
    spaces = gym.spaces
    return isinstance(space, spaces.Discrete | spaces.MultiDiscrete | spaces.Dict | spaces.Tuple)


def _flatten_observations(env: Any = None, spaces: Any = None, device: Any = None) -> Any:
    """The env-to-module connector for ``needs_flattening`` envs (a module-level function: it pickles)."""
    from ray.rllib.connectors.env_to_module import FlattenObservations

    return FlattenObservations()


def search_value(kind: str, values: list[Any]) -> Any:
    """A Tune search-space object for one ``search_space`` entry."""
    from ray import tune

    if kind == "grid_search":
        return tune.grid_search(list(values))
    if kind == "choice":
        return tune.choice(list(values))
    if kind == "uniform":
        return tune.uniform(float(values[0]), float(values[1]))
    return tune.loguniform(float(values[0]), float(values[1]))


def build_param_space(settings: TrainSettings) -> dict[str, Any]:
    """The trial config dict Tune samples from: the PPO config with search-space entries swapped in."""
    space = build_algo_config(settings).to_dict()
    for key, spec in settings.search_space.items():
        kind, values = next(iter(spec.items()))
        space[SEARCHABLE[key]] = search_value(kind, values)
    return space


def trial_resources(settings: TrainSettings) -> dict[str, float]:
    """What one trial asks the cluster for in total (main process, env runners, learners)."""
    from ray.rllib.algorithms.ppo import PPO

    factory = PPO.default_resource_request(build_algo_config(settings))
    total: dict[str, float] = {}
    for bundle in factory.bundles:
        for key, amount in bundle.items():
            total[key] = total.get(key, 0.0) + float(amount)
    return total


def build_tune_config(settings: TrainSettings) -> Any:
    from ray import tune

    scheduler = None
    if settings.scheduler.type == "asha":
        from ray.tune.schedulers import ASHAScheduler

        max_t = settings.scheduler.max_t or settings.stop.iters or 100
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_t,
            grace_period=min(settings.scheduler.grace_period, max_t),
            reduction_factor=settings.scheduler.reduction_factor,
        )
    return tune.TuneConfig(
        metric=METRIC,
        mode="max",
        num_samples=settings.num_samples,
        scheduler=scheduler,
        max_concurrent_trials=settings.max_concurrent_trials,
    )


def build_run_config(
    settings: TrainSettings, storage_path: str, filesystem: Any, callbacks: list[Any]
) -> Any:
    from ray import tune

    return tune.RunConfig(
        name=settings.name,
        storage_path=storage_path,
        storage_filesystem=filesystem,
        stop=settings.stop.tune_dict(),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=settings.checkpoint.num_to_keep,
            checkpoint_score_attribute=METRIC,
            checkpoint_score_order="max",
            checkpoint_frequency=settings.checkpoint.frequency,
            checkpoint_at_end=True,
        ),
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        callbacks=callbacks,
        verbose=0,
    )
