"""One owner per target: of the PolicyRollouts that name the same deployment, the oldest acts.

The operator keeps a kopf index from target key (``TargetRef.key()``: RayService namespace/name or
dashboard URL, plus application and deployment) to the PolicyRollouts that claim it. The owner is the
claim with the oldest ``creationTimestamp`` (ties: the lower ``namespace/name``); every other claimant
is held (no new promotions) with a ``Conflict`` condition and Event until the conflict is gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from .spec import RolloutSpec, SpecError


class Claim(NamedTuple):
    """A PolicyRollout claiming a target; tuples order by age, then by name."""

    created: str
    rollout: str  # namespace/name


def target_key(spec: Any, namespace: str | None) -> tuple[str, ...] | None:
    """The key of the deployment a PolicyRollout's raw spec names; None when the spec is invalid."""
    try:
        return RolloutSpec.from_resource(dict(spec or {}), namespace=namespace).target.ref().key()
    except (SpecError, TypeError, ValueError):
        return None


def owner_of(claims: Iterable[Claim]) -> Claim | None:
    """The claim that owns the target: the oldest, then the lowest name."""
    return min(claims, default=None)


def conflict_message(me: str, owner: Claim, what: str) -> str:
    return (
        f"{what} is also named by PolicyRollout {owner.rollout}, which is older and owns it; "
        f"{me} promotes nothing until one of them names another target or is deleted"
    )
