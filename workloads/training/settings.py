"""Training settings: presets, YAML files and flags merged into one validated ``TrainSettings``.

Merge order (later wins): preset, ``--config`` file, command-line flags. A YAML file may say
``extends: <preset>`` to start from a shipped preset. Every key is checked (unknown keys are errors),
and ``check_before_ray`` checks what needs I/O (the env can be built, storage is reachable) so that a
bad configuration fails with one message before any Ray work starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
METRIC = "env_runners/episode_return_mean"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SettingsError(ValueError):
    """The training configuration is unusable; the message says why (one line)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PPOParams(_Strict):
    """PPO hyperparameters passed to ``PPOConfig.training`` (unset ones keep RLlib's defaults)."""

    lr: float | None = Field(None, gt=0)
    gamma: float | None = Field(None, gt=0, le=1)
    lambda_: float | None = Field(None, alias="lambda", ge=0, le=1)
    train_batch_size_per_learner: int | None = Field(None, ge=1)
    minibatch_size: int | None = Field(None, ge=1)
    num_epochs: int | None = Field(None, ge=1)
    entropy_coeff: float | None = Field(None, ge=0)
    vf_loss_coeff: float | None = Field(None, ge=0)
    clip_param: float | None = Field(None, gt=0)
    vf_clip_param: float | None = Field(None, gt=0)
    kl_coeff: float | None = Field(None, ge=0)
    kl_target: float | None = Field(None, gt=0)
    use_kl_loss: bool | None = None
    grad_clip: float | None = Field(None, gt=0)

    def rllib_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``PPOConfig.training`` (RLlib spells lambda ``lambda_``)."""
        return {k: v for k, v in self.model_dump(by_alias=False).items() if v is not None}


# Search-space keys are PPO hyperparameters, named as in RLlib's config dict.
SEARCHABLE = {
    "lr": "lr",
    "gamma": "gamma",
    "lambda": "lambda",
    "train_batch_size_per_learner": "train_batch_size_per_learner",
    "minibatch_size": "minibatch_size",
    "num_epochs": "num_epochs",
    "entropy_coeff": "entropy_coeff",
    "vf_loss_coeff": "vf_loss_coeff",
    "clip_param": "clip_param",
    "kl_coeff": "kl_coeff",
}


class ModelParams(_Strict):
    """The default RLModule's network (``DefaultModelConfig`` keys)."""

    fcnet_hiddens: list[int] | None = None
    fcnet_activation: Literal["tanh", "relu", "swish", "linear"] | None = None
    vf_share_layers: bool | None = None

    @field_validator("fcnet_hiddens")
    @classmethod
    def _positive_layers(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(n < 1 for n in value)):
            raise ValueError("fcnet_hiddens must be a non-empty list of positive layer sizes")
        return value

    def rllib_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Resources(_Strict):
    """Where the work runs: env runners sample, learners update (GPUs per learner)."""

    num_env_runners: int = Field(1, ge=0)
    num_envs_per_env_runner: int = Field(1, ge=1)
    num_cpus_per_env_runner: float = Field(1, gt=0)
    rollout_fragment_length: int | Literal["auto"] = "auto"
    num_learners: int = Field(0, ge=0)
    num_gpus_per_learner: float = Field(0, ge=0)
    num_cpus_for_main_process: float = Field(1, gt=0)

    @field_validator("rollout_fragment_length")
    @classmethod
    def _positive_fragment(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("rollout_fragment_length must be at least 1 (or 'auto')")
        return value

    @field_validator("num_gpus_per_learner")
    @classmethod
    def _whole_gpus(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError("num_gpus_per_learner above 1 must be a whole number")
        return value


class Stop(_Strict):
    """Stop criteria; a trial stops at whichever comes first."""

    iters: int | None = Field(None, ge=1)
    timesteps: int | None = Field(None, ge=1)
    return_: float | None = Field(None, alias="return")

    def tune_dict(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.iters is not None:
            out["training_iteration"] = self.iters
        if self.timesteps is not None:
            out["num_env_steps_sampled_lifetime"] = self.timesteps
        if self.return_ is not None:
            out[METRIC] = self.return_
        return out


class CheckpointSettings(_Strict):
    """How many checkpoints each trial keeps (the best by the metric) and how often it writes one."""

    num_to_keep: int = Field(3, ge=1)
    frequency: int = Field(1, ge=1)


class SchedulerSettings(_Strict):
    """An optional ASHA scheduler (early stopping of weak trials, by training iteration)."""

    type: Literal["none", "asha"] = "none"
    grace_period: int = Field(2, ge=1)
    reduction_factor: float = Field(3, gt=1)
    max_t: int | None = Field(None, ge=1)


class TrainSettings(_Strict):
    """Everything one training run needs; see docs/training.md for each key."""

    env: str
    env_config: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None
    storage: str = "results"
    num_samples: int = Field(1, ge=1)
    seed: int | None = None
    ppo: PPOParams = Field(default_factory=PPOParams)
    model: ModelParams = Field(default_factory=ModelParams)
    resources: Resources = Field(default_factory=Resources)
    search_space: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)
    stop: Stop = Field(default_factory=Stop)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(1, ge=0)
    promote: bool = False
    channel: str | None = None
    force: bool = False
    autoscaler: bool = False
    verbose: bool = False

    @field_validator("env")
    @classmethod
    def _known_env(cls, value: str) -> str:
        from workloads.envs import ENV_CREATORS

        if value not in ENV_CREATORS:
            raise ValueError(f"unknown env {value!r}; choose one of {sorted(ENV_CREATORS)}")
        return value

    @field_validator("name", "channel")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.match(value):
            raise ValueError(
                f"{value!r} must be 1-100 letters, digits, '.', '_' or '-' (starting with a letter/digit)"
            )
        return value

    @field_validator("storage")
    @classmethod
    def _storage_uri(cls, value: str) -> str:
        from rlops_core import storage

        try:
            return storage.parse_uri(value).uri
        except storage.StorageURIError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("search_space")
    @classmethod
    def _search_space(cls, value: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        for key, spec in value.items():
            if key not in SEARCHABLE:
                raise ValueError(f"cannot search over {key!r}; searchable keys: {sorted(SEARCHABLE)}")
            if len(spec) != 1:
                raise ValueError(
                    f"search_space.{key} needs exactly one of grid_search, choice, uniform, loguniform"
                )
            kind, values = next(iter(spec.items()))
            if kind not in ("grid_search", "choice", "uniform", "loguniform"):
                raise ValueError(f"search_space.{key}: unknown kind {kind!r}")
            if not values:
                raise ValueError(f"search_space.{key}.{kind} is empty")
            if kind in ("uniform", "loguniform"):
                if (
                    len(values) != 2
                    or not all(isinstance(v, int | float) for v in values)
                    or values[0] >= values[1]
                ):
                    raise ValueError(f"search_space.{key}.{kind} must be [low, high] with low < high")
                if kind == "loguniform" and values[0] <= 0:
                    raise ValueError(f"search_space.{key}.loguniform needs a positive low bound")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainSettings:
        if not (self.stop.iters or self.stop.timesteps or self.stop.return_ is not None):
            raise ValueError("no stop criterion: set stop.iters, stop.timesteps or stop.return")
        if self.name is None:
            self.name = f"{self.env}-ppo"
        if self.channel is None:
            self.channel = self.env
        if self.channel == self.name:
            raise ValueError(
                f"channel {self.channel!r} must differ from the experiment name (their pointers collide)"
            )
        if self.scheduler.type == "asha" and self.num_samples == 1 and not self.search_space:
            raise ValueError("ASHA needs more than one trial (num_samples > 1 or a search space)")
        return self

    @property
    def metric(self) -> str:
        return METRIC

    @property
    def experiment_uri(self) -> str:
        from rlops_core import storage

        return storage.join_uri(self.storage, str(self.name))


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if (
            isinstance(value, dict)
            and isinstance(out.get(key), dict)
            and key not in ("search_space", "env_config")
        ):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one settings YAML file, resolving ``extends: <preset>`` chains."""
    if path in _seen:
        raise SettingsError(f"preset cycle through {path.name}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise SettingsError(f"config file {path} does not exist") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping of settings")
    parent = data.pop("extends", None)
    if parent is not None:
        data = _deep_merge(load_preset(str(parent), _seen=(*_seen, path)), data)
    return data


def load_preset(name: str, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The settings of a shipped preset (``workloads/presets/<name>.yaml``)."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not _NAME_RE.match(name) or not path.is_file():
        raise SettingsError(f"unknown preset {name!r}; choose one of {list_presets()}")
    return load_yaml(path, _seen)


def build_settings(
    *, preset: str | None = None, config_file: str | None = None, overrides: dict[str, Any] | None = None
) -> TrainSettings:
    """Merge preset < config file < overrides and validate; SettingsError with one clear line if bad."""
    data: dict[str, Any] = {}
    if preset:
        data = load_preset(preset)
    if config_file:
        data = _deep_merge(data, load_yaml(Path(config_file)))
    data = _deep_merge(data, overrides or {})
    return validate(data)


def validate(data: dict[str, Any]) -> TrainSettings:
    """Validate a settings mapping into TrainSettings, folding pydantic's report into one line."""
    try:
        return TrainSettings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(
            str(p) for p in err["loc"] if p not in ("function-after[_positive_layers(), nullable]",)
        )
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid training settings: " + "; ".join(parts)


def check_before_ray(settings: TrainSettings) -> None:
    """Checks that need I/O but no Ray: the env builds with its config, the storage root is usable."""
    from rlops_core import storage
    from workloads.envs import make_env

    try:
        env = make_env(settings.env, settings.env_config)
        env.close()
    except Exception as exc:
        raise SettingsError(f"env {settings.env!r} rejects env_config {settings.env_config}: {exc}") from exc
    try:
        storage.check_reachable(settings.storage)
    except storage.StorageError as exc:
        raise SettingsError(f"storage {settings.storage} is not usable: {exc}") from exc
