"""workloads.serving.routing: stickiness, share per weight, monotone weight changes, bad ids refused."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from workloads.serving import routing
from workloads.serving.routing import ChallengerSettings, EpisodeIdError

IDS = [f"ep-{i:05d}" for i in range(1000)]


def canary(weight: float) -> ChallengerSettings:
    return ChallengerSettings(checkpoint_uri="s3://b/challenger", mode="canary", weight=weight)


@pytest.mark.parametrize("weight", [0.05, 0.1, 0.25, 0.5, 0.75, 0.9])
def test_share_is_within_five_points_of_the_weight(weight: float) -> None:
    share = sum(routing.route(i, canary(weight)) == "challenger" for i in IDS) / len(IDS)
    assert abs(share - weight) <= 0.05, f"weight {weight}: challenger answered {share:.3f} of 1000 episodes"


def test_uuid_like_and_numeric_ids_split_too() -> None:
    import uuid

    ids = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(1000)] + [str(i) for i in range(1000)]
    share = sum(routing.route(i, canary(0.3)) == "challenger" for i in ids) / len(ids)
    assert abs(share - 0.3) <= 0.05


def test_same_episode_same_slot_every_time_and_in_another_process() -> None:
    settings = canary(0.5)
    first = {i: routing.route(i, settings) for i in IDS}
    for _ in range(3):
        assert {i: routing.route(i, settings) for i in IDS} == first
    # another interpreter (another replica, another restart, another hash seed) agrees
    code = (
        "from workloads.serving import routing as r;"
        "s=r.ChallengerSettings(checkpoint_uri='s3://b/c', mode='canary', weight=0.5);"
        "print(''.join('1' if r.route(f'ep-{i:05d}', s)=='challenger' else '0' for i in range(1000)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    ).stdout.strip()
    assert out == "".join("1" if first[i] == "challenger" else "0" for i in IDS)


def test_raising_the_weight_never_moves_challenger_episodes_back() -> None:
    before = {i for i in IDS if routing.route(i, canary(0.1)) == "challenger"}
    after = {i for i in IDS if routing.route(i, canary(0.5)) == "challenger"}
    assert before and before < after


def test_edges_shadow_and_missing_episode() -> None:
    assert all(routing.route(i, canary(0.0)) == "champion" for i in IDS)
    assert all(routing.route(i, canary(1.0)) == "challenger" for i in IDS)
    assert routing.route(None, canary(1.0)) == "champion"  # no episode id: champion, as before
    assert routing.route("ep-1", None) == "champion"
    shadow = ChallengerSettings(checkpoint_uri="s3://b/c", mode="shadow", weight=1.0)
    assert routing.route("ep-1", shadow) == "champion" and routing.shadow_scores(shadow)
    assert not routing.shadow_scores(canary(0.5)) and not routing.shadow_scores(None)


def test_points_are_in_the_unit_interval() -> None:
    points = [routing.episode_point(i) for i in IDS]
    assert all(0.0 <= p < 1.0 for p in points)
    assert routing.episode_point("a") == routing.episode_point("a") != routing.episode_point("b")


@pytest.mark.parametrize(
    "bad",
    ["", "x" * 129, "has space", "slash/no", "ümlaut", "new\nline", "semi;colon", "tab\t", 12, None, ["a"]],
)
def test_bad_episode_ids_are_refused(bad: object) -> None:
    with pytest.raises(EpisodeIdError, match="episode_id"):
        routing.validate_episode_id(bad)


@pytest.mark.parametrize("good", ["a", "x" * 128, "A-z_0.9:run-1", "2026-11-22T03:00:00Z"])
def test_good_episode_ids_pass(good: str) -> None:
    assert routing.validate_episode_id(good) == good


@pytest.mark.parametrize(
    "config, match",
    [
        ({"mode": "canary", "weight": 0.5}, "checkpoint_uri"),
        ({"checkpoint_uri": "", "weight": 0.5}, "checkpoint_uri"),
        ({"checkpoint_uri": "s3://b/c", "mode": "blue", "weight": 0.5}, "mode"),
        ({"checkpoint_uri": "s3://b/c", "weight": 1.5}, "weight"),
        ({"checkpoint_uri": "s3://b/c", "weight": -0.1}, "weight"),
        ({"checkpoint_uri": "s3://b/c", "weight": float("nan")}, "weight"),
        ({"checkpoint_uri": "s3://b/c", "weight": "0.5"}, "weight"),  # strict: no strings for numbers
        ({"checkpoint_uri": "s3://b/c", "weight": True}, "weight"),
        ({"checkpoint_uri": "s3://b/c", "weight": 0.5, "extra": 1}, "extra"),
    ],
)
def test_challenger_settings_validation(config: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        ChallengerSettings.model_validate(config)


def test_challenger_settings_defaults_and_ints() -> None:
    s = ChallengerSettings.model_validate({"checkpoint_uri": "s3://b/c"})
    assert s.mode == "shadow" and s.weight == 0.0
    assert ChallengerSettings.model_validate({"checkpoint_uri": "s3://b/c", "weight": 1}).weight == 1.0
