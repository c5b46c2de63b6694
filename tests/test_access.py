"""Access: listening address, bearer token, origins, read-only mode, topic globs.

The gateways here serve one shared root for the whole module (each with its
own deadman topic); tests use their own topic names.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import a0
import httpx
import pytest
from helpers import (
    TIMEOUT,
    Gateway,
    expect_close,
    handshake,
    read_topic,
    recv_packet,
    wait_for_log,
    wait_for_warning,
    warnings_logged,
    ws_connect,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus

StartGateway = Callable[..., Gateway]
TOKEN = "s3cret-T0ken"


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def start(factory: StartGateway, name: str, *args: str, **kwargs: Any) -> Gateway:
    """A gateway with its own deadman topic, so several can share a root."""
    env = {"A0_TOPIC": name, **kwargs.pop("env", {})}
    return factory(args=list(args), env=env, topic=name, **kwargs)


def client(gateway: Gateway, **headers: str) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.url, timeout=TIMEOUT, trust_env=False, headers=headers
    )


def pub_body(topic: str, payload: str = "x") -> dict[str, Any]:
    return {"topic": topic, "packet": {"payload": payload}}


def ws_status(gateway: Gateway, path: str, **kwargs: Any) -> int:
    """101 if the upgrade is accepted, else the HTTP status that refused it."""
    try:
        with ws_connect(gateway, path, **kwargs):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


# --- Listening address ---------------------------------------------------------


def listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                address, _, hex_port = fields[1].partition(":")
                if int(hex_port, 16) == port and fields[3] == "0A":
                    found.append(address)
    return found


def test_default_host_is_loopback_only(gateway: Gateway) -> None:
    assert listening_addresses(gateway.port) == ["0100007F"]  # 127.0.0.1
    line = wait_for_log(gateway, "Listening on")
    assert f"http://127.0.0.1:{gateway.port}" in line
    assert "--host 0.0.0.0" in wait_for_log(gateway, "all interfaces")


def test_all_interfaces_without_token_warns(start_gateway: StartGateway) -> None:
    # Read-only and no reachable topic, for the moment it listens everywhere.
    gateway = start_gateway(
        args=["--host", "0.0.0.0", "--read-only", "--deny-topic", "**"]
    )
    assert listening_addresses(gateway.port) == ["00000000"]
    assert "--token" in wait_for_warning(gateway, "without --token")


def test_all_interfaces_with_token_does_not_warn(start_gateway: StartGateway) -> None:
    gateway = start_gateway(args=["--host", "0.0.0.0", "--token", TOKEN])
    wait_for_log(gateway, "Listening on")
    assert warnings_logged(gateway, "token") == []


# --- Bearer token --------------------------------------------------------------


@pytest.fixture(scope="module")
def token_gateway(start_module_gateway: StartGateway) -> Gateway:
    return start(start_module_gateway, "gw-token", "--token", TOKEN)


REST_CALLS = [
    pytest.param("GET", "/api/ls", None, id="ls"),
    pytest.param("POST", "/api/pub", "pub", id="pub"),
    pytest.param("POST", "/api/write", "write", id="write"),
    pytest.param("POST", "/api/rpc", "rpc", id="rpc"),
]


def rest_call(
    http: httpx.Client, method: str, route: str, kind: str | None
) -> httpx.Response:
    topic = unique()
    body: dict[str, Any] | None = None
    if kind in ("pub", "rpc"):
        body = pub_body(topic)
        if kind == "rpc":
            body["timeout"] = 0.1
    elif kind == "write":
        body = {"path": f"{topic}.a0", "packet": {"payload": "x"}}
    return http.request(method, route, json=body)


@pytest.mark.parametrize("method, route, kind", REST_CALLS)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer wrong"}, id="wrong-token"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, id="wrong-scheme"),
        pytest.param({"Authorization": f"Bearer {TOKEN}x"}, id="longer-token"),
    ],
)
def test_token_required_on_rest(
    token_gateway: Gateway,
    module_root: str,
    headers: dict[str, str],
    method: str,
    route: str,
    kind: str | None,
) -> None:
    before = sorted(os.listdir(module_root))
    with client(token_gateway, **headers) as http:
        response = rest_call(http, method, route, kind)
    assert response.status_code == 401, response.text
    assert sorted(os.listdir(module_root)) == before


@pytest.mark.parametrize("method, route, kind", REST_CALLS)
def test_token_accepted_on_rest(
    token_gateway: Gateway, method: str, route: str, kind: str | None
) -> None:
    with client(token_gateway, Authorization=f"Bearer {TOKEN}") as http:
        response = rest_call(http, method, route, kind)
    # An RPC without a server times out: the request itself was let in.
    assert response.status_code == (504 if kind == "rpc" else 200), response.text


def test_token_publish_reaches_shared_memory(token_gateway: Gateway) -> None:
    topic = unique()
    with client(token_gateway, Authorization=f"Bearer {TOKEN}") as http:
        assert http.post("/api/pub", json=pub_body(topic, "hi")).status_code == 200
    assert [p.payload for p in read_topic(topic)] == [b"hi"]


def test_token_preflight_needs_no_token(token_gateway: Gateway) -> None:
    with client(token_gateway, Origin="https://ok.example") as http:
        assert http.options("/api/pub").status_code == 204


def test_token_401_names_the_bearer_scheme(token_gateway: Gateway) -> None:
    with client(token_gateway) as http:
        response = http.get("/api/ls")
    assert response.status_code == 401
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


def test_token_websocket_query_accepted(token_gateway: Gateway) -> None:
    topic = unique()
    a0.Publisher(topic).pub("hello")
    with ws_connect(token_gateway, f"/wsapi/sub?token={TOKEN}") as ws:
        handshake(ws, topic=topic, init="OLDEST")
        assert recv_packet(ws)["payload"] == "hello"


def test_token_websocket_header_accepted(token_gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert ws_status(token_gateway, "/wsapi/sub", additional_headers=headers) == 101


@pytest.mark.parametrize(
    "path",
    [
        "/wsapi/sub",
        "/wsapi/sub?token=wrong",
        "/wsapi/prpc?token=",
        f"/wsapi/read?tok={TOKEN}",
    ],
)
def test_token_websocket_refused_with_401(token_gateway: Gateway, path: str) -> None:
    assert ws_status(token_gateway, path) == 401


def test_token_from_environment(start_gateway: StartGateway) -> None:
    gateway = start(start_gateway, "gw-env", env={"A0GW_TOKEN": TOKEN})
    with client(gateway) as http:
        assert http.get("/api/ls").status_code == 401
    with client(gateway, Authorization=f"Bearer {TOKEN}") as http:
        assert http.get("/api/ls").status_code == 200


def test_token_outside_ascii_compares_as_utf8(start_gateway: StartGateway) -> None:
    token = "t\u00f6k\u20acn"
    gateway = start(start_gateway, "gw-utf8", "--token", token)
    body = pub_body(unique())
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT, trust_env=False) as http:
        utf8 = {"Authorization": b"Bearer " + token.encode()}
        assert http.post("/api/pub", json=body, headers=utf8).status_code == 200
        latin1 = {"Authorization": b"Bearer " + token.encode("latin-1", "replace")}
        response = http.post("/api/pub", json=body, headers=latin1)
        assert response.status_code == 401
        assert response.text == "Invalid bearer token."
        query = "/api/pub?token=t%C3%B6k%E2%82%ACn"
        assert http.post(query, json=body).status_code == 200
    assert [p.payload for p in read_topic(body["topic"])] == [b"x", b"x"]


# --- Origins -------------------------------------------------------------------

OK = "https://ok.example"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def origin_gateway(start_module_gateway: StartGateway) -> Gateway:
    return start(start_module_gateway, "gw-origin", "--allow-origin", OK)


@pytest.mark.parametrize("method, route, kind", REST_CALLS)
def test_origin_refused_on_rest(
    origin_gateway: Gateway, method: str, route: str, kind: str | None
) -> None:
    with client(origin_gateway, Origin=EVIL) as http:
        response = rest_call(http, method, route, kind)
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


def test_origin_refused_on_preflight(origin_gateway: Gateway) -> None:
    with client(origin_gateway, Origin=EVIL) as http:
        response = http.options("/api/pub")
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("method, route, kind", REST_CALLS)
def test_origin_allowed_on_rest_names_it_in_cors(
    origin_gateway: Gateway, method: str, route: str, kind: str | None
) -> None:
    with client(origin_gateway, Origin=OK) as http:
        response = rest_call(http, method, route, kind)
        preflight = http.options(route)
    assert response.status_code == (504 if kind == "rpc" else 200)
    assert response.headers["access-control-allow-origin"] == OK
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == OK


def test_origin_absent_is_allowed_without_cors(origin_gateway: Gateway) -> None:
    with client(origin_gateway) as http:
        response = http.get("/api/ls")
    assert response.status_code == 200
    assert response.headers.get("access-control-allow-origin") in (None, OK)


@pytest.mark.parametrize("route", ["/wsapi/sub", "/wsapi/read", "/wsapi/discover"])
def test_origin_on_websocket(origin_gateway: Gateway, route: str) -> None:
    assert ws_status(origin_gateway, route, origin=EVIL) == 403
    assert ws_status(origin_gateway, route, origin=OK) == 101
    assert ws_status(origin_gateway, route) == 101
    wait_for_warning(origin_gateway, f"Origin {EVIL} is not allowed")


# --- Read-only mode ------------------------------------------------------------


@pytest.fixture(scope="module")
def read_only_gateway(start_module_gateway: StartGateway) -> Gateway:
    return start(start_module_gateway, "gw-ro", "--read-only")


@pytest.mark.parametrize("kind", ["pub", "write", "rpc"])
def test_read_only_refuses_writes(
    read_only_gateway: Gateway, module_root: str, kind: str
) -> None:
    before = sorted(os.listdir(module_root))
    with client(read_only_gateway) as http:
        response = rest_call(http, "POST", f"/api/{kind}", kind)
    assert response.status_code == 403
    assert "read-only" in response.text
    assert sorted(os.listdir(module_root)) == before


def test_read_only_refuses_prpc(read_only_gateway: Gateway, module_root: str) -> None:
    before = sorted(os.listdir(module_root))
    with ws_connect(read_only_gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic=unique(), packet={"payload": "go"})
        assert "read-only" in expect_close(ws, 4003)
    assert sorted(os.listdir(module_root)) == before


def test_read_only_still_reads(read_only_gateway: Gateway) -> None:
    topic = unique()
    a0.Publisher(topic).pub("seen")
    with client(read_only_gateway) as http:
        response = http.get("/api/ls")
    assert response.status_code == 200
    assert f"{topic}.pubsub.a0" in response.json()
    with ws_connect(read_only_gateway, "/wsapi/sub") as ws:
        handshake(ws, topic=topic, init="OLDEST")
        assert recv_packet(ws)["payload"] == "seen"
    with ws_connect(read_only_gateway, "/wsapi/read") as ws:
        handshake(ws, path=f"{topic}.pubsub.a0", init="OLDEST")
        assert recv_packet(ws)["payload"] == "seen"
    a0.Logger(a0.LogTopic(topic)).warn("careful")
    with ws_connect(read_only_gateway, "/wsapi/log") as ws:
        handshake(ws, topic=topic, init="OLDEST")
        assert recv_packet(ws)["payload"] == "careful"


# --- Topic globs ---------------------------------------------------------------


@pytest.fixture(scope="module")
def glob_gateway(start_module_gateway: StartGateway) -> Gateway:
    return start(
        start_module_gateway,
        "gw-glob",
        "--allow-topic",
        "a/**",
        "--deny-topic",
        "a/secret",
    )


@pytest.fixture
def glob_http(glob_gateway: Gateway) -> Iterator[httpx.Client]:
    with client(glob_gateway) as http:
        yield http


ALLOWED = ["a/x", "a/b/c"]
REFUSED = ["a/secret", "b", "ab/x", "x/a/y"]


@pytest.mark.parametrize("topic", ALLOWED)
def test_glob_allowed_topics_work(
    glob_gateway: Gateway, glob_http: httpx.Client, topic: str
) -> None:
    payload = unique("p")
    assert glob_http.post("/api/pub", json=pub_body(topic, payload)).status_code == 200
    body = {"path": f"{topic}.a0", "packet": {"payload": payload}}
    assert glob_http.post("/api/write", json=body).status_code == 200
    with ws_connect(glob_gateway, "/wsapi/sub") as ws:
        handshake(ws, topic=topic, init="MOST_RECENT")
        assert recv_packet(ws)["payload"] == payload


@pytest.mark.parametrize("topic", REFUSED)
def test_glob_refused_topics_on_rest(glob_http: httpx.Client, topic: str) -> None:
    before = read_topic(topic) if topic == "a/secret" else []
    for route, body in [
        ("/api/pub", pub_body(topic)),
        ("/api/rpc", {**pub_body(topic), "timeout": 0.1}),
    ]:
        response = glob_http.post(route, json=body)
        assert response.status_code == 403, (route, response.text)
        assert topic in response.text
    assert len(read_topic(topic)) == len(before)


@pytest.mark.parametrize("topic", REFUSED)
@pytest.mark.parametrize("route", ["/wsapi/sub", "/wsapi/prpc", "/wsapi/log"])
def test_glob_refused_topics_on_websocket(
    glob_gateway: Gateway, route: str, topic: str
) -> None:
    with ws_connect(glob_gateway, route) as ws:
        handshake(ws, topic=topic)
        expect_close(ws, 4003)


def test_glob_ls_still_lists_refused_names(glob_http: httpx.Client) -> None:
    a0.Publisher("a/secret").pub("hidden")
    assert "a/secret.pubsub.a0" in glob_http.get("/api/ls").json()


# Other spellings of a refused topic or of a path outside the allowed folder.
ALIASES = [
    pytest.param("/api/pub", {"topic": "a//secret"}, "a/secret", id="pub-double-slash"),
    pytest.param("/api/pub", {"topic": "a/./secret"}, "a/secret", id="pub-dot"),
    pytest.param("/api/pub", {"topic": "a/../b"}, "b", id="pub-dotdot"),
    pytest.param(
        "/api/write", {"path": "a/secret.pubsub.a0"}, "a/secret", id="write-topic-file"
    ),
    pytest.param("/api/write", {"path": "a/../b.pubsub.a0"}, "b", id="write-dotdot"),
]


@pytest.mark.parametrize("route, fields, reached", ALIASES)
def test_glob_refused_topic_under_another_name(
    glob_http: httpx.Client, route: str, fields: dict[str, str], reached: str
) -> None:
    before = len(read_topic(reached))
    payload = unique("alias")
    response = glob_http.post(route, json={**fields, "packet": {"payload": payload}})
    after = [p.payload for p in read_topic(reached)]
    assert payload.encode() not in after, f"{fields} wrote to refused topic {reached}"
    assert len(after) == before
    assert response.status_code in (400, 403)


@pytest.mark.parametrize(
    "route, fields",
    [
        pytest.param("/wsapi/sub", {"topic": "a//secret"}, id="sub-double-slash"),
        pytest.param("/wsapi/read", {"path": "a/secret.pubsub.a0"}, id="read-file"),
    ],
)
def test_glob_refused_topic_streamed_under_another_name(
    glob_gateway: Gateway, route: str, fields: dict[str, str]
) -> None:
    a0.Publisher("a/secret").pub("hidden")
    with ws_connect(glob_gateway, route) as ws:
        handshake(ws, init="OLDEST", **fields)
        try:
            message = ws.recv(timeout=2)
        except TimeoutError:
            pytest.fail("the stream was opened (it waits for packets)")
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and 4000 <= exc.rcvd.code < 5000
            return
    pytest.fail(f"streamed a refused topic: {json.loads(message)['payload']!r}")
