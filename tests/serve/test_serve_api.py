"""The policy endpoint over real Ray Serve: both request shapes, GET and POST, batch, extras, validation."""

from __future__ import annotations

import math

import httpx
import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("key", ["state", "observation"])
def test_single_request_shapes(corridor_url: str, method: str, key: str) -> None:
    first = httpx.request(method, f"{corridor_url}/", json={key: [1]}, timeout=30)
    second = httpx.request(method, f"{corridor_url}/", json={key: [6.0]}, timeout=30)
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"action", "count", "policy"}
    assert body["policy"] == "champion"  # no challenger configured: the champion answers everything
    assert type(body["action"]) is int and body["action"] in (0, 1)
    assert second.json()["count"] > body["count"]  # the replica's request counter


def test_state_one_moves_right_almost_always(corridor_url: str) -> None:
    """At the left end (state 1) the trained policy goes right; sampled, so allow a rare left."""
    actions = [
        httpx.post(f"{corridor_url}/", json={"state": [1]}, timeout=30).json()["action"] for _ in range(20)
    ]
    assert sum(actions) >= 17


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_batch_request(corridor_url: str, method: str) -> None:
    obs = [[1], [2], [3], [5], [6]]
    resp = httpx.request(
        method, f"{corridor_url}/", json={"observations": obs, "deterministic": True}, timeout=30
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["actions"]) == len(obs)
    assert (
        body["actions"][0] == 1 and body["actions"][-1] == 0
    )  # greedy: right from the left end, left from the right
    assert isinstance(body["count"], int)


def test_return_probs_single(corridor_url: str) -> None:
    body = httpx.post(f"{corridor_url}/", json={"state": [3], "return_probs": True}, timeout=30).json()
    assert math.isclose(sum(body["probabilities"]), 1.0, rel_tol=1e-5)
    assert len(body["action_dist_inputs"]) == 2
    assert math.isclose(body["log_prob"], math.log(body["probabilities"][body["action"]]), abs_tol=1e-4)
    assert isinstance(body["value"], float)


def test_return_probs_batch_and_greedy_is_argmax(corridor_url: str) -> None:
    obs = [[1], [3], [6]]
    body = httpx.post(
        f"{corridor_url}/",
        json={"observations": obs, "return_probs": True, "deterministic": True},
        timeout=30,
    ).json()
    for action, probs in zip(body["actions"], body["probabilities"], strict=True):
        assert action == max(range(len(probs)), key=probs.__getitem__)
    assert len(body["value"]) == len(obs) and len(body["log_prob"]) == len(obs)


def test_metadata_and_health(corridor_url: str, corridor_checkpoints) -> None:
    meta = httpx.get(f"{corridor_url}/metadata", timeout=30).json()
    assert meta["checkpoint_uri"] == corridor_checkpoints.final
    assert meta["metric"]["name"] == "env_runners/episode_return_mean" and meta["metric"]["value"] > 8.0
    assert meta["env_id"] == "corridor"
    assert meta["swap_count"] == 0 and meta["last_error"] is None and meta["loaded_at"]
    health = httpx.get(f"{corridor_url}/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_openapi_documents_the_api(corridor_url: str) -> None:
    schema = httpx.get(f"{corridor_url}/openapi.json", timeout=30).json()
    root = schema["paths"]["/"]
    assert {"get", "post"} <= set(root)
    assert "requestBody" in root["post"] and {"200", "400", "413", "422"} <= set(root["post"]["responses"])
    props = schema["components"]["schemas"]["ActRequest"]["properties"]
    assert {"state", "observation", "observations", "deterministic", "return_probs"} <= set(props)
    assert "/metadata" in schema["paths"] and "/healthz" in schema["paths"]


BAD_JSON = [
    ({"state": [9]}, 422, "range"),
    ({"state": [-0.5]}, 422, "range"),
    ({"state": [1, 2]}, 422, "shape"),
    ({"state": [[1]]}, 422, "shape"),
    ({"state": "left"}, 422, "type"),
    ({"state": [True]}, 422, "type"),
    ({"observation": None}, 422, "value_error"),
    ({}, 422, "value_error"),
    ({"state": [1], "observation": [1]}, 422, "value_error"),
    ({"state": [1], "extra": 1}, 422, "extra_forbidden"),
    ({"observations": []}, 422, "too_short"),
    ({"observations": [[1]] * 1025}, 413, "too_large"),
    ({"observations": [[1], [7]]}, 422, "range"),
    ({"state": [1], "deterministic": "maybe"}, 422, "type"),
    ({"state": [1], "return_probs": "true"}, 422, "type"),
    ([1, 2], 400, "invalid_json"),
]


@pytest.mark.parametrize(("body", "status", "kind"), BAD_JSON)
def test_bad_requests_get_4xx_naming_the_problem(corridor_url: str, body, status: int, kind: str) -> None:
    resp = httpx.post(f"{corridor_url}/", json=body, timeout=30)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["kind"] == kind, error
    assert error["message"]


@pytest.mark.parametrize(
    ("raw", "status", "kind"),
    [
        (b'{"state": [NaN]}', 422, "not_finite"),
        (b'{"state": [Infinity]}', 422, "not_finite"),
        (b'{"observations": [[1], [-Infinity]]}', 422, "not_finite"),
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_non_finite_and_non_json_bodies(
    corridor_url: str, raw: bytes, status: int, kind: str, method: str
) -> None:
    resp = httpx.request(
        method, f"{corridor_url}/", content=raw, headers={"content-type": "application/json"}, timeout=30
    )
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["kind"] == kind


def test_replica_survives_bad_input(corridor_url: str) -> None:
    before = httpx.get(f"{corridor_url}/metadata", timeout=30).json()["replica"]
    for raw in (b"[[[[", b'{"state": [1e400]}', b'{"observations": "x"}'):
        assert 400 <= httpx.post(f"{corridor_url}/", content=raw, timeout=30).status_code < 500
    assert httpx.get(f"{corridor_url}/metadata", timeout=30).json()["replica"] == before
