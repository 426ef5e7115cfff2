"""The pure parts of the two-slot policy server: feedback input, slot reconfiguration plans, shadow scores.

Nothing here imports Ray, torch or FastAPI, so the Serve app's progressive-delivery logic is unit-tested here
and ``workloads/serve_app.py`` only wires it in:

- :class:`FeedbackRequest`: the body of ``POST /feedback`` (bad input: the policy route's 4xx JSON).
- :func:`plan_slots`: given what a replica holds and a new ``user_config``, which slot keeps its policy,
  which one moves (promotion: the loaded challenger becomes the champion without a reload) and which loads.
- :func:`probability_of` and :func:`shadow_score`: the challenger's probability of the champion's action.
- :class:`RecentEpisodes`: a bounded memory of the episode ids this replica answered, to count feedback for
  episodes it never saw (accepted, counted, never an error; the joined logs hold the real count).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from .routing import ChallengerSettings, validate_episode_id


class FeedbackRequest(BaseModel):
    """``POST /feedback``: the reward that followed an answer, and whether the episode ended."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"episode_id": "ep-42", "reward": 1.0, "done": False}]},
    )

    episode_id: str = Field(..., description="The episode's id, as sent with its requests.")
    reward: float = Field(..., strict=True, allow_inf_nan=False, description="A finite number.")
    done: StrictBool = Field(False, description="True on the episode's last feedback.")
    step: int | None = Field(None, ge=0, strict=True, description="Optional step index in the episode.")

    @field_validator("episode_id", mode="before")
    @classmethod
    def _valid_id(cls, value: Any) -> str:
        return validate_episode_id(value)


# ------------------------------------------------------------------------------------------ reconfigure
SlotAction = Literal["keep", "load", "from_challenger", "from_champion", "drop", "none"]


@dataclass(frozen=True)
class SlotPlan:
    """What a replica does with each slot on ``reconfigure()``.

    ``champion``: ``keep`` (same URI), ``from_challenger`` (promotion: the loaded challenger becomes the
    champion, no reload) or ``load``. ``challenger``: ``keep``, ``from_champion`` (the old champion is the new
    challenger, e.g. an undo staged as a canary), ``load``, ``drop`` (the slot empties) or ``none``.
    """

    champion: SlotAction
    challenger: SlotAction

    @property
    def loads(self) -> int:
        return (self.champion == "load") + (self.challenger == "load")


def plan_slots(
    champion_uri: str | None,
    challenger_uri: str | None,
    new_champion_uri: str,
    new_challenger: ChallengerSettings | None,
    same: Any = None,
) -> SlotPlan:
    """The cheapest way from the loaded slots to the configured ones (``same(a, b)`` compares URIs)."""
    eq = same or (lambda a, b: a is not None and b is not None and a == b)
    if eq(champion_uri, new_champion_uri):
        champion: SlotAction = "keep"
    elif eq(challenger_uri, new_champion_uri):
        champion = "from_challenger"
    else:
        champion = "load"
    if new_challenger is None:
        challenger: SlotAction = "drop" if challenger_uri else "none"
    elif eq(challenger_uri, new_challenger.checkpoint_uri) and champion != "from_challenger":
        challenger = "keep"
    elif eq(champion_uri, new_challenger.checkpoint_uri):
        challenger = "from_champion"
    elif eq(challenger_uri, new_challenger.checkpoint_uri):
        challenger = "keep"  # promoted and still named as challenger: both slots share the loaded policy
    else:
        challenger = "load"
    return SlotPlan(champion, challenger)


# -------------------------------------------------------------------------------------------- shadow
def probability_of(action: Any, probabilities: Sequence[float] | None) -> float | None:
    """The probability a discrete distribution gives ``action``; None when it cannot say (not discrete)."""
    if probabilities is None or isinstance(action, bool) or not isinstance(action, int):
        return None
    if not 0 <= action < len(probabilities):
        return None
    p = float(probabilities[action])
    return p if math.isfinite(p) and 0.0 <= p <= 1.0 else None


def shadow_score(
    checkpoint_uri: str,
    served_action: Any,
    probabilities: Sequence[float] | None,
    own_action: Any = None,
    value: float | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The ``shadow`` field of a decision record: the challenger's view of the champion's answer."""
    if error is not None:
        return {"checkpoint_uri": checkpoint_uri, "error": error[:300]}
    score: dict[str, Any] = {
        "checkpoint_uri": checkpoint_uri,
        "prob": probability_of(served_action, probabilities),
        "probs": [float(p) for p in probabilities] if probabilities is not None else None,
        "action": own_action,
        "value": value if value is None or math.isfinite(value) else None,
    }
    return {k: v for k, v in score.items() if v is not None}


def decision_fields(
    *,
    episode_id: str,
    slot: str,
    checkpoint_uri: str,
    challenger: ChallengerSettings | None,
    action: Any,
    probabilities: Sequence[float] | None,
    deterministic: bool,
    step: int | None = None,
    observation: Any = None,
    latency_ms: float | None = None,
    shadow: dict[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The fields of one decision record for ``DecisionWriter.decision(**fields)``.

    ``prob`` is the answering policy's probability of the action it returned, and only for a sampled
    action: a greedy answer (``deterministic``) was not drawn from that distribution, so it has none.
    """
    return {
        "episode_id": episode_id,
        "step": step,
        "slot": slot,
        "checkpoint_uri": checkpoint_uri,
        "mode": challenger.mode if challenger is not None else "none",
        "weight": challenger.weight if challenger is not None and challenger.mode == "canary" else 0.0,
        "challenger_uri": challenger.checkpoint_uri if challenger is not None else None,
        "action": action,
        "prob": None if deterministic else probability_of(action, probabilities),
        "probs": [float(p) for p in probabilities] if probabilities is not None else None,
        "deterministic": deterministic,
        "observation": observation,
        "latency_ms": latency_ms,
        "shadow": shadow,
        "error": error,
    }


# -------------------------------------------------------------------------------------------- episodes
class RecentEpisodes:
    """The last ``capacity`` episode ids this replica answered (an LRU; O(1) per request)."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, episode_id: str) -> None:
        self._ids[episode_id] = None
        self._ids.move_to_end(episode_id)
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def __contains__(self, episode_id: object) -> bool:
        return episode_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)
