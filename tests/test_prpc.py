"""WebSocket /wsapi/prpc: progressive RPCs and their cancellation."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import threading
import time
from collections import Counter
from typing import Any, Callable

import a0
import pytest
from helpers import (
    TIMEOUT,
    Gateway,
    Recorder,
    assert_no_message,
    b64,
    expect_close,
    handshake,
    header,
    recv_packet,
    user_headers,
    wait_until,
    ws_connect,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

StartGateway = Callable[..., Gateway]

Progress = list[tuple[Any, bool]]


class Server:
    """An AlephZero prpc server that sends `progress` to each connection.

    `connections` holds (connection id, headers, payload) of each request and
    `cancels` the ids passed to the cancel callback.  `conns` keeps the
    connection objects, to send more later.
    """

    def __init__(self, topic: str = "t", progress: Progress | None = None) -> None:
        self.connections = Recorder()
        self.cancels = Recorder()
        self.conns: list[a0.PrpcConnection] = []
        steps = progress if progress is not None else [("p0", False), ("p1", True)]

        def onconnect(conn: a0.PrpcConnection) -> None:
            pkt = conn.pkt
            self.conns.append(conn)
            self.connections((pkt.id, list(pkt.headers), bytes(pkt.payload)))
            for payload, done in steps:
                conn.send(payload, done)

        self.server = a0.PrpcServer(topic, onconnect, self.cancels)

    def wait_cancel(self) -> str:
        """Waits for one cancel; checks that no second one follows soon after."""
        (cancelled,) = self.cancels.wait_count(1, what="cancels")
        assert_no_second_cancel(self.cancels)
        return str(cancelled)


def assert_no_second_cancel(cancels: Recorder) -> None:
    # A short grace period: a duplicate cancel would come right after the first.
    time.sleep(0.3)
    assert len(cancels.items()) == 1, cancels.items()


def recv_progress(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next progress message, checked for shape."""
    message = ws.recv(timeout=timeout)
    assert isinstance(message, str), "progress must come as text messages"
    progress = json.loads(message)
    assert isinstance(progress, dict)
    assert set(progress) == {"headers", "payload", "done"}
    assert isinstance(progress["payload"], str)
    assert isinstance(progress["done"], bool)
    for pair in progress["headers"]:
        assert isinstance(pair, list) and len(pair) == 2
        assert all(isinstance(x, str) for x in pair)
    return progress


def own_headers(headers: Any) -> Counter[tuple[str, str]]:
    """The headers other than AlephZero's (a0_*), as a multiset."""
    return Counter(
        kv for kv in user_headers(headers).elements() if not kv[0].startswith("a0_")
    )


# --- Progress ------------------------------------------------------------------


def test_prpc_streams_progress_until_done(gateway: Gateway) -> None:
    server = Server(progress=[("a", False), ("b", False), ("c", True)])
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t", packet={"payload": "go"})
        messages = [recv_progress(ws) for _ in range(3)]
        assert_no_message(ws)
    assert [(m["payload"], m["done"]) for m in messages] == [
        ("a", False),
        ("b", False),
        ("c", True),
    ]
    ((connection_id, _, payload),) = server.connections.items()
    assert payload == b"go"
    for message in messages:
        assert header(message, "a0_conn_id") == connection_id
        assert header(message, "a0_dep") == connection_id
    assert [header(m, "a0_prpc_type") for m in messages] == [
        "progress",
        "progress",
        "complete",
    ]


def test_prpc_request_headers_and_payload_reach_server(gateway: Gateway) -> None:
    server = Server()
    headers = [["aaa", "1"], ["bbb", "two"], ["aaa", "3"]]
    text = 'h\u00e9llo \u2603 "quoted" \\ \n\u0000end'
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t", packet={"headers": headers, "payload": text})
        recv_progress(ws)
    ((_, seen_headers, payload),) = server.connections.items()
    assert payload == text.encode()
    assert own_headers(seen_headers) == Counter(tuple(h) for h in headers)


def test_prpc_progress_headers_from_server(gateway: Gateway) -> None:
    server = Server(progress=[(a0.Packet([("k", "v"), ("k", "w")], "x"), True)])
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t")
        message = recv_progress(ws)
    assert message["payload"] == "x"
    assert own_headers(message["headers"]) == Counter([("k", "v"), ("k", "w")])
    assert len(server.connections.items()) == 1


def test_prpc_without_packet_sends_empty_request(gateway: Gateway) -> None:
    server = Server()
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t")
        assert recv_progress(ws)["payload"] == "p0"
        assert recv_progress(ws)["payload"] == "p1"
    ((_, _, payload),) = server.connections.items()
    assert payload == b""


def test_prpc_progress_sent_later_arrives(gateway: Gateway) -> None:
    server = Server(progress=[])
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t")
        server.connections.wait_count(1, what="connections")
        assert_no_message(ws)
        conn = server.conns[0]
        conn.send("later", False)
        assert recv_progress(ws)["payload"] == "later"
        conn.send("last", True)
        message = recv_progress(ws)
        assert (message["payload"], message["done"]) == ("last", True)


def test_prpc_base64_both_ways_with_random_bytes(gateway: Gateway) -> None:
    replies = [os.urandom(n) for n in (0, 1, 2, 3, 1000)]
    done = [False] * (len(replies) - 1) + [True]
    server = Server(progress=[(a0.Packet([], r), d) for r, d in zip(replies, done)])
    request = os.urandom(777) + b"\x00\xff"
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(
            ws,
            topic="t",
            packet={"headers": [["h", "aGk="]], "payload": b64(request)},
            request_encoding="base64",
            response_encoding="base64",
        )
        messages = [recv_progress(ws) for _ in replies]
    assert [base64.b64decode(m["payload"], validate=True) for m in messages] == replies
    ((_, seen_headers, payload),) = server.connections.items()
    assert payload == request
    assert ("h", "aGk=") in seen_headers


def test_prpc_non_utf8_progress_closes_1011_naming_base64(gateway: Gateway) -> None:
    server = Server(progress=[(b"ab\xffcd", False)])
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t")
        reason = expect_close(ws, 1011)
    assert "base64" in reason
    server.wait_cancel()


# --- Scheduler -----------------------------------------------------------------


def test_prpc_on_ack_waits_for_ack(gateway: Gateway) -> None:
    Server(progress=[("a", False), ("b", False), ("c", True)])
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t", scheduler="ON_ACK")
        assert recv_progress(ws)["payload"] == "a"
        assert_no_message(ws)
        ws.send("ACK")
        assert recv_progress(ws)["payload"] == "b"
        assert_no_message(ws)
        ws.send("ACK")
        message = recv_progress(ws)
        assert (message["payload"], message["done"]) == ("c", True)


def test_prpc_default_scheduler_needs_no_ack(gateway: Gateway) -> None:
    Server(progress=[(f"m{i}", i == 9) for i in range(10)])
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t")
        messages = [recv_progress(ws) for _ in range(10)]
    assert [m["payload"] for m in messages] == [f"m{i}" for i in range(10)]
    assert [m["done"] for m in messages] == [False] * 9 + [True]


# --- Cancellation --------------------------------------------------------------


def test_prpc_close_before_done_cancels_once(gateway: Gateway) -> None:
    server = Server(progress=[("a", False)])
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t")
        assert recv_progress(ws)["done"] is False
        assert server.cancels.items() == []
    ((connection_id, _, _),) = server.connections.items()
    assert server.wait_cancel() == connection_id


def test_prpc_close_after_done_cancels_once(gateway: Gateway) -> None:
    server = Server(progress=[("a", False), ("b", True)])
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t")
        recv_progress(ws)
        assert recv_progress(ws)["done"] is True
        assert_no_message(ws)
    ((connection_id, _, _),) = server.connections.items()
    assert server.wait_cancel() == connection_id


def test_prpc_close_before_any_progress_cancels_once(gateway: Gateway) -> None:
    server = Server(progress=[])
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t")
        server.connections.wait_count(1, what="connections")
    ((connection_id, _, _),) = server.connections.items()
    assert server.wait_cancel() == connection_id


def test_prpc_two_connections_cancel_their_own(gateway: Gateway) -> None:
    server = Server(progress=[("a", False)])
    with ws_connect(gateway, "/wsapi/prpc") as first:
        handshake(first, topic="t", packet={"payload": "first"})
        recv_progress(first)
        with ws_connect(gateway, "/wsapi/prpc") as second:
            handshake(second, topic="t", packet={"payload": "second"})
            recv_progress(second)
        payloads = [p for _, _, p in server.connections.items()]
        ids = {p: i for i, _, p in server.connections.items()}
        assert server.cancels.wait_count(1, what="cancels") == [ids[b"second"]]
        # The first is still served.
        server.conns[payloads.index(b"first")].send("more", True)
        assert recv_progress(first)["payload"] == "more"
    wait_until(lambda: len(server.cancels.items()) == 2, what="the second cancel")
    assert server.cancels.items()[1] == ids[b"first"]


# --- Handshake errors ----------------------------------------------------------

HANDSHAKE_ERRORS = [
    pytest.param("not json", "Request must be json.", id="not-json"),
    pytest.param("ACK", "Request must be json.", id="ack-first"),
    pytest.param('["t"]', "Request must be a json object.", id="array"),
    pytest.param("{}", "Request missing required field: topic", id="missing-topic"),
    pytest.param(
        {"topic": "t", "iter": "OLDEST"},
        "Request has unknown value for field: iter  value: OLDEST",
        id="unknown-iter",
    ),
    pytest.param(
        {"topic": "t", "scheduler": "LATER"},
        "Request has unknown value for field: scheduler  value: LATER",
        id="unknown-scheduler",
    ),
    pytest.param(
        {"topic": "t", "request_encoding": "foo"},
        "Request has unknown value for field: request_encoding  value: foo",
        id="unknown-request-encoding",
    ),
    pytest.param(
        {"topic": "t", "response_encoding": "hex"},
        "Request has unknown value for field: response_encoding  value: hex",
        id="unknown-response-encoding",
    ),
    pytest.param({"topic": "/"}, "Invalid topic name", id="invalid-topic"),
    pytest.param(
        {"topic": 7},
        "Request field has incorrect format. field: topic  error: type must be string,"
        " but is number",
        id="topic-number",
    ),
]


@pytest.mark.parametrize("message, reason", HANDSHAKE_ERRORS)
def test_prpc_bad_handshake_closes_4000(
    gateway: Gateway, message: object, reason: str
) -> None:
    server = Server()
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        ws.send(message if isinstance(message, str) else json.dumps(message))
        expect_close(ws, 4000, reason)
    assert server.connections.items() == []


def test_prpc_bad_base64_closes_4000(gateway: Gateway) -> None:
    server = Server()
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t", packet={"payload": "no!"}, request_encoding="base64")
        reason = expect_close(ws, 4000)
    assert reason.startswith(
        "Request field has incorrect format. field: /packet/payload"
    ), reason
    assert server.connections.items() == []


def test_prpc_second_handshake_closes_4000(gateway: Gateway) -> None:
    server = Server(progress=[("a", False)])
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="t")
        recv_progress(ws)
        handshake(ws, topic="t")
        expect_close(ws, 4000, "Handshake only allowed once per websocket.")
    assert len(server.connections.items()) == 1
    server.wait_cancel()


# --- Shutdown ------------------------------------------------------------------


def test_sigterm_with_rpc_prpc_and_log_in_flight(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway()
    rpc_requests = Recorder()
    rpc_cancels = Recorder()
    rpc_server = a0.RpcServer("r", lambda req: rpc_requests(req.pkt.id), rpc_cancels)
    prpc_server = Server("p", progress=[("started", False)])
    a0.Logger("l").info("hello")

    rpc_outcome: list[object] = []

    def call_rpc() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
        try:
            body = json.dumps({"topic": "r", "packet": {"payload": "x"}})
            conn.request("POST", "/api/rpc", body=body)
            rpc_outcome.append(conn.getresponse().status)
        except (OSError, http.client.HTTPException) as exc:
            rpc_outcome.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=call_rpc)
    thread.start()
    try:
        with (
            ws_connect(gateway, "/wsapi/prpc") as prpc_ws,
            ws_connect(gateway, "/wsapi/log") as log_ws,
        ):
            handshake(prpc_ws, topic="p")
            assert recv_progress(prpc_ws)["payload"] == "started"
            handshake(log_ws, topic="l", init="OLDEST")
            assert recv_packet(log_ws)["payload"] == "hello"
            rpc_requests.wait_count(1, what="RPC requests")

            gateway.send_signal(signal.SIGTERM)
            assert gateway.wait_exit(TIMEOUT) == 0
            for ws in (prpc_ws, log_ws):
                with pytest.raises(ConnectionClosed):
                    ws.recv(timeout=TIMEOUT)
    finally:
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    # The RPC's client was not left hanging.
    assert len(rpc_outcome) == 1
    # The deadman is free again.
    deadman = a0.Deadman("api")
    assert deadman.try_take()
    deadman.release()
    # The prpc was cancelled at the server.
    ((connection_id, _, _),) = prpc_server.connections.items()
    assert prpc_server.wait_cancel() == connection_id
    # So was the RPC in flight.
    assert rpc_cancels.wait_count(1, what="RPC cancels") == rpc_requests.items()
    del rpc_server
