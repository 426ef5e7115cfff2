"""The Serve REST client against a real HTTP server on loopback (tests/helpers/http_server.py).

What these prove: the token goes only where it is allowed, never across a redirect and never into a
message; reads have a total deadline and a size bound; unexpected answer shapes are typed errors;
waiting has a deadline and names what it saw.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from rlops_core.serve_client import (
    APPLICATIONS_PATH,
    ServeAppFailed,
    ServeBadAnswer,
    ServeClient,
    ServeRefused,
    ServeTimeout,
    ServeUnreachable,
    get_json,
    host_allowed,
    host_of,
    redact_url,
)
from tests.helpers.http_server import RecordingServer, Reply
from tests.helpers.paths import free_port

TOKEN = "s3cr3t-token-value-1234"


def app(name: str, status: str = "RUNNING", source: str = "declarative", **extra: Any) -> dict[str, Any]:
    config = {"name": name, "import_path": "x:app", "deployments": [{"name": "D", "user_config": {}}]}
    return {
        "name": name,
        "status": status,
        "message": "",
        "source": source,
        "deployed_app_config": config,
        "deployments": {"D": {"name": "D", "status": "HEALTHY", "message": ""}},
        **extra,
    }


def details(*apps: dict[str, Any]) -> dict[str, Any]:
    return {
        "http_options": {"host": "0.0.0.0", "port": 8000, "root_path": ""},
        "proxy_location": "EveryNode",
        "applications": {a["name"]: a for a in apps},
        "controller_info": {"node_id": "n"},
    }


@pytest.fixture
def server() -> Any:
    with RecordingServer() as srv:
        yield srv


def test_details_are_typed_and_the_token_goes_to_the_url_the_caller_chose(server: RecordingServer) -> None:
    server.routes[APPLICATIONS_PATH] = Reply(200, details(app("a"), app("b", status="DEPLOYING")))
    with ServeClient(server.url, TOKEN) as client:
        got = client.details()
    assert got.applications["a"].status == "RUNNING"
    assert got.applications["b"].deployments["D"].status == "HEALTHY"
    assert got.model_extra == {"controller_info": {"node_id": "n"}}  # unknown keys are kept
    assert server.requests()[0].headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("allowed", [(), ("other-host",), ("127.0.0.1:1",), ("localhost",)])
def test_no_token_for_a_host_outside_the_allow_list(
    server: RecordingServer, allowed: tuple[str, ...]
) -> None:
    server.routes[APPLICATIONS_PATH] = Reply(401, {"error": "token required"})
    client = ServeClient(server.url, TOKEN, allowed_hosts=allowed)
    assert not client.sends_token
    with pytest.raises(ServeRefused) as info:
        client.details()
    assert "authorization" not in server.requests()[0].headers
    assert info.value.reason == "Unauthorized"
    assert "allowed dashboard hosts" in info.value.message  # says what to do next
    assert TOKEN not in str(info.value) and TOKEN not in repr(client)


@pytest.mark.parametrize("entry", ["127.0.0.1", "127.0.0.1:{port}", " 127.0.0.1:{port} "])
def test_token_for_an_allowed_host(server: RecordingServer, entry: str) -> None:
    server.routes[APPLICATIONS_PATH] = Reply(200, details())
    ServeClient(server.url, TOKEN, allowed_hosts=[entry.format(port=server.port)]).details()
    assert server.requests()[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_a_redirect_to_another_host_is_not_followed_and_the_token_stays_home(server: RecordingServer) -> None:
    with RecordingServer() as elsewhere:
        elsewhere.routes[APPLICATIONS_PATH] = Reply(200, details())
        server.routes[APPLICATIONS_PATH] = Reply(302, headers={"Location": elsewhere.url + APPLICATIONS_PATH})
        with pytest.raises(ServeRefused) as info:
            ServeClient(server.url, TOKEN).details()
        for method in ("GET", "PUT"):
            location = elsewhere.url + "/x?t=" + TOKEN
            server.routes[APPLICATIONS_PATH] = Reply(307, headers={"Location": location})
            with pytest.raises(ServeRefused):
                client = ServeClient(server.url, TOKEN)
                client.details() if method == "GET" else client.put({"applications": []})
        assert elsewhere.requests() == []  # nothing, with or without credentials, reached the other host
    assert info.value.reason == "Redirect" and info.value.status_code == 302
    assert "redirect" in info.value.message and "final address" in info.value.message


def test_the_token_never_appears_in_errors(server: RecordingServer) -> None:
    def echo(seen: Any) -> Reply:  # a hostile or buggy server that echoes the request headers
        return Reply(500, raw=f"boom {seen.headers.get('authorization')}".encode())

    server.routes[APPLICATIONS_PATH] = echo
    with pytest.raises(ServeRefused) as info:
        ServeClient(server.url, TOKEN).details()
    assert info.value.reason == "HTTP500"
    assert TOKEN not in str(info.value) and "***" in str(info.value)
    assert TOKEN not in repr(info.value.args)


def test_user_info_in_the_url_is_not_repeated_in_messages() -> None:
    port = free_port()
    with pytest.raises(ServeUnreachable) as info:
        ServeClient(f"http://admin:hunter2@127.0.0.1:{port}", TOKEN, timeout=2).details()
    assert "hunter2" not in str(info.value) and info.value.reason == "DashboardUnreachable"
    assert redact_url("http://u:p@h:1/a?token=x") == "http://h:1/a"


def test_a_trickling_body_is_cut_at_the_total_deadline(server: RecordingServer) -> None:
    # 40 chunks 0.25 s apart: each arrives well within a per-read timeout, the whole takes 10 s.
    server.routes[APPLICATIONS_PATH] = Reply(200, raw=b" ", slow_chunks=40, chunk_delay_s=0.25)
    started = time.monotonic()
    with pytest.raises(ServeUnreachable, match="not complete within 1 s"):
        ServeClient(server.url, timeout=1.0).details()
    assert time.monotonic() - started < 6  # a hang detector, not a speed target


def test_an_oversized_answer_is_refused(server: RecordingServer) -> None:
    server.routes["/metadata"] = Reply(200, raw=b"x" * 4096, slow_chunks=300)
    with pytest.raises(ServeBadAnswer, match="larger than"):
        get_json(server.url + "/metadata", max_bytes=1024 * 1024)


@pytest.mark.parametrize(
    "body",
    [
        [],
        "text",
        {"applications": []},
        {"applications": {"a": "RUNNING"}},
        {"applications": {"a": {"status": 3}}},
        {"applications": {"a": {"status": "RUNNING", "deployments": ["D"]}}},
        {"applications": {"a": {"status": "RUNNING", "deployments": {"D": "HEALTHY"}}}},
        {"applications": {"a": {"status": "RUNNING", "deployed_app_config": "name: a"}}},
        {"applications": {"a": {"status": "RUNNING"}}, "http_options": "x"},
    ],
)
def test_unexpected_shapes_are_typed_errors(server: RecordingServer, body: Any) -> None:
    server.routes[APPLICATIONS_PATH] = Reply(200, body)
    with pytest.raises(ServeBadAnswer) as info:
        ServeClient(server.url).details()
    assert info.value.reason == "UnexpectedStatus"


def test_not_json_is_a_bad_answer(server: RecordingServer) -> None:
    server.routes[APPLICATIONS_PATH] = Reply(200, raw=b"<html>proxy login</html>")
    with pytest.raises(ServeBadAnswer, match="did not answer JSON"):
        ServeClient(server.url).details()


def test_nulls_where_ray_may_send_them_are_accepted(server: RecordingServer) -> None:
    body = {"applications": {"a": {"status": "RUNNING", "message": None, "deployments": None}}}
    server.routes[APPLICATIONS_PATH] = Reply(200, body)
    got = ServeClient(server.url).details().applications["a"]
    assert got.message == "" and got.deployments == {} and not got.declarative


def test_upsert_keeps_other_declarative_apps_and_the_http_options(server: RecordingServer) -> None:
    deployed = details(app("keep"), app("mine"), app("imp", source="imperative"))
    server.routes[APPLICATIONS_PATH] = lambda seen: Reply(200, deployed if seen.method == "GET" else None)
    new = {"name": "mine", "import_path": "y:app"}
    ServeClient(server.url, TOKEN).upsert(new)
    put = next(s for s in server.requests() if s.method == "PUT")
    body = put.json()
    assert [a["name"] for a in body["applications"]] == ["keep", "mine"]
    assert body["applications"][1] == new
    assert body["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert put.headers["authorization"] == f"Bearer {TOKEN}"


def test_wait_running_follows_the_statuses(server: RecordingServer) -> None:
    statuses = itertools.chain(["NOT_STARTED", "DEPLOYING", "DEPLOYING"], itertools.repeat("RUNNING"))
    server.routes[APPLICATIONS_PATH] = lambda seen: Reply(200, details(app("a", status=next(statuses))))
    got = ServeClient(server.url).wait_running("a", timeout=30, interval=0.05)
    assert got.status == "RUNNING" and len(server.requests()) == 4


def test_wait_running_fails_fast_on_deploy_failed(server: RecordingServer) -> None:
    failed = app("a", status="DEPLOY_FAILED", message="ImportError: no module x")
    server.routes[APPLICATIONS_PATH] = Reply(200, details(failed))
    with pytest.raises(ServeAppFailed, match="DEPLOY_FAILED ImportError"):
        ServeClient(server.url).wait_running("a", timeout=30, interval=0.05)


def test_wait_running_times_out_naming_what_it_saw(server: RecordingServer) -> None:
    server.routes[APPLICATIONS_PATH] = Reply(200, details(app("a", status="DEPLOYING", message="3 replicas")))
    with pytest.raises(ServeTimeout, match=r"'a' did not reach \['RUNNING'\].*DEPLOYING 3 replicas") as info:
        ServeClient(server.url).wait_running("a", timeout=0.5, interval=0.05)
    assert isinstance(info.value, TimeoutError)


def test_wait_reports_the_last_connection_error() -> None:
    with pytest.raises(ServeTimeout, match=r"last status: absent; last error: .*ConnectError"):
        ServeClient(f"http://127.0.0.1:{free_port()}").wait_running("a", timeout=0.3, interval=0.05)


def test_wait_with_a_readiness_check(server: RecordingServer) -> None:
    server.routes[APPLICATIONS_PATH] = Reply(200, details(app("a")))
    calls = iter([False, False, True])
    got = ServeClient(server.url).wait_running("a", timeout=30, interval=0.05, ready=lambda _: next(calls))
    assert got.name == "a" and len(server.requests()) == 3


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("http://head:8265", ["head"], True),
        ("http://HEAD:8265/", ["head:8265"], True),
        ("http://head:8265", ["head:8266"], False),
        ("http://head.evil.com:8265", ["head"], False),
        ("http://evil.com/head", ["head"], False),
        ("http://head@evil.com:8265", ["head"], False),
        ("https://head", ["head:443"], True),
        ("http://head", ["head:80"], True),
        ("http://[::1]:8265", ["[::1]:8265"], True),
        ("http://[::1]:8265", ["::1"], True),
        ("file:///etc/passwd", ["head"], False),
        ("http://head:8265", [], False),
    ],
)
def test_host_matching(url: str, allowed: list[str], ok: bool) -> None:
    assert host_allowed(url, allowed) is ok


def test_only_http_urls_are_accepted() -> None:
    for bad in ("file:///etc/passwd", "ftp://head", "head:8265", ""):
        with pytest.raises(ValueError, match="not an http"):
            ServeClient(bad)
    assert host_of("http://Head") == "head:80"


def test_wait_rides_out_a_5xx_but_not_a_401(server: RecordingServer) -> None:
    answers = itertools.chain(
        [Reply(503, {"error": "starting"})], itertools.repeat(Reply(200, details(app("a"))))
    )
    server.routes[APPLICATIONS_PATH] = lambda seen: next(answers)
    assert ServeClient(server.url).wait_running("a", timeout=30, interval=0.05).status == "RUNNING"
    server.routes[APPLICATIONS_PATH] = Reply(401, {"error": "token"})
    with pytest.raises(ServeRefused, match="401"):
        ServeClient(server.url).wait_running("a", timeout=30, interval=0.05)
