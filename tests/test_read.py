"""WebSocket /wsapi/read: streaming the packets of an AlephZero file."""

from __future__ import annotations

import base64
import json
import os
import re
from collections import Counter
from typing import Any

import a0
import httpx
import pytest
from helpers import (
    Gateway,
    assert_no_message,
    expect_close,
    handshake,
    publish_until_received,
    recv_packet,
    recv_packets,
    seq,
    ws_connect,
)


def write(
    path: str, count: int, prefix: str = "p", standard_headers: bool = True
) -> None:
    writer = a0.Writer(a0.File(path))
    if standard_headers:
        writer.push(a0.add_standard_headers())
    for i in range(count):
        writer.write(a0.Packet([("i", str(i))], f"{prefix}{i}"))


def payloads(packets: list[dict[str, Any]]) -> list[str]:
    return [p["payload"] for p in packets]


def test_read_oldest_delivers_file_packets_with_their_headers(gateway: Gateway) -> None:
    writer = a0.Writer(a0.File("dir/f.a0"))
    writer.write(a0.Packet([("k", "v"), ("k", "w")], "one"))
    writer.write(a0.Packet([], "two"))
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="dir/f.a0", init="OLDEST")
        first, second = recv_packets(ws, 2)
        assert_no_message(ws)
    # A plain file gets no standard headers from the gateway.
    assert first["payload"] == "one"
    assert Counter(map(tuple, first["headers"])) == Counter([("k", "v"), ("k", "w")])
    assert second == {"headers": [], "payload": "two"}


def test_read_sees_rest_writes(gateway: Gateway, http: httpx.Client) -> None:
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="f.a0", init="OLDEST")
        body = {"path": "f.a0", "packet": {"headers": [["a", "b"]], "payload": "x"}}
        assert http.post("/api/write", json=body).status_code == 200
        assert recv_packet(ws) == {"headers": [["a", "b"]], "payload": "x"}


def test_read_pubsub_file(gateway: Gateway) -> None:
    a0.Publisher("topic").pub("x")
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="topic.pubsub.a0", init="OLDEST")
        packet = recv_packet(ws)
    assert packet["payload"] == "x"
    assert seq(packet) == 0


def test_read_default_init_is_await_new(gateway: Gateway) -> None:
    write("f.a0", 2, prefix="old")
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="f.a0")
        writer = a0.Writer(a0.File("f.a0"))
        count, first = publish_until_received(
            ws, lambda i: writer.write(a0.Packet([], f"m{i}"))
        )
        assert first["payload"].startswith("m")
        start = int(first["payload"][1:])
        assert payloads(recv_packets(ws, count - 1 - start)) == [
            f"m{i}" for i in range(start + 1, count)
        ]


def test_read_most_recent(gateway: Gateway) -> None:
    write("f.a0", 3)
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="f.a0", init="MOST_RECENT")
        assert recv_packet(ws)["payload"] == "p2"
        write("f.a0", 1, prefix="new")
        assert recv_packet(ws)["payload"] == "new0"


def test_read_integer_init(gateway: Gateway) -> None:
    write("f.a0", 5)
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="f.a0", init=3)
        packets = recv_packets(ws, 2)
        assert_no_message(ws)
    assert [seq(p) for p in packets] == [3, 4]
    assert payloads(packets) == ["p3", "p4"]


def test_read_integer_init_with_newest(gateway: Gateway) -> None:
    write("f.a0", 5)
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="f.a0", init=1, iter="NEWEST")
        packet = recv_packet(ws)
        assert (seq(packet), packet["payload"]) == (4, "p4")
        assert_no_message(ws)


def test_read_on_ack_and_newest(gateway: Gateway) -> None:
    write("f.a0", 1)
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="f.a0", init="OLDEST", iter="NEWEST", scheduler="ON_ACK")
        assert recv_packet(ws)["payload"] == "p0"
        write("f.a0", 10, prefix="q")
        assert_no_message(ws)
        ws.send("ACK")
        assert recv_packet(ws)["payload"] == "q9"
        ws.send("ACK")
        assert_no_message(ws)


def test_read_on_ack_with_next(gateway: Gateway) -> None:
    write("f.a0", 3)
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="f.a0", init="OLDEST", scheduler="ON_ACK")
        assert recv_packet(ws)["payload"] == "p0"
        assert_no_message(ws)
        ws.send("ACK")
        assert recv_packet(ws)["payload"] == "p1"
        assert_no_message(ws)
        ws.send("ACK")
        assert recv_packet(ws)["payload"] == "p2"


def test_read_immediate(gateway: Gateway) -> None:
    write("f.a0", 20)
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="f.a0", init="OLDEST", scheduler="IMMEDIATE")
        assert payloads(recv_packets(ws, 20)) == [f"p{i}" for i in range(20)]


def test_read_base64_random_bytes(gateway: Gateway) -> None:
    data = os.urandom(5000)
    a0.Writer(a0.File("f.a0")).write(a0.Packet([("k", "v")], data))
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="f.a0", init="OLDEST", response_encoding="base64")
        packet = recv_packet(ws)
    assert base64.b64decode(packet["payload"], validate=True) == data
    assert packet["headers"] == [["k", "v"]]


def test_read_non_utf8_payload_closes_1011(gateway: Gateway) -> None:
    a0.Writer(a0.File("f.a0")).write(a0.Packet([], b"\xc3\x28"))
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="f.a0", init="OLDEST", response_encoding="none")
        reason = expect_close(ws, 1011)
    assert re.search(r"\b0\b", reason), reason
    assert "base64" in reason


def test_read_file_created_after_connect(gateway: Gateway, root: str) -> None:
    assert not os.path.exists(os.path.join(root, "later", "f.a0"))
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="later/f.a0", init="OLDEST")
        write("later/f.a0", 2)
        assert payloads(recv_packets(ws, 2)) == ["p0", "p1"]


HANDSHAKE_ERRORS = [
    pytest.param("not json", "Request must be json.", id="not-json"),
    pytest.param("[]", "Request must be a json object.", id="array"),
    pytest.param("{}", "Request missing required field: path", id="missing-path"),
    pytest.param(
        {"topic": "t"}, "Request missing required field: path", id="topic-not-path"
    ),
    pytest.param(
        {"path": "f.a0", "init": "NEWEST"},
        "Request has unknown value for field: init  value: NEWEST",
        id="unknown-init",
    ),
    pytest.param(
        {"path": "f.a0", "iter": "x"},
        "Request has unknown value for field: iter  value: x",
        id="unknown-iter",
    ),
    pytest.param(
        {"path": "f.a0", "scheduler": "on_ack"},
        "Request has unknown value for field: scheduler  value: on_ack",
        id="unknown-scheduler",
    ),
    pytest.param(
        {"path": "f.a0", "response_encoding": "utf8"},
        "Request has unknown value for field: response_encoding  value: utf8",
        id="unknown-response-encoding",
    ),
    pytest.param(
        {"path": False},
        "Request field has incorrect format. field: path  error: type must be string,"
        " but is boolean",
        id="path-bool",
    ),
    pytest.param({"path": "/"}, "Is a directory", id="root-dir"),
]


@pytest.mark.parametrize("message, reason", HANDSHAKE_ERRORS)
def test_read_bad_handshake_closes_4000(
    gateway: Gateway, message: object, reason: str
) -> None:
    with ws_connect(gateway, "/wsapi/read") as ws:
        ws.send(message if isinstance(message, str) else json.dumps(message))
        expect_close(ws, 4000, reason)


def test_read_second_handshake_closes_4000(gateway: Gateway) -> None:
    with ws_connect(gateway, "/wsapi/read") as ws:
        handshake(ws, path="f.a0")
        handshake(ws, path="f.a0")
        expect_close(ws, 4000, "Handshake only allowed once per websocket.")
