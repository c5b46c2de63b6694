"""POST /api/rpc: one request to an AlephZero RPC server, and its reply."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import socket
import threading
import time
from collections import Counter
from typing import Any, Callable

import a0
import httpx
import pytest
from helpers import (
    STANDARD_HEADERS,
    TIMEOUT,
    Gateway,
    Recorder,
    b64,
    header,
    user_headers,
    wait_until,
)

StartGateway = Callable[..., Gateway]


def echo(req: a0.RpcRequest) -> None:
    """Replies with the request's payload behind "re:" and a header of our own."""
    req.reply(a0.Packet([("reply", "yes")], b"re:" + req.pkt.payload))


def never(req: a0.RpcRequest) -> None:
    """Keeps the request pending."""


class Server:
    """An AlephZero RPC server that records the requests and cancels it gets.

    `requests` holds (id, headers, payload) of each request; `cancels` the ids
    passed to the cancel callback.
    """

    def __init__(
        self, topic: str = "t", respond: Callable[[a0.RpcRequest], None] = echo
    ) -> None:
        self.requests = Recorder()
        self.cancels = Recorder()

        def onrequest(req: a0.RpcRequest) -> None:
            pkt = req.pkt
            self.requests((pkt.id, list(pkt.headers), bytes(pkt.payload)))
            respond(req)

        self.server = a0.RpcServer(topic, onrequest, self.cancels)


def rpc(http: httpx.Client, body: object) -> httpx.Response:
    return http.post("/api/rpc", json=body)


def check_reply_shape(reply: Any) -> None:
    assert isinstance(reply, dict)
    assert set(reply) == {"headers", "payload"}
    assert isinstance(reply["payload"], str)
    for pair in reply["headers"]:
        assert isinstance(pair, list) and len(pair) == 2
        assert all(isinstance(x, str) for x in pair)


# --- Replies -------------------------------------------------------------------


def test_rpc_returns_server_reply_as_packet(http: httpx.Client) -> None:
    server = Server()
    response = rpc(http, {"topic": "t", "packet": {"payload": "hello"}})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    reply = response.json()
    check_reply_shape(reply)
    assert reply["payload"] == "re:hello"
    (request,) = server.requests.items()
    request_id = request[0]
    assert header(reply, "a0_req_id") == request_id
    assert header(reply, "a0_dep") == request_id
    assert header(reply, "a0_rpc_type") == "response"
    assert header(reply, "reply") == "yes"
    keys = Counter(k for k, _ in reply["headers"])
    for key in STANDARD_HEADERS:
        assert keys[key] == 1, reply["headers"]


def test_rpc_request_headers_and_payload_reach_server(http: httpx.Client) -> None:
    server = Server()
    headers = [["aaa", "1"], ["bbb", "two"], ["aaa", "3"], ["empty", ""]]
    text = 'h\u00e9llo \u2603 \U0001f600 "quoted" \\ \n\t\u0000end'
    body = {"topic": "t", "packet": {"headers": headers, "payload": text}}
    response = rpc(http, body)
    assert response.status_code == 200, response.text
    assert response.json()["payload"] == "re:" + text
    ((_, seen_headers, payload),) = server.requests.items()
    assert payload == text.encode()
    sent = user_headers(seen_headers)
    assert sent.pop(("a0_rpc_type", "request")) == 1
    assert sent == Counter(tuple(h) for h in headers)


def test_rpc_reply_headers_keep_server_headers(http: httpx.Client) -> None:
    def respond(req: a0.RpcRequest) -> None:
        req.reply(a0.Packet([("k", "v"), ("k", "w"), ("x", 'q"\\\n')], "done"))

    server = Server(respond=respond)
    response = rpc(http, {"topic": "t", "packet": {"payload": "x"}})
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["payload"] == "done"
    assert header(reply, "a0_req_id") == server.requests.items()[0][0]
    own = user_headers(reply["headers"])
    for key in ("a0_dep", "a0_req_id", "a0_rpc_type"):
        assert sum(n for (k, _), n in own.items() if k == key) == 1
    assert Counter({kv: n for kv, n in own.items() if not kv[0].startswith("a0_")}) == (
        Counter([("k", "v"), ("k", "w"), ("x", 'q"\\\n')])
    )


def test_rpc_empty_payload_both_ways(http: httpx.Client) -> None:
    server = Server(respond=lambda req: req.reply(b""))
    response = rpc(http, {"topic": "t", "packet": {"payload": ""}})
    assert response.status_code == 200, response.text
    assert response.json()["payload"] == ""
    assert server.requests.items()[0][2] == b""


def test_rpc_base64_both_ways_with_random_bytes(http: httpx.Client) -> None:
    reply_data = os.urandom(3001) + bytes(range(256))
    server = Server(respond=lambda req: req.reply(a0.Packet([("k", "v")], reply_data)))
    request_data = os.urandom(2048) + b"\x00\xff"
    body = {
        "topic": "t",
        "packet": {"headers": [["h", "aGk="]], "payload": b64(request_data)},
        "request_encoding": "base64",
        "response_encoding": "base64",
    }
    response = rpc(http, body)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert base64.b64decode(reply["payload"], validate=True) == reply_data
    # Headers stay text both ways.
    assert header(reply, "k") == "v"
    ((_, seen_headers, payload),) = server.requests.items()
    assert payload == request_data
    assert ("h", "aGk=") in seen_headers


@pytest.mark.parametrize(
    "request_encoding, response_encoding",
    [("base64", "none"), ("none", "base64")],
)
def test_rpc_encodings_are_independent(
    http: httpx.Client, request_encoding: str, response_encoding: str
) -> None:
    server = Server()
    sent = b64(b"abc") if request_encoding == "base64" else "abc"
    body = {
        "topic": "t",
        "packet": {"payload": sent},
        "request_encoding": request_encoding,
        "response_encoding": response_encoding,
    }
    response = rpc(http, body)
    assert response.status_code == 200, response.text
    assert server.requests.items()[0][2] == b"abc"
    payload = response.json()["payload"]
    if response_encoding == "base64":
        assert base64.b64decode(payload, validate=True) == b"re:abc"
    else:
        assert payload == "re:abc"


def test_rpc_non_utf8_reply_is_400_naming_base64(http: httpx.Client) -> None:
    def respond(req: a0.RpcRequest) -> None:
        if req.pkt.payload == b"bad":
            req.reply(b"ok\xff\xfe")
        else:
            echo(req)

    server = Server(respond=respond)
    response = rpc(http, {"topic": "t", "packet": {"payload": "bad"}})
    assert response.status_code == 400
    assert "base64" in response.text
    # The same reply is fine in base64, and the gateway keeps answering.
    body = {"topic": "t", "packet": {"payload": "bad"}, "response_encoding": "base64"}
    response = rpc(http, body)
    assert response.status_code == 200, response.text
    assert base64.b64decode(response.json()["payload"]) == b"ok\xff\xfe"
    response = rpc(http, {"topic": "t", "packet": {"payload": "fine"}})
    assert response.status_code == 200, response.text
    assert response.json()["payload"] == "re:fine"
    assert len(server.requests.items()) == 3


def test_rpc_servers_on_different_topics(http: httpx.Client) -> None:
    servers = [
        Server("a/one", respond=lambda req: req.reply("one")),
        Server("a/two", respond=lambda req: req.reply("two")),
    ]
    for topic, expected in [("a/one", "one"), ("a/two", "two"), ("a/one", "one")]:
        response = rpc(http, {"topic": topic, "packet": {"payload": "x"}})
        assert response.status_code == 200, response.text
        assert response.json()["payload"] == expected
    assert [len(s.requests.items()) for s in servers] == [2, 1]


def test_rpc_request_lives_in_rpc_file(http: httpx.Client, root: str) -> None:
    server = Server("aaa/bbb")
    response = rpc(http, {"topic": "aaa/bbb", "packet": {"payload": "x"}})
    assert response.status_code == 200, response.text
    assert len(server.requests.items()) == 1
    assert os.path.isfile(os.path.join(root, "aaa", "bbb.rpc.a0"))


# --- Errors --------------------------------------------------------------------

PACKET = {"payload": "x"}

ERRORS = [
    pytest.param(b"not json", "Request must be json.", id="not-json"),
    pytest.param(b"", "Request must be json.", id="empty-body"),
    pytest.param(b'[{"topic": "t"}]', "Request must be a json object.", id="array"),
    pytest.param(b"null", "Request must be a json object.", id="null"),
    pytest.param(
        {"packet": PACKET}, "Request missing required field: topic", id="missing-topic"
    ),
    pytest.param(
        {"topic": "t", "packet": {"headers": []}},
        "Request missing required field: /packet/payload",
        id="missing-payload",
    ),
    pytest.param(
        {"topic": "t"},
        "Request missing required field: /packet/payload",
        id="missing-packet",
    ),
    pytest.param(
        {"topic": "t", "packet": PACKET, "request_encoding": "foo"},
        "Request has unknown value for field: request_encoding  value: foo",
        id="unknown-request-encoding",
    ),
    pytest.param(
        {"topic": "t", "packet": PACKET, "response_encoding": "hex"},
        "Request has unknown value for field: response_encoding  value: hex",
        id="unknown-response-encoding",
    ),
    pytest.param({"topic": "/", "packet": PACKET}, "Invalid topic name", id="slash"),
    pytest.param(
        {"topic": 12, "packet": PACKET},
        "Request field has incorrect format. field: topic  error: type must be string,"
        " but is number",
        id="topic-number",
    ),
]


@pytest.mark.parametrize("body, message", ERRORS)
def test_rpc_rejects_bad_request(
    http: httpx.Client, body: object, message: str
) -> None:
    server = Server()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post("/api/rpc", content=content)
    assert response.status_code == 400
    assert response.text == message
    assert response.headers["content-type"].startswith("text/plain")
    # A good request after it gets through, and is the only one the server saw.
    assert rpc(http, {"topic": "t", "packet": PACKET}).status_code == 200
    assert [payload for _, _, payload in server.requests.items()] == [b"x"]


def test_rpc_rejects_invalid_base64(http: httpx.Client) -> None:
    server = Server()
    body = {
        "topic": "t",
        "packet": {"payload": "not base64!"},
        "request_encoding": "base64",
    }
    response = rpc(http, body)
    assert response.status_code == 400
    assert response.text.startswith(
        "Request field has incorrect format. field: /packet/payload"
    ), response.text
    assert server.requests.items() == []


@pytest.mark.parametrize(
    "timeout",
    [0, -1, -0.5, "1", True, None, [1]],
    ids=["zero", "negative", "negative-float", "string", "bool", "null", "list"],
)
def test_rpc_bad_timeout_is_400(http: httpx.Client, timeout: object) -> None:
    server = Server()
    body = {"topic": "t", "packet": PACKET, "timeout": timeout}
    response = rpc(http, body)
    assert response.status_code == 400
    assert "timeout" in response.text
    assert server.requests.items() == []


# --- Deadlines and cancels -----------------------------------------------------


def test_rpc_without_server_is_504_at_request_timeout(http: httpx.Client) -> None:
    body = {"topic": "no/server", "packet": PACKET, "timeout": 0.5}
    start = time.monotonic()
    response = rpc(http, body)
    elapsed = time.monotonic() - start
    assert response.status_code == 504
    assert "no/server" in response.text
    assert "0.5" in response.text
    # The answer cannot come before the deadline.
    assert elapsed >= 0.45


def test_rpc_default_timeout_comes_from_option(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--rpc-timeout", "0.4"])
    with httpx.Client(base_url=gateway.url, timeout=30, trust_env=False) as client:
        start = time.monotonic()
        response = rpc(client, {"topic": "nobody", "packet": PACKET})
        elapsed = time.monotonic() - start
    assert response.status_code == 504
    assert "nobody" in response.text
    assert "0.4" in response.text
    assert elapsed >= 0.35


def test_rpc_request_timeout_overrides_option(start_gateway: StartGateway) -> None:
    gateway = start_gateway(args=["--rpc-timeout", "0.3"])
    held: list[a0.RpcRequest] = []
    server = Server("slow", respond=held.append)

    def reply_later() -> None:
        wait_until(lambda: len(held) == 1, what="the request")
        # Well past the gateway's default deadline.
        time.sleep(1.0)
        held[0].reply("late")

    thread = threading.Thread(target=reply_later)
    thread.start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=30, trust_env=False) as client:
            response = rpc(client, {"topic": "slow", "packet": PACKET, "timeout": 20})
    finally:
        thread.join()
    assert response.status_code == 200, response.text
    assert response.json()["payload"] == "late"
    assert server.cancels.items() == []


def test_rpc_timeout_cancels_request_at_server(http: httpx.Client) -> None:
    server = Server(respond=never)
    response = rpc(http, {"topic": "t", "packet": PACKET, "timeout": 0.3})
    assert response.status_code == 504
    ((request_id, _, _),) = server.requests.items()
    assert server.cancels.wait_count(1, what="cancels") == [request_id]


def test_rpc_reply_after_timeout_is_harmless(http: httpx.Client) -> None:
    held: list[a0.RpcRequest] = []

    def respond(req: a0.RpcRequest) -> None:
        if req.pkt.payload == b"hold":
            held.append(req)
        else:
            echo(req)

    server = Server(respond=respond)
    response = rpc(http, {"topic": "t", "packet": {"payload": "hold"}, "timeout": 0.3})
    assert response.status_code == 504
    server.cancels.wait_count(1, what="cancels")
    held[0].reply("too late")
    response = rpc(http, {"topic": "t", "packet": {"payload": "next"}})
    assert response.status_code == 200, response.text
    assert response.json()["payload"] == "re:next"


def test_rpc_client_disconnect_cancels_request_at_server(gateway: Gateway) -> None:
    server = Server(respond=never)
    body = json.dumps({"topic": "t", "packet": PACKET}).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        sock.sendall(raw_request(body))
        server.requests.wait_count(1, what="requests")
    ((request_id, _, _),) = server.requests.items()
    assert server.cancels.wait_count(1, what="cancels") == [request_id]


# --- Connections ---------------------------------------------------------------


def raw_request(body: bytes) -> bytes:
    return (
        b"POST /api/rpc HTTP/1.1\r\nHost: a0gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def test_rpc_back_to_back_on_one_keep_alive_connection(gateway: Gateway) -> None:
    server = Server()
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=TIMEOUT)
    try:
        conn.connect()
        sock = conn.sock
        for i in range(20):
            if i == 10:
                # An error in between leaves the connection open.
                conn.request("POST", "/api/rpc", body=b"nope")
                response = conn.getresponse()
                assert response.status == 400
                assert response.read() == b"Request must be json."
            body = json.dumps({"topic": "t", "packet": {"payload": f"n{i}"}})
            conn.request("POST", "/api/rpc", body=body)
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["payload"] == f"re:n{i}"
            assert conn.sock is sock, "the gateway closed the connection"
    finally:
        conn.close()
    assert len(server.requests.items()) == 20


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def test_rpc_thousand_concurrent_requests_each_get_own_reply(
    gateway: Gateway,
) -> None:
    count = 1000
    held: list[a0.RpcRequest] = []
    server = Server(respond=held.append)

    async def main() -> list[tuple[int, bytes]]:
        conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            # Connect in batches, so the listen backlog is never overrun.
            for _ in range(0, count, 100):
                conns += await asyncio.gather(
                    *(
                        asyncio.open_connection("127.0.0.1", gateway.port)
                        for _ in range(100)
                    )
                )
            for i, (_, writer) in enumerate(conns):
                body = {"topic": "t", "packet": {"payload": f"req-{i}"}, "timeout": 25}
                writer.write(raw_request(json.dumps(body).encode()))
            await asyncio.gather(*(writer.drain() for _, writer in conns))
            # Every request is pending at the server before any is answered.
            deadline = time.monotonic() + 20
            while len(server.requests.items()) < count:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"the server got {len(server.requests.items())} of {count}"
                    )
                await asyncio.sleep(0.02)
            # Answer in reverse order, each with its own payload.
            for req in reversed(held):
                echo(req)
            return list(
                await asyncio.gather(*(_read_response(reader) for reader, _ in conns))
            )
        finally:
            for _, writer in conns:
                writer.close()
            for _, writer in conns:
                try:
                    await writer.wait_closed()
                except OSError:
                    pass

    results = asyncio.run(main())
    ids = {payload: request_id for request_id, _, payload in server.requests.items()}
    assert len(ids) == count
    for i, (status, body) in enumerate(results):
        assert status == 200, body
        reply = json.loads(body)
        assert reply["payload"] == f"re:req-{i}"
        assert header(reply, "a0_req_id") == ids[f"req-{i}".encode()]


# --- Gateway bugs --------------------------------------------------------------


def test_rpc_huge_integer_timeout_is_not_an_internal_error(
    http: httpx.Client,
) -> None:
    server = Server()
    huge = b"1" + b"0" * 400
    body = b'{"topic": "t", "packet": {"payload": "x"}, "timeout": ' + huge + b"}"
    response = http.post("/api/rpc", content=body)
    # Either a valid (very long) deadline, or a bad value: never our own error.
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert "timeout" in response.text
    else:
        assert len(server.requests.items()) == 1
