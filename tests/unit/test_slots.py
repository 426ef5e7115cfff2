"""workloads.serving.slots: the feedback body, slot reconfiguration plans, shadow scores, recent episodes."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from workloads.serving.routing import ChallengerSettings
from workloads.serving.slots import (
    FeedbackRequest,
    RecentEpisodes,
    decision_fields,
    plan_slots,
    probability_of,
    shadow_score,
)

X, Y, Z = "s3://b/x", "s3://b/y", "s3://b/z"


def ch(uri: str, mode: str = "canary", weight: float = 0.5) -> ChallengerSettings:
    return ChallengerSettings(checkpoint_uri=uri, mode=mode, weight=weight)


def test_feedback_request_accepts_the_contract() -> None:
    f = FeedbackRequest.model_validate({"episode_id": "ep-1", "reward": 1, "done": True})
    assert (f.episode_id, f.reward, f.done, f.step) == ("ep-1", 1.0, True, None)
    assert (
        FeedbackRequest.model_validate({"episode_id": "a:b.c_d-e", "reward": -0.5, "step": 3}).done is False
    )


@pytest.mark.parametrize(
    "body, field",
    [
        ({"reward": 1.0}, "episode_id"),
        ({"episode_id": "bad id", "reward": 1.0}, "episode_id"),
        ({"episode_id": "x" * 129, "reward": 1.0}, "episode_id"),
        ({"episode_id": 7, "reward": 1.0}, "episode_id"),
        ({"episode_id": "e"}, "reward"),
        ({"episode_id": "e", "reward": "1.0"}, "reward"),
        ({"episode_id": "e", "reward": True}, "reward"),
        ({"episode_id": "e", "reward": math.nan}, "reward"),
        ({"episode_id": "e", "reward": math.inf}, "reward"),
        ({"episode_id": "e", "reward": 1.0, "done": "yes"}, "done"),
        ({"episode_id": "e", "reward": 1.0, "done": 1}, "done"),
        ({"episode_id": "e", "reward": 1.0, "step": -1}, "step"),
        ({"episode_id": "e", "reward": 1.0, "step": 1.5}, "step"),
        ({"episode_id": "e", "reward": 1.0, "extra": 1}, "extra"),
    ],
)
def test_feedback_request_refuses_bad_input_naming_the_field(body: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        FeedbackRequest.model_validate(body)
    assert err.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    "have, want, plan",
    [
        ((None, None), (X, None), ("load", "none")),  # cold start
        ((X, None), (X, ch(Y, "shadow", 0.0)), ("keep", "load")),  # shadow starts
        ((X, Y), (X, ch(Y, "canary", 0.5)), ("keep", "keep")),  # weight change: nothing loads
        ((X, Y), (Y, None), ("from_challenger", "drop")),  # promotion: no reload
        ((X, Y), (X, None), ("keep", "drop")),  # abort
        ((Y, None), (X, None), ("load", "none")),  # undo after promotion
        ((X, Y), (Y, ch(X)), ("from_challenger", "from_champion")),  # swap without loading
        ((X, Y), (Y, ch(Y)), ("from_challenger", "keep")),  # promoted, still named: shared
        ((X, Y), (X, ch(Z)), ("keep", "load")),  # a new challenger replaces the old one
        ((X, None), (Z, None), ("load", "none")),  # Replace strategy: today's swap
    ],
)
def test_plan_slots(have, want, plan) -> None:
    got = plan_slots(have[0], have[1], want[0], want[1])
    assert (got.champion, got.challenger) == plan
    assert got.loads == sum(p == "load" for p in plan)


def test_plan_slots_uses_the_uri_comparison_given() -> None:
    same = lambda a, b: a is not None and b is not None and a.rstrip("/") == b.rstrip("/")  # noqa: E731
    assert plan_slots(X, Y, Y + "/", None, same).champion == "from_challenger"
    assert plan_slots(X, Y, Y + "/", None).champion == "load"


def test_probability_of_and_shadow_score() -> None:
    probs = [0.1, 0.6, 0.3]
    assert probability_of(1, probs) == 0.6
    for action in (3, -1, True, 1.0, [1], None):
        assert probability_of(action, probs) is None
    assert probability_of(0, None) is None and probability_of(0, [math.nan]) is None
    score = shadow_score(Y, 2, probs, own_action=1, value=4.5)
    assert score == {"checkpoint_uri": Y, "prob": 0.3, "probs": probs, "action": 1, "value": 4.5}
    assert shadow_score(Y, [0.5], None) == {"checkpoint_uri": Y}  # continuous action: no probability
    assert shadow_score(Y, 1, probs, error="x" * 400)["error"] == "x" * 300


def test_recent_episodes_is_bounded_lru() -> None:
    r = RecentEpisodes(capacity=3)
    for eid in ("a", "b", "c"):
        r.seen(eid)
    r.seen("a")  # refresh a
    r.seen("d")  # evicts b, the least recently seen
    assert "a" in r and "b" not in r and "d" in r and len(r) == 3
    with pytest.raises(ValueError, match="capacity"):
        RecentEpisodes(0)


def test_decision_fields_make_a_valid_record_with_the_right_stage_key() -> None:
    from rlops_core.decision_log import DecisionRecord

    shadow = shadow_score(Y, 2, [0.2, 0.2, 0.6])
    fields = decision_fields(
        episode_id="ep-1",
        slot="champion",
        checkpoint_uri=X,
        challenger=ch(Y, "shadow", 0.7),
        action=2,
        probabilities=[0.1, 0.3, 0.6],
        deterministic=False,
        step=4,
        observation=[1.0],
        latency_ms=1.5,
        shadow=shadow,
    )
    assert fields["mode"] == "shadow" and fields["weight"] == 0.0 and fields["prob"] == 0.6
    rec = DecisionRecord.model_validate({**fields, "replica": "r", "seq": 0, "time": 1.0})
    assert rec.shadow.prob == 0.6 and rec.challenger_uri == Y
    greedy = decision_fields(
        episode_id="e",
        slot="challenger",
        checkpoint_uri=Y,
        challenger=ch(Y, "canary", 0.3),
        action=1,
        probabilities=[0.1, 0.9],
        deterministic=True,
    )
    assert greedy["prob"] is None and greedy["weight"] == 0.3 and greedy["deterministic"]
    alone = decision_fields(
        episode_id="e",
        slot="champion",
        checkpoint_uri=X,
        challenger=None,
        action=[0.5],
        probabilities=None,
        deterministic=False,
    )
    assert alone["mode"] == "none" and alone["prob"] is None and alone["challenger_uri"] is None
