"""Routing by episode with no shared state: which slot (champion or challenger) answers a request.

An episode's id is hashed (BLAKE2b, keyed by nothing, so every replica and every restart agrees) to a point
in [0, 1). In canary mode the challenger answers the episode when the point is below the weight. Raising the
weight only moves champion episodes to the challenger (never back), so with fixed weights every request of an
episode is answered by the same slot whichever replica serves it. Requests without an episode id go to the
champion. In shadow mode the champion answers everything and the challenger only scores.

Also here: the challenger's settings as they appear in ``user_config.challenger``.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlops_core.decision_log import EPISODE_ID_PATTERN, EpisodeId, Slot

__all__ = ["EPISODE_ID_PATTERN", "ChallengerSettings", "EpisodeId", "EpisodeIdError", "Slot", "route"]

CHAMPION: Slot = "champion"
CHALLENGER: Slot = "challenger"
_EPISODE_ID = re.compile(EPISODE_ID_PATTERN)


class EpisodeIdError(ValueError):
    """An ``episode_id`` that is not 1-128 characters from ``[A-Za-z0-9._:-]``."""


def validate_episode_id(value: object) -> str:
    """Return a valid episode id unchanged, or raise EpisodeIdError saying what a valid one looks like."""
    if not isinstance(value, str):
        raise EpisodeIdError(f"episode_id must be a string, got {type(value).__name__}")
    if not _EPISODE_ID.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise EpisodeIdError(
            f"episode_id {shown!r} is invalid: use 1-128 characters from A-Z a-z 0-9 . _ : - "
            f"(got {len(value)} characters)"
        )
    return value


def episode_point(episode_id: str) -> float:
    """The episode's stable point in [0, 1): the first 8 bytes of BLAKE2b(episode_id) over 2**64."""
    digest = hashlib.blake2b(episode_id.encode("ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class ChallengerSettings(BaseModel):
    """``user_config.challenger``: the second policy slot. Absent or null: champion only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    checkpoint_uri: str = Field(..., min_length=1, description="The challenger's checkpoint directory.")
    mode: Literal["shadow", "canary"] = Field(
        "shadow",
        description="shadow: scored and logged, never returned. canary: answers a share of episodes.",
    )
    weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="canary: share of episodes the challenger answers.",
    )


def route(episode_id: str | None, challenger: ChallengerSettings | None) -> Slot:
    """The slot that answers this request. Cheap and pure: no I/O, no shared state."""
    if challenger is None or challenger.mode != "canary" or episode_id is None:
        return CHAMPION
    weight = challenger.weight
    if weight >= 1.0:
        return CHALLENGER
    if weight <= 0.0 or math.isnan(weight):
        return CHAMPION
    return CHALLENGER if episode_point(episode_id) < weight else CHAMPION


def shadow_scores(challenger: ChallengerSettings | None) -> bool:
    """Whether the challenger must also score each request (shadow mode)."""
    return challenger is not None and challenger.mode == "shadow"
