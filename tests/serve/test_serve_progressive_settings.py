"""The Serve app's progressive-delivery settings and request models, without Ray (issue 11)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

serve_app = pytest.importorskip("workloads.serve_app")
from workloads.serving.api import ActRequest  # noqa: E402

BASE = {"checkpoint_uri": "/ckpt/champion"}


def test_absent_or_null_challenger_and_log_mean_champion_only_and_no_log() -> None:
    for config in (BASE, {**BASE, "challenger": None, "decision_log": None}):
        settings = serve_app.ServeSettings.model_validate(config)
        assert settings.challenger is None and settings.decision_log is None


def test_the_documented_challenger_and_decision_log_shape_is_accepted() -> None:
    config = {
        **BASE,
        "challenger": {"checkpoint_uri": "s3://b/ch", "mode": "canary", "weight": 1},
        "decision_log": {"root": "s3://b/rlops", "flush_records": 100, "flush_seconds": 0.5},
    }
    settings = serve_app.ServeSettings.model_validate(config)
    assert settings.challenger.weight == 1.0 and settings.challenger.mode == "canary"
    assert settings.decision_log.root == "s3://b/rlops"


@pytest.mark.parametrize(
    "challenger",
    [
        {"checkpoint_uri": "s3://b/ch", "mode": "canary", "weight": 1.5},
        {"checkpoint_uri": "s3://b/ch", "mode": "canary", "weight": -0.1},
        {"checkpoint_uri": "s3://b/ch", "mode": "canary", "weight": "0.5"},
        {"checkpoint_uri": "s3://b/ch", "mode": "blue-green"},
        {"checkpoint_uri": "", "mode": "shadow"},
        {"checkpoint_uri": "s3://b/ch", "mode": "shadow", "wieght": 0.1},
        {"mode": "shadow"},
    ],
)
def test_bad_challenger_settings_are_refused(challenger: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        serve_app.ServeSettings.model_validate({**BASE, "challenger": challenger})


@pytest.mark.parametrize(
    "body",
    [
        {"state": [1], "episode_id": ""},
        {"state": [1], "episode_id": "x" * 129},
        {"state": [1], "episode_id": "a/b"},
        {"state": [1], "episode_id": 12},
        {"state": [1], "episode_id": "ok", "step": -1},
        {"state": [1], "episode_id": "ok", "step": 1.5},
        {"state": [1], "episode_id": "ok", "step": "1"},
    ],
)
def test_bad_episode_fields_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ActRequest.model_validate(body)


def test_seed_shapes_still_parse_without_episode_fields() -> None:
    request = ActRequest.model_validate({"state": [1]})
    assert request.episode_id is None and request.step is None
    request = ActRequest.model_validate({"observation": [6.0], "episode_id": "run-1.w0:e3", "step": 0})
    assert request.episode_id == "run-1.w0:e3" and request.step == 0


def test_an_invalid_episode_id_error_names_the_field_and_the_rule() -> None:
    with pytest.raises(ValidationError) as caught:
        ActRequest.model_validate({"state": [1], "episode_id": "has space"})
    err = serve_app._classify(caught.value.errors())
    assert (err.status, err.kind, err.field) == (422, "invalid_episode_id", "episode_id")
    assert "A-Z a-z 0-9" in err.message and not err.message.startswith("Value error")
