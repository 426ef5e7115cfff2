"""Request and response models of the policy endpoint, and checks of observations against the policy's space.

Bad input always ends as a 4xx JSON body ``{"error": {"kind", "message", "field"}}``; nothing here raises
anything but :class:`RequestError` for a client's mistake.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from .routing import validate_episode_id

MAX_BATCH = 1024  # observations per batch request; a larger body is rejected with 413
MAX_OBS_VALUES = 4096  # numbers per observation
MAX_ECHO_CHARS = 100  # the most of a client's input (a key, a value) any error message repeats
MAX_MESSAGE_CHARS = 500

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # strict: true/false are not numbers
Observation = Number | list[Number] | list[list[Number]]


class RequestError(Exception):
    """A client error: HTTP status, a short machine-readable kind, and a message naming the problem."""

    def __init__(self, status: int, kind: str, message: str, field: str | None = None) -> None:
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.field = None if field is None else clip(field, MAX_ECHO_CHARS)

    def body(self) -> dict[str, Any]:
        return {"error": {"kind": self.kind, "message": self.message, "field": self.field}}


def clip(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters (marked), so an error never echoes input unbounded."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


class ActRequest(BaseModel):
    """One of ``state`` (corridor tutorial), ``observation`` (Serve + RLlib guide) or ``observations``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"state": [1]}, {"observation": [6.0], "return_probs": True}]},
    )

    state: Observation | None = Field(None, description="One observation (the corridor tutorial's key).")
    observation: Observation | None = Field(None, description="One observation (the Serve + RLlib key).")
    observations: list[Observation] | None = Field(
        None, min_length=1, max_length=MAX_BATCH, description="A batch of observations."
    )
    deterministic: StrictBool = Field(False, description="Greedy action instead of a sample from the policy.")
    return_probs: StrictBool = Field(
        False, description="Add probabilities, log-prob, action distribution inputs and the value estimate."
    )
    episode_id: str | None = Field(
        None,
        description="The episode this step belongs to (1-128 of A-Z a-z 0-9 . _ : -): routes it to a slot "
        "and logs the decision. Only with one observation ('state' or 'observation').",
    )
    step: int | None = Field(None, ge=0, strict=True, description="Optional step index in the episode.")

    @field_validator("episode_id", mode="before")
    @classmethod
    def _valid_episode_id(cls, value: Any) -> Any:
        return None if value is None else validate_episode_id(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> ActRequest:
        given = [k for k in ("state", "observation", "observations") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'state', 'observation' or 'observations'"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def single(self) -> Any:
        return self.state if self.state is not None else self.observation


class Extras(BaseModel):
    """Per-observation model outputs (the fields of a SageMaker-style capture record)."""

    probabilities: list[float] | None = Field(None, description="Action probabilities (discrete actions).")
    log_prob: float | None = Field(None, description="Log-probability of the returned action.")
    action_dist_inputs: list[float] | None = Field(None, description="Action distribution inputs (logits).")
    value: float | None = Field(None, description="The value function's estimate for the observation.")


Action = int | float | list[int] | list[float]


class ActResponse(Extras):
    """The action for one observation, this replica's request count and the slot that answered."""

    action: Action
    count: int
    policy: str = Field("champion", description="The slot that answered: champion or challenger.")


class BatchResponse(BaseModel):
    """Actions for a batch, in request order; extras lists only with ``return_probs``."""

    actions: list[Action]
    count: int
    policy: str = Field("champion", description="The slot that answered (a batch: always the champion).")
    probabilities: list[list[float] | None] | None = None
    log_prob: list[float | None] | None = None
    action_dist_inputs: list[list[float] | None] | None = None
    value: list[float | None] | None = None


class LastError(BaseModel):
    checkpoint_uri: str
    error: str
    at: str


class Metric(BaseModel):
    name: str
    value: float


class Metadata(BaseModel):
    """Which checkpoint is live on this replica, and the latest failed reconfigure (if any)."""

    checkpoint_uri: str
    requested_checkpoint_uri: str
    metric: Metric
    env_id: str
    env_config: dict[str, Any]
    trial_id: str
    experiment: str
    loaded_at: str
    load_seconds: float
    swap_count: int
    promotions: int = Field(0, description="Challengers that became the champion here without a reload.")
    last_error: LastError | None
    observation_space: str
    action_space: str
    replica: str
    capture: dict[str, Any]
    challenger: dict[str, Any] | None = Field(
        None,
        description="The challenger slot (URI, mode, weight, metric, loaded_at, last_error); null: none.",
    )
    decision_log: dict[str, Any] | None = Field(
        None, description="The decision-log writer's status; null: not configured."
    )
    feedback: dict[str, int] = Field(
        default_factory=dict, description="Accepted POST /feedback: episodes this replica answered, or not."
    )
    inference: dict[str, Any] | None = Field(
        None,
        description="How the champion computes actions: path 'fast' (RLlib's default connector pipelines "
        "done directly on the batch) or 'pipelines' (the checkpoint's connectors run), reason; "
        "single_requests: how many were evaluated alone ('direct') or gathered by @serve.batch ('batched').",
    )


class FeedbackResponse(BaseModel):
    """``POST /feedback`` accepted the reward (logged off the request path)."""

    accepted: bool
    episode_id: str
    known_episode: bool = Field(..., description="This replica answered a request of this episode.")
    logged: bool = Field(..., description="Queued for the decision log (false: no log configured or full).")


class ErrorDetail(BaseModel):
    kind: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def parse_observation(value: Any, space: Any, field: str) -> Any:
    """Check one JSON observation against a gymnasium space; return what the env would have produced."""
    import gymnasium as gym
    import numpy as np

    if isinstance(space, gym.spaces.Discrete):
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RequestError(
                422, "shape", f"{field}: expected one integer for {space}, got {_describe(value)}", field
            )
        if not math.isfinite(value) or float(value) != int(value):
            raise RequestError(422, "type", f"{field}: expected an integer for {space}, got {value!r}", field)
        obs = int(value)
        if not space.contains(np.int64(obs)):
            raise RequestError(
                422,
                "range",
                f"{field}: {obs} is outside {space} ({space.start}..{space.start + space.n - 1})",
                field,
            )
        return obs
    if isinstance(space, gym.spaces.Box):
        if isinstance(value, int | float) and not isinstance(value, bool) and space.shape == (1,):
            value = [value]
        try:
            array = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise RequestError(422, "shape", f"{field}: not a rectangular array of numbers", field) from exc
        if array.size > MAX_OBS_VALUES:
            raise RequestError(
                413, "too_large", f"{field}: {array.size} values, at most {MAX_OBS_VALUES}", field
            )
        if array.shape != space.shape:
            raise RequestError(
                422, "shape", f"{field}: shape {list(array.shape)}, expected {list(space.shape)}", field
            )
        if not np.all(np.isfinite(array)):
            raise RequestError(422, "not_finite", f"{field}: NaN or infinity is not an observation", field)
        cast = array.astype(space.dtype)
        if not space.contains(cast):
            raise RequestError(
                422,
                "range",
                f"{field}: {array.tolist()} is outside the observation space "
                f"[{space.low.tolist()}, {space.high.tolist()}]",
                field,
            )
        return cast
    raise RequestError(501, "unsupported_space", f"observation space {space} is not supported by this server")


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return type(value).__name__
