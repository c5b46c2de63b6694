"""Protocol-level HTTP behaviour: status codes, CORS, keep-alive, limits."""

from __future__ import annotations

import json
import socket
from typing import Callable

import httpx
import pytest
from helpers import (
    TIMEOUT,
    Gateway,
    assert_nothing_written,
    assert_serving,
    http_head_and_body,
    read_response,
    read_topic,
    read_until_closed,
    request_bytes,
    ws_connect,
)
from websockets.exceptions import InvalidStatus

MIB = 1024 * 1024
PUB_BODY = {"topic": "t", "packet": {"payload": "x"}}


def test_http_unknown_path_is_404(http: httpx.Client, root: str) -> None:
    for method, path in [
        ("GET", "/"),
        ("GET", "/api"),
        ("POST", "/api/publish"),
        ("GET", "/nope"),
    ]:
        response = http.request(
            method, path, json=PUB_BODY if method == "POST" else None
        )
        assert response.status_code == 404, (method, path)
        assert response.headers["access-control-allow-origin"] == "*"
    assert_nothing_written(root)


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("GET", "/api/pub", "POST"),
        ("PUT", "/api/pub", "POST"),
        ("GET", "/api/write", "POST"),
        ("DELETE", "/api/write", "POST"),
        ("POST", "/api/ls", "GET"),
    ],
)
def test_http_wrong_method_is_405_with_allow(
    http: httpx.Client, root: str, method: str, path: str, allowed: str
) -> None:
    body = json.dumps({"topic": "t", "path": "f.a0", "packet": {"payload": "x"}})
    response = http.request(method, path, content=body)
    assert response.status_code == 405
    allow = [m.strip() for m in response.headers["allow"].split(",")]
    assert allowed in allow
    assert method not in allow
    assert response.headers["access-control-allow-origin"] == "*"
    assert_nothing_written(root)


@pytest.mark.parametrize("path", ["/api/pub", "/api/write", "/api/ls"])
def test_http_options_preflight_is_204(
    http: httpx.Client, root: str, path: str
) -> None:
    response = http.options(
        path,
        headers={
            "Origin": "http://example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == "*"
    methods = [
        m.strip() for m in response.headers["access-control-allow-methods"].split(",")
    ]
    assert "POST" in methods and "GET" in methods
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "content-type" in [h.strip() for h in allowed_headers.split(",")]
    assert_nothing_written(root)


def test_http_cors_header_on_every_response(http: httpx.Client) -> None:
    responses = [
        http.post("/api/pub", json=PUB_BODY),
        http.post("/api/write", json={"path": "f.a0", "packet": {"payload": "x"}}),
        http.get("/api/ls"),
        http.post("/api/pub", content=b"nope"),
        http.get("/nope"),
        http.get("/api/pub"),
        http.options("/api/pub"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 400, 404, 405, 204]
    for response in responses:
        assert response.headers["access-control-allow-origin"] == "*"


def test_http_body_over_16_mib_is_413(http: httpx.Client, root: str) -> None:
    body = json.dumps(PUB_BODY).encode()
    body += b" " * (16 * MIB + 1 - len(body))
    response = http.post("/api/pub", content=body)
    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] == "*"
    assert_nothing_written(root)


def test_http_body_of_exactly_16_mib_is_accepted(http: httpx.Client) -> None:
    body = json.dumps(PUB_BODY).encode()
    body += b" " * (16 * MIB - len(body))
    response = http.post("/api/pub", content=body)
    assert response.status_code == 200
    assert [p.payload for p in read_topic("t")] == [b"x"]


def test_http_keep_alive_serves_several_requests(gateway: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        buffer = bytearray()
        for i in range(3):
            body = json.dumps({"topic": "t", "packet": {"payload": f"p{i}"}}).encode()
            sock.sendall(request_bytes("POST", "/api/pub", body))
            assert read_response(sock, buffer)[::2] == (200, b"success")
        # Errors keep the connection open too.
        sock.sendall(request_bytes("POST", "/api/pub", b"nope"))
        assert read_response(sock, buffer)[::2] == (400, b"Request must be json.")
        sock.sendall(request_bytes("GET", "/nope"))
        assert read_response(sock, buffer)[0] == 404
        sock.sendall(request_bytes("GET", "/api/ls"))
        status, _, body = read_response(sock, buffer)
        assert status == 200
        assert json.loads(body) == ["t.pubsub.a0"]
    assert [p.payload for p in read_topic("t")] == [b"p0", b"p1", b"p2"]


def test_http_pipelined_requests_answered_in_order(gateway: Gateway) -> None:
    data = b"".join(
        request_bytes(
            "POST",
            "/api/pub",
            json.dumps({"topic": "t", "packet": {"payload": p}}).encode(),
        )
        for p in ("a", "b")
    )
    data += request_bytes("POST", "/api/pub", b"[]")
    data += request_bytes("OPTIONS", "/api/pub")
    data += request_bytes("GET", "/api/ls")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        buffer = bytearray()
        statuses = [read_response(sock, buffer)[0] for _ in range(5)]
    assert statuses == [200, 200, 400, 204, 200]
    assert [p.payload for p in read_topic("t")] == [b"a", b"b"]


def test_http_websocket_upgrade_on_unknown_path_is_404(gateway: Gateway) -> None:
    with pytest.raises(InvalidStatus) as info, ws_connect(gateway, "/wsapi/nope"):
        pass
    assert info.value.response.status_code == 404


def upgrade_head(
    port: int, path: str, version: str = "13", method: str = "GET"
) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: {version}\r\n\r\n"
    ).encode()


def test_http_websocket_upgrade_with_post_is_405_allowing_get(
    gateway: Gateway,
) -> None:
    head = upgrade_head(gateway.port, "/wsapi/sub", method="POST")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        sock.sendall(head)
        status, headers, body = http_head_and_body(read_until_closed(sock))
    assert status == 405
    assert headers["allow"] == "GET"
    assert body == b"Method POST not allowed on /wsapi/sub."


@pytest.mark.parametrize(
    "head, status",
    [
        pytest.param(lambda port: upgrade_head(port, "/wsapi/sub"), 101, id="101"),
        pytest.param(
            lambda port: upgrade_head(port, "/wsapi/sub", "8"), 400, id="bad-version"
        ),
        pytest.param(lambda port: upgrade_head(port, "/wsapi/nope"), 404, id="404"),
        pytest.param(
            lambda port: (
                b"POST /api/pub HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
            ),
            400,
            id="bad-content-length",
        ),
    ],
)
def test_http_upgrade_and_raw_answers_name_server_and_cors(
    gateway: Gateway, head: Callable[[int], bytes], status: int
) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        sock.sendall(head(gateway.port))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    got, headers, _ = http_head_and_body(data)
    assert got == status
    assert headers["server"] == "a0gw"
    assert headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "request_data, reason",
    [
        pytest.param(b"HELLO\r\n\r\n", "illegal request line", id="request-line"),
        pytest.param(
            b"GET /api/ls HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
            "illegal header line",
            id="header-line",
        ),
        pytest.param(
            b"POST /api/pub HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"\r\nzz\r\n",
            "illegal chunk header",
            id="chunk-header",
        ),
        pytest.param(
            b"GET /api/ls HTTP/1.1\r\n\r\n",
            "Missing mandatory Host: header",
            id="no-host",
        ),
    ],
)
def test_malformed_request_gets_400_with_reason_and_no_internals(
    gateway: Gateway, request_data: bytes, reason: str
) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        sock.sendall(request_data)
        status, _, body = http_head_and_body(read_until_closed(sock))
    assert status == 400
    assert body.decode() == reason
    assert_serving(gateway)
