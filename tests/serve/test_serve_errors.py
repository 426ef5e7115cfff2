"""One error shape (issue 14 §3): every client error from the app is ``{"error": {kind, message, field}}``,
booleans are strict, and no error echoes a client's input unbounded. Real Ray Serve, real HTTP.
"""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.slow

JSON = {"content-type": "application/json"}


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text[:500]
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"kind", "message", "field"}, body
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"[" * 10_000 + b"]" * 10_000, "RecursionError"),
        (b'{"state": [' + b"7" * 5000 + b"]}", "digits"),
        (b'{"state": [1], "observation": "\xff\xfe"}', "UnicodeDecodeError"),
        (b'{"state": [1]}\xff', "UnicodeDecodeError"),
    ],
    ids=["nesting-10000", "integer-5000-digits", "invalid-utf8-in-string", "invalid-utf8-trailing"],
)
def test_parse_failures_get_the_error_shape(corridor_url: str, raw: bytes, why: str) -> None:
    error = _error(httpx.post(f"{corridor_url}/", content=raw, headers=JSON, timeout=30), 400)
    assert error["kind"] == "invalid_json" and why in error["message"], error


def test_unknown_route_gets_the_error_shape(corridor_url: str) -> None:
    error = _error(httpx.get(f"{corridor_url}/no-such-route", timeout=30), 404)
    assert error["kind"] == "not_found" and "/no-such-route" in error["message"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_wrong_method_gets_the_error_shape(corridor_url: str, method: str) -> None:
    resp = httpx.request(method, f"{corridor_url}/", json={"state": [1]}, timeout=30)
    error = _error(resp, 405)
    assert error["kind"] == "method_not_allowed" and "GET" in error["message"] and "POST" in error["message"]
    assert "GET" in resp.headers.get("allow", "")


@pytest.mark.parametrize("flag", ["return_probs", "deterministic"])
@pytest.mark.parametrize("value", ["yes", "true", 1, 0, "false", None, [True]])
def test_flags_are_strict_booleans(corridor_url: str, flag: str, value) -> None:
    resp = httpx.post(f"{corridor_url}/", json={"state": [1], flag: value}, timeout=30)
    error = _error(resp, 422)
    assert error["field"] == flag and error["kind"] == "type", error


@pytest.mark.parametrize("flag", ["return_probs", "deterministic"])
def test_real_booleans_still_work(corridor_url: str, flag: str) -> None:
    for value in (True, False):
        resp = httpx.post(f"{corridor_url}/", json={"state": [1], flag: value}, timeout=30)
        assert resp.status_code == 200, resp.text


def test_a_huge_unknown_key_is_not_echoed(corridor_url: str) -> None:
    key = "k" * 1_000_000
    resp = httpx.post(f"{corridor_url}/", json={"state": [1], key: 1}, timeout=60)
    error = _error(resp, 422)
    assert error["kind"] == "extra_forbidden"
    assert len(resp.content) < 2_000, f"a 1 MB key produced a {len(resp.content)}-byte error"
    assert error["field"].startswith("k" * 100) and len(error["field"]) < 200


def test_huge_values_are_not_echoed(corridor_url: str) -> None:
    resp = httpx.post(f"{corridor_url}/", json={"state": "s" * 500_000}, timeout=60)
    assert 400 <= resp.status_code < 500 and len(resp.content) < 2_000, (resp.status_code, len(resp.content))
    resp = httpx.get(f"{corridor_url}/" + "p" * 3_000, timeout=60)
    error = _error(resp, 404)
    assert len(resp.content) < 2_000 and len(error["message"]) < 600
