"""Limits: body and message size, header size, timeouts, keepalive, connections.

Each limit has a default and an option; each hit is logged as a WARNING.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Callable

import a0
import httpx
import pytest
from helpers import (
    TIMEOUT,
    Gateway,
    RawWebSocket,
    assert_serving,
    expect_close,
    handshake,
    http_head_and_body,
    read_until_closed,
    recv_packet,
    wait_for_log,
    wait_for_warning,
    wait_until,
    warnings_logged,
    ws_connect,
)
from websockets.exceptions import ConnectionClosed

StartGateway = Callable[..., Gateway]
MIB = 1024 * 1024
# Generous extra seconds for anything timed, on a loaded 2-core machine.
SLACK = 5.0


def padded(body: dict[str, object], size: int) -> bytes:
    """`body` as JSON padded with spaces to exactly `size` bytes."""
    data = json.dumps(body).encode()
    assert len(data) <= size
    return data + b" " * (size - len(data))


def client(gateway: Gateway, **kwargs: object) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.url, timeout=TIMEOUT, trust_env=False, **kwargs
    )


def one_shot(gateway: Gateway) -> httpx.Client:
    """A client that opens a new connection for each request."""
    return client(gateway, limits=httpx.Limits(max_keepalive_connections=0))


def read_head(sock: socket.socket, timeout: float = TIMEOUT) -> int:
    """The status of the response `sock` receives (its head only)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without a response: {data!r}"
        data += chunk
    return http_head_and_body(data)[0]


def connect_raw(gateway: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT)


# --- Request body --------------------------------------------------------------

BODIES = {
    "/api/pub": {"topic": "t", "packet": {"payload": "x"}},
    "/api/write": {"path": "f.a0", "packet": {"payload": "x"}},
    "/api/rpc": {"topic": "t", "packet": {"payload": "x"}, "timeout": 0.1},
}


@pytest.mark.parametrize("route", list(BODIES))
def test_max_body_option(start_gateway: StartGateway, root: str, route: str) -> None:
    gateway = start_gateway(args=["--max-body", "1000"])
    with one_shot(gateway) as http:
        response = http.post(route, content=padded(BODIES[route], 1001))
        assert response.status_code == 413
        assert "1000" in response.text
        wait_for_warning(gateway, "Request body over 1000 bytes")
        # At the limit the request goes through.
        response = http.post(route, content=padded(BODIES[route], 1000))
        assert response.status_code in (200, 504), response.text
    assert_serving(gateway)


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "100-continue"])
def test_max_body_refused_from_content_length_before_the_body(
    start_gateway: StartGateway, root: str, expect: bool
) -> None:
    # The request timeout is far longer than the wait here: only a refusal
    # from the head alone answers in time.
    gateway = start_gateway(args=["--max-body", "1000", "--handshake-timeout", "60"])
    head = (
        b"POST /api/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1001\r\n"
    )
    if expect:
        head += b"Expect: 100-continue\r\n"
    with connect_raw(gateway) as sock:
        sock.sendall(head + b"\r\n")
        status, headers, body = http_head_and_body(read_until_closed(sock))
    assert status == 413
    assert body == b"Request body is larger than 1000 bytes."
    assert headers["connection"] == "close"
    wait_for_warning(gateway, "Request body over 1000 bytes")
    assert os.listdir(root) == ["api.deadman"]
    assert_serving(gateway)


def test_max_body_413_keeps_keep_alive_clients_working(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--max-body", "1000"])
    with client(gateway) as http:
        response = http.post("/api/write", content=padded(BODIES["/api/write"], 1001))
        assert response.status_code == 413
        assert response.headers.get("connection") == "close"


def test_max_body_option_with_chunked_body(start_gateway: StartGateway) -> None:
    gateway = start_gateway(args=["--max-body", "1000"])

    def chunks() -> object:
        data = padded(BODIES["/api/pub"], 3000)
        for i in range(0, len(data), 500):
            yield data[i : i + 500]

    with one_shot(gateway) as http:
        response = http.post("/api/pub", content=chunks())
    assert response.status_code == 413
    wait_for_warning(gateway, "Request body over 1000 bytes")
    assert_serving(gateway)


def test_max_body_default_is_16_mib(gateway: Gateway, root: str) -> None:
    with one_shot(gateway) as http:
        body = BODIES["/api/write"]
        response = http.post("/api/write", content=padded(body, 16 * MIB + 1))
        assert response.status_code == 413
        response = http.post("/api/write", content=padded(body, 16 * MIB))
        assert response.status_code == 200
    wait_for_warning(gateway, f"Request body over {16 * MIB} bytes")


# --- WebSocket message ---------------------------------------------------------


def test_max_message_option(start_gateway: StartGateway) -> None:
    gateway = start_gateway(args=["--max-message", "1000"])
    with ws_connect(gateway, "/wsapi/sub") as ws:
        ws.send(padded({"topic": "t"}, 1001).decode())
        expect_close(ws, 1009)
    # At the limit the handshake is accepted.
    with ws_connect(gateway, "/wsapi/sub") as ws:
        ws.send(padded({"topic": "t", "init": "OLDEST"}, 1000).decode())
        a0.Publisher("t").pub("hello")
        assert recv_packet(ws)["payload"] == "hello"
    assert_serving(gateway)


def test_max_message_option_counts_fragments(start_gateway: StartGateway) -> None:
    gateway = start_gateway(args=["--max-message", "1000"])
    data = padded({"topic": "t"}, 1500)
    with RawWebSocket(gateway, "/wsapi/sub") as ws:
        assert ws.status == 101
        ws.send_frame(0x1, data[:600], fin=False)
        ws.send_frame(0x0, data[600:1200], fin=False)
        ws.send_frame(0x0, data[1200:], fin=True)
        code, _ = ws.recv_close()
    assert code == 1009
    assert_serving(gateway)


def test_max_message_hit_is_logged(start_gateway: StartGateway) -> None:
    gateway = start_gateway(args=["--max-message", "1000"])
    with ws_connect(gateway, "/wsapi/sub") as ws:
        ws.send(padded({"topic": "t"}, 1001).decode())
        expect_close(ws, 1009)
    wait_for_warning(gateway, "1000", timeout=2)


def test_client_closing_for_its_own_limit_is_not_logged_as_ours(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--max-message", "1000"])
    with ws_connect(gateway, "/wsapi/sub", max_size=100) as ws:
        handshake(ws, topic="t", init="OLDEST")
        a0.Publisher("t").pub("x" * 500)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=TIMEOUT)
    wait_for_log(gateway, "a message was larger than it accepts")
    assert warnings_logged(gateway, "WebSocket message over") == []
    assert_serving(gateway)


def test_max_message_default_is_16_mib(gateway: Gateway) -> None:
    # Announce a text frame one byte over the limit: the gateway refuses it
    # from its header, before the payload.
    with RawWebSocket(gateway, "/wsapi/sub") as ws:
        size = 16 * MIB + 1
        ws.sock.sendall(
            bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big") + b"\0\0\0\0"
        )
        ws.sock.sendall(b" " * 4096)
        code, _ = ws.recv_close()
    assert code == 1009
    with ws_connect(gateway, "/wsapi/sub") as ws:
        ws.send(padded({"topic": "t", "init": "OLDEST"}, 16 * MIB).decode())
        a0.Publisher("t").pub("hello")
        assert recv_packet(ws)["payload"] == "hello"


# --- Header size ---------------------------------------------------------------


def big_headers(total: int, count: int) -> str:
    """`count` header lines adding up to about `total` bytes."""
    size = total // count
    return "".join(f"X-Pad-{i}: {'a' * size}\r\n" for i in range(count))


REQUESTS = {
    "ls": "GET /api/ls HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n",
    "pub": (
        "POST /api/pub HTTP/1.1\r\nHost: localhost\r\n{headers}"
        'Content-Length: 41\r\n\r\n{{"topic":"t","packet":{{"payload":"x"}}}}'
    ),
    "upgrade": (
        "GET /wsapi/sub HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n{headers}\r\n"
    ),
}


@pytest.mark.parametrize("count", [1, 40], ids=["one-header", "many-headers"])
@pytest.mark.parametrize("kind", list(REQUESTS))
def test_headers_over_16_kib_still_arriving_are_431(
    gateway: Gateway, root: str, kind: str, count: int
) -> None:
    # The head is not complete yet (no blank line) and already over 16 KiB.
    request = REQUESTS[kind].format(headers=big_headers(17 * 1024, count))
    head = request.partition("\r\n\r\n")[0] + "\r\n"
    with connect_raw(gateway) as sock:
        try:
            sock.sendall(head.encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # Refused while still sending: the response is read below.
        status, _, _ = http_head_and_body(read_until_closed(sock))
    assert status == 431
    wait_for_warning(gateway, "Malformed HTTP request")
    assert os.listdir(root) == ["api.deadman"]
    assert_serving(gateway)


@pytest.mark.parametrize("kind", list(REQUESTS))
def test_headers_over_16_kib_sent_at_once_are_431(
    start_gateway: StartGateway, kind: str
) -> None:
    gateway = start_gateway(args=["--handshake-timeout", "1"])
    request = REQUESTS[kind].format(headers=big_headers(17 * 1024, 40))
    with connect_raw(gateway) as sock:
        sock.sendall(request.encode())
        assert read_head(sock) == 431


def test_headers_under_16_kib_are_fine(gateway: Gateway) -> None:
    with client(gateway) as http:
        headers = {f"x-pad-{i}": "a" * 1000 for i in range(12)}
        assert http.get("/api/ls", headers=headers).status_code == 200
        body = BODIES["/api/pub"]
        assert http.post("/api/pub", json=body, headers=headers).status_code == 200


# --- Time to send a request or a handshake -------------------------------------


def test_handshake_timeout_closes_silent_connection(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--handshake-timeout", "0.5"])
    with connect_raw(gateway) as sock:
        start = time.monotonic()
        data = read_until_closed(sock, timeout=0.5 + SLACK)
        elapsed = time.monotonic() - start
    if data:
        assert http_head_and_body(data)[0] == 408
    assert elapsed < 0.5 + SLACK
    assert_serving(gateway)


def test_handshake_timeout_on_silent_connection_is_logged(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--handshake-timeout", "0.5"])
    with connect_raw(gateway) as sock:
        read_until_closed(sock, timeout=0.5 + SLACK)
    wait_for_warning(gateway, "not received within", timeout=2)


def test_handshake_timeout_on_partial_request_is_408(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--handshake-timeout", "0.5"])
    with connect_raw(gateway) as sock:
        sock.sendall(b"GET /api/ls HTTP/1.1\r\nHost: localhost\r\n")
        status, _, body = http_head_and_body(read_until_closed(sock, 0.5 + SLACK))
    assert status == 408
    assert b"0.5" in body
    wait_for_warning(gateway, "Request not received within 0.5 s")
    assert_serving(gateway)


def partial_body_status(gateway: Gateway, route: str) -> int:
    with connect_raw(gateway) as sock:
        sock.sendall(
            f"POST {route} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n"
            '\r\n{"topic": "t"'.encode()
        )
        data = read_until_closed(sock, 0.5 + SLACK)
    assert data, "closed without a response"
    return http_head_and_body(data)[0]


def test_handshake_timeout_on_partial_body_is_408(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--handshake-timeout", "0.5"])
    assert partial_body_status(gateway, "/api/write") == 408
    wait_for_warning(gateway, "Request not received within 0.5 s")


def test_handshake_timeout_on_partial_publish_is_408(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--handshake-timeout", "0.5"])
    assert partial_body_status(gateway, "/api/pub") == 408
    wait_for_warning(gateway, "Request not received within 0.5 s", timeout=2)


def test_default_handshake_timeout_lets_a_slow_client_finish(
    gateway: Gateway,
) -> None:
    # The default (10 s) is well above the second this request takes.
    parts = [b"GET /api/ls HTTP/1.1\r\n", b"Host: localhost\r\n", b"\r\n"]
    with connect_raw(gateway) as sock:
        for part in parts:
            sock.sendall(part)
            time.sleep(0.5)
        sock.settimeout(TIMEOUT)
        data = sock.recv(65536)
    assert http_head_and_body(data)[0] == 200


def test_websocket_handshake_timeout_closes_4000(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--handshake-timeout", "0.5"])
    with ws_connect(gateway, "/wsapi/sub") as ws:
        start = time.monotonic()
        reason = expect_close(ws, 4000)
        assert time.monotonic() - start < 0.5 + SLACK
    assert "handshake" in reason.lower(), reason
    wait_for_warning(gateway, "No handshake within 0.5 s")
    assert_serving(gateway)


def test_websocket_handshake_in_time_is_not_closed(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--handshake-timeout", "0.5"])
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t")
        time.sleep(1.0)  # Past the handshake timeout: the stream stays open.
        a0.Publisher("t").pub("late")
        assert recv_packet(ws)["payload"] == "late"


# --- Keepalive -----------------------------------------------------------------

KEEPALIVE = ["--ping-interval", "0.5", "--ping-timeout", "0.5"]


def test_keepalive_drops_peer_that_never_answers_pings(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=KEEPALIVE)
    with RawWebSocket(gateway, "/wsapi/sub") as ws:
        assert ws.status == 101
        ws.send_text(json.dumps({"topic": "t"}))
        start = time.monotonic()
        opcode, _ = ws.recv_frame()
        assert opcode == 0x9, "expected a ping"
        ws.wait_dropped(timeout=0.5 + 0.5 + SLACK)
        assert time.monotonic() - start < 0.5 + 0.5 + SLACK
    wait_for_warning(gateway, "No pong within 0.5 s")
    assert_serving(gateway)


def test_keepalive_keeps_client_that_answers_pings(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=KEEPALIVE)
    # The websockets client answers pings by itself; stay silent for several
    # ping cycles, then the stream must still deliver.
    with ws_connect(gateway, "/wsapi/sub", ping_interval=None) as ws:
        handshake(ws, topic="t")
        time.sleep(3.0)
        a0.Publisher("t").pub("still here")
        assert recv_packet(ws)["payload"] == "still here"
    assert warnings_logged(gateway, "No pong") == []


def test_default_keepalive_does_not_drop_quiet_peer_early(gateway: Gateway) -> None:
    # A peer that never answers pings keeps its connection for a while with the
    # defaults (a ping every 20 s, 20 s to answer).
    with RawWebSocket(gateway, "/wsapi/sub") as ws:
        ws.send_text(json.dumps({"topic": "t"}))
        time.sleep(1.5)
        a0.Publisher("t").pub("hello")
        opcode, payload = ws.recv_frame()
        assert opcode == 0x1 and json.loads(payload)["payload"] == "hello"


# --- Connections ---------------------------------------------------------------


def test_max_connections_option_refuses_with_503(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--max-connections", "3"])
    held = [connect_raw(gateway) for _ in range(3)]
    try:
        # The gateway accepts held connections asynchronously: wait until the
        # next one is refused.
        def refused() -> bool:
            with connect_raw(gateway) as extra:
                data = read_until_closed(extra)
            return bool(data) and http_head_and_body(data)[0] == 503

        wait_until(refused, what="a 503 for the 4th connection")
        wait_for_warning(gateway, "Connection limit (3) reached")
        assert_ws_refused(gateway)
    finally:
        for sock in held:
            sock.close()
    # Once connections close, new ones are served again.
    wait_until(lambda: _ls_ok(gateway), what="a connection after the others closed")


def assert_ws_refused(gateway: Gateway) -> None:
    """A WebSocket upgrade gets 503, or the connection closes before it."""
    upgrade = REQUESTS["upgrade"].format(headers="").encode()
    with connect_raw(gateway) as sock:
        try:
            sock.sendall(upgrade)
            data = read_until_closed(sock)
        except (BrokenPipeError, ConnectionResetError):
            return  # Closed before the response could be read.
    if data:
        assert http_head_and_body(data)[0] == 503


def _ls_ok(gateway: Gateway) -> bool:
    try:
        with client(gateway, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            return http.get("/api/ls").status_code == 200
    except httpx.TransportError:
        return False


def test_max_connections_counts_websockets(start_gateway: StartGateway) -> None:
    gateway = start_gateway(args=["--max-connections", "2"])
    with ws_connect(gateway, "/wsapi/sub") as a, ws_connect(gateway, "/wsapi/sub") as b:
        handshake(a, topic="t")
        handshake(b, topic="t")
        assert_ws_refused(gateway)
        with one_shot(gateway) as http:
            try:
                status = http.get("/api/ls").status_code
            except httpx.TransportError:
                status = None  # Closed before the response could be read.
            assert status in (503, None)
        a0.Publisher("t").pub("x")
        assert recv_packet(a)["payload"] == "x"
        assert recv_packet(b)["payload"] == "x"
    wait_for_warning(gateway, "Connection limit (2) reached")
    wait_until(lambda: _ls_ok(gateway), what="a connection after the others closed")
