"""WebSocket /wsapi/sub: streaming the packets of a pubsub topic."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import a0
import httpx
import pytest
from helpers import (
    STANDARD_HEADERS,
    TIMEOUT,
    Gateway,
    RawWebSocket,
    assert_no_message,
    b64,
    expect_close,
    handshake,
    header,
    publish_until_received,
    recv_packet,
    recv_packets,
    seq,
    user_headers,
    wait_until,
    ws_connect,
)


def publish(count: int, topic: str = "t", prefix: str = "p") -> None:
    pub = a0.Publisher(topic)
    for i in range(count):
        pub.pub(f"{prefix}{i}")


def publish_paced(count: int, pause: float, size: int, topic: str = "t") -> None:
    """Publishes "0....", "1....", ... (`size` bytes each), `pause` s apart."""
    pub = a0.Publisher(topic)
    for i in range(count):
        pub.pub(f"{i}".ljust(size, "."))
        time.sleep(pause)


def payloads(packets: list[dict[str, Any]]) -> list[str]:
    return [p["payload"] for p in packets]


def make_topic(topic: str, size: int) -> None:
    """Creates the topic's file with `size` bytes, so nothing is evicted."""
    options = a0.File.Options.DEFAULT
    options.create_options.size = size
    a0.File(f"{topic}.pubsub.a0", options)


# --- Packets -------------------------------------------------------------------


def test_sub_packet_has_headers_and_payload(gateway: Gateway) -> None:
    a0.Publisher("t").pub(a0.Packet([("k", "v"), ("k", "w"), ("x", "")], "hello"))
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST")
        packet = recv_packet(ws)
    assert packet["payload"] == "hello"
    assert Counter(k for k, _ in packet["headers"]) >= Counter(STANDARD_HEADERS)
    assert user_headers(packet["headers"]) == Counter(
        [("k", "v"), ("k", "w"), ("x", "")]
    )
    assert seq(packet) == 0


def test_sub_payload_text_round_trips_json_escapes(gateway: Gateway) -> None:
    text = 'q"uote \\ slash / \n\r\t\b\f \u0000\u001f\u007f h\u00e9 \u2603 \U0001f600'
    a0.Publisher("t").pub(a0.Packet([("h\u00e9ader", 'va"l\\ue\n')], text.encode()))
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST", response_encoding="none")
        packet = recv_packet(ws)
    assert packet["payload"] == text
    assert header(packet, "h\u00e9ader") == 'va"l\\ue\n'


def test_sub_response_encoding_base64_delivers_random_bytes(gateway: Gateway) -> None:
    data = [os.urandom(n) for n in (0, 1, 2, 3, 1000, 65537)]
    pub = a0.Publisher("t")
    for item in data:
        pub.pub(a0.Packet([("k", "v")], item))
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST", response_encoding="base64")
        packets = recv_packets(ws, len(data))
    assert [base64.b64decode(p["payload"], validate=True) for p in packets] == data
    # Headers stay plain text.
    assert all(header(p, "k") == "v" for p in packets)


def test_sub_non_utf8_payload_closes_1011_naming_offset(gateway: Gateway) -> None:
    a0.Publisher("t").pub(b"abc\xffdef")
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST")
        reason = expect_close(ws, 1011)
    assert re.search(r"\b3\b", reason), reason
    assert "base64" in reason


def test_sub_non_utf8_payload_is_fine_with_base64(gateway: Gateway) -> None:
    a0.Publisher("t").pub(b"abc\xffdef")
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST", response_encoding="base64")
        assert base64.b64decode(recv_packet(ws)["payload"]) == b"abc\xffdef"


@pytest.mark.parametrize("encoding", ["none", "base64"])
def test_sub_one_mib_payload_from_rest_pub(
    gateway: Gateway, http: httpx.Client, encoding: str
) -> None:
    if encoding == "none":
        data = ("abcdefghijklmnop" * (1024 * 1024 // 16)).encode()
        sent = data.decode()
    else:
        data = os.urandom(1024 * 1024)
        sent = b64(data)
    body = {"topic": "t", "packet": {"payload": sent}, "request_encoding": encoding}
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST", response_encoding=encoding)
        response = http.post("/api/pub", json=body)
        assert response.status_code == 200, response.text
        packet = recv_packet(ws)
    if encoding == "none":
        assert packet["payload"].encode() == data
    else:
        assert base64.b64decode(packet["payload"], validate=True) == data


def test_sub_rest_pub_base64_random_bytes_reach_ws(
    gateway: Gateway, http: httpx.Client
) -> None:
    data = os.urandom(777)
    body = {
        "topic": "t",
        "packet": {"payload": b64(data)},
        "request_encoding": "base64",
    }
    assert http.post("/api/pub", json=body).status_code == 200
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST", response_encoding="base64")
        assert base64.b64decode(recv_packet(ws)["payload"]) == data


# --- init ----------------------------------------------------------------------


def test_sub_init_oldest_delivers_all_then_new(gateway: Gateway) -> None:
    publish(3)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST")
        assert payloads(recv_packets(ws, 3)) == ["p0", "p1", "p2"]
        publish(1, prefix="new")
        assert recv_packet(ws)["payload"] == "new0"
        assert_no_message(ws)


def test_sub_init_most_recent_starts_at_latest(gateway: Gateway) -> None:
    publish(3)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="MOST_RECENT")
        packet = recv_packet(ws)
        assert packet["payload"] == "p2"
        assert seq(packet) == 2
        publish(1, prefix="new")
        assert recv_packet(ws)["payload"] == "new0"


def check_await_new(ws: Any) -> None:
    pub = a0.Publisher("t")
    count, first = publish_until_received(ws, lambda i: pub.pub(f"m{i}"))
    # The first packet is a marker, never the packet published before.
    assert first["payload"].startswith("m")
    start = int(first["payload"][1:])
    rest = recv_packets(ws, count - 1 - start)
    assert payloads(rest) == [f"m{i}" for i in range(start + 1, count)]
    pub.pub("after")
    assert recv_packet(ws)["payload"] == "after"


def test_sub_default_init_is_await_new(gateway: Gateway) -> None:
    publish(2, prefix="old")
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t")
        check_await_new(ws)


def test_sub_init_await_new_skips_existing(gateway: Gateway) -> None:
    publish(2, prefix="old")
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="AWAIT_NEW")
        check_await_new(ws)


def test_sub_integer_init_starts_at_that_seq(gateway: Gateway) -> None:
    publish(5)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init=3)
        packets = recv_packets(ws, 2)
        assert [seq(p) for p in packets] == [3, 4]
        assert payloads(packets) == ["p3", "p4"]
        assert_no_message(ws)
        publish(1, prefix="new")
        packet = recv_packet(ws)
        assert (seq(packet), packet["payload"]) == (5, "new0")


def test_sub_integer_init_zero_is_everything(gateway: Gateway) -> None:
    publish(3)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init=0)
        assert [seq(p) for p in recv_packets(ws, 3)] == [0, 1, 2]
        assert_no_message(ws)


def test_sub_integer_init_ahead_waits_for_that_seq(gateway: Gateway) -> None:
    publish(2)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init=4)
        publish(2, prefix="q")  # seq 2 and 3
        assert_no_message(ws)
        publish(2, prefix="r")  # seq 4 and 5
        packets = recv_packets(ws, 2)
        assert [seq(p) for p in packets] == [4, 5]
        assert payloads(packets) == ["r0", "r1"]


def test_sub_reconnect_with_last_seq_plus_one_has_no_duplicates(
    gateway: Gateway,
) -> None:
    publish(3, prefix="a")
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST")
        first = recv_packets(ws, 3)
    last = seq(first[-1])
    assert last == 2
    publish(2, prefix="b")
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init=last + 1)
        second = recv_packets(ws, 2)
        assert_no_message(ws)
    assert payloads(first + second) == ["a0", "a1", "a2", "b0", "b1"]
    assert [seq(p) for p in first + second] == [0, 1, 2, 3, 4]


def test_sub_integer_init_with_newest_delivers_newest(gateway: Gateway) -> None:
    publish(5)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init=2, iter="NEWEST")
        packet = recv_packet(ws)
        assert (seq(packet), packet["payload"]) == (4, "p4")
        assert_no_message(ws)


def test_sub_integer_init_with_newest_waits_for_seq(gateway: Gateway) -> None:
    publish(5)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init=7, iter="NEWEST")
        assert_no_message(ws)
        publish(2, prefix="q")  # seq 5 and 6
        assert_no_message(ws)
        publish(1, prefix="r")  # seq 7
        packet = recv_packet(ws)
        assert (seq(packet), packet["payload"]) == (7, "r0")


# --- iter ----------------------------------------------------------------------


def test_sub_default_iter_delivers_every_packet_in_order(gateway: Gateway) -> None:
    publish(50)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST")
        packets = recv_packets(ws, 50)
    assert payloads(packets) == [f"p{i}" for i in range(50)]
    assert [seq(p) for p in packets] == list(range(50))


def test_sub_iter_next_with_on_ack_resumes_at_next(gateway: Gateway) -> None:
    publish(1)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST", iter="NEXT", scheduler="ON_ACK")
        assert recv_packet(ws)["payload"] == "p0"
        publish(20, prefix="q")
        assert_no_message(ws)
        ws.send("ACK")
        assert recv_packet(ws)["payload"] == "q0"


def test_sub_iter_newest_skips_to_newest_after_ack(gateway: Gateway) -> None:
    publish(1)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST", iter="NEWEST", scheduler="ON_ACK")
        assert recv_packet(ws)["payload"] == "p0"
        publish(20, prefix="q")
        assert_no_message(ws)
        ws.send("ACK")
        packet = recv_packet(ws)
        assert (packet["payload"], seq(packet)) == ("q19", 20)
        ws.send("ACK")
        assert_no_message(ws)


# --- scheduler -----------------------------------------------------------------


def test_sub_on_ack_waits_for_ack(gateway: Gateway) -> None:
    publish(3)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST", scheduler="ON_ACK")
        # The first packet needs no ACK.
        assert recv_packet(ws)["payload"] == "p0"
        assert_no_message(ws)
        ws.send("ACK")
        assert recv_packet(ws)["payload"] == "p1"
        assert_no_message(ws)
        ws.send("ACK")
        assert recv_packet(ws)["payload"] == "p2"
        ws.send("ACK")
        # Credit for one more: a new packet goes out without waiting.
        assert_no_message(ws)
        publish(1, prefix="new")
        assert recv_packet(ws)["payload"] == "new0"
        assert_no_message(ws)


def test_sub_next_reports_packets_the_ring_overwrote(gateway: Gateway) -> None:
    publisher = a0.Publisher("ring")
    publisher.pub("first")
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="ring", init="OLDEST", scheduler="ON_ACK")
        first = recv_packet(ws)
        assert first["payload"] == "first"
        # While the client holds its ACK, more than the 16 MiB ring is published:
        # the packets after "first" are overwritten before the reader gets there.
        for _ in range(24):
            publisher.pub("x" * (1024 * 1024))
        publisher.pub("last")
        ws.send("ACK")
        after = recv_packet(ws)
        skipped = seq(after) - seq(first) - 1
        assert skipped > 0
        assert header(after, "a0gw_dropped") == str(skipped)


def test_sub_integer_init_reports_packets_overwritten_since_that_seq(
    gateway: Gateway,
) -> None:
    # A client resuming at N after the ring overwrote N onwards learns how
    # many it missed, as a client that falls behind does.
    publisher = a0.Publisher("ring")
    for _ in range(20):
        publisher.pub("x" * (1024 * 1024))
    publisher.pub("last")
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="ring", init=2)
        first = recv_packet(ws)
        assert seq(first) > 2
        assert header(first, "a0gw_dropped") == str(seq(first) - 2)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="ring", init=seq(first))
        again = recv_packet(ws)
        assert seq(again) == seq(first)
        assert "a0gw_dropped" not in dict(again["headers"])


def test_sub_on_ack_first_packet_waits_for_publish(gateway: Gateway) -> None:
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST", scheduler="ON_ACK")
        assert_no_message(ws)
        publish(2)
        assert recv_packet(ws)["payload"] == "p0"
        assert_no_message(ws)
        ws.send("ACK")
        assert recv_packet(ws)["payload"] == "p1"


def small_window_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer, so the server's fills fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(None)
    return sock


PACKET_SIZE = 64 * 1024
FLOOD = 300  # 19 MiB: far more than socket buffers and the gateway's queues.


def flood(topic: str, count: int) -> None:
    pub = a0.Publisher(topic)
    pad = "x" * (PACKET_SIZE - 8)
    for i in range(count):
        pub.pub(f"{i:08d}{pad}")


def drain(ws: Any, publish_final: Callable[[], None]) -> list[dict[str, Any]]:
    """Reads until quiet, then publishes a final packet and reads up to it."""
    packets = []
    final_sent = False
    while True:
        try:
            packet = recv_packet(ws, timeout=1.0 if not final_sent else TIMEOUT)
        except TimeoutError:
            assert not final_sent, "the final packet never arrived"
            publish_final()
            final_sent = True
            continue
        packets.append(packet)
        if packet["payload"] == "final":
            return packets


def test_sub_on_drain_holds_reader_and_drops_nothing(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway()
    make_topic("t", 64 * 1024 * 1024)
    sock = small_window_socket(gateway.port)
    with ws_connect(gateway, "/wsapi/sub", sock=sock) as ws:
        handshake(ws, topic="t", init="OLDEST", scheduler="ON_DRAIN")
        flood("t", FLOOD)
        packets = drain(ws, lambda: a0.Publisher("t").pub("final"))
    assert [seq(p) for p in packets] == list(range(FLOOD + 1))
    assert [p["payload"][:8] for p in packets[:-1]] == [
        f"{i:08d}" for i in range(FLOOD)
    ]
    assert not any(k == "a0gw_dropped" for p in packets for k, _ in p["headers"])


def test_sub_immediate_drops_and_counts_overflow(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway(args=["--queue-limit", str(128 * 1024)])
    make_topic("t", 64 * 1024 * 1024)
    sock = small_window_socket(gateway.port)
    with ws_connect(gateway, "/wsapi/sub", sock=sock) as ws:
        handshake(ws, topic="t", init="OLDEST", scheduler="IMMEDIATE")
        flood("t", FLOOD)
        packets = drain(ws, lambda: a0.Publisher("t").pub("final"))
    seqs = [seq(p) for p in packets]
    assert seqs[0] == 0
    assert seqs[-1] == FLOOD
    assert seqs == sorted(set(seqs)), "packets must stay in order without repeats"
    total_dropped = 0
    previous = -1
    for packet, packet_seq in zip(packets, seqs):
        dropped = [int(v) for k, v in packet["headers"] if k == "a0gw_dropped"]
        assert len(dropped) <= 1
        count = dropped[0] if dropped else 0
        # The header counts exactly the packets skipped since the last delivered.
        assert count == packet_seq - previous - 1, (packet_seq, previous, count)
        if packet["payload"] != "final":
            assert packet["payload"][:8] == f"{packet_seq:08d}"
        total_dropped += count
        previous = packet_seq
    assert total_dropped > 0, "the flood should have overflowed the queue"
    assert len(packets) + total_dropped == FLOOD + 1


def test_sub_immediate_delivers_everything_to_fast_client(gateway: Gateway) -> None:
    publish(30)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST", scheduler="IMMEDIATE")
        packets = recv_packets(ws, 30)
        assert_no_message(ws)
    assert payloads(packets) == [f"p{i}" for i in range(30)]
    assert not any(k == "a0gw_dropped" for p in packets for k, _ in p["headers"])


# --- Peers ---------------------------------------------------------------------


def test_sub_before_topic_exists(gateway: Gateway, root: str) -> None:
    path = os.path.join(root, "new", "topic.pubsub.a0")
    assert not os.path.exists(path)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="new/topic")
        pub = a0.Publisher("new/topic")
        count, first = publish_until_received(ws, lambda i: pub.pub(f"m{i}"))
        start = int(first["payload"][1:])
        rest = recv_packets(ws, count - 1 - start)
        assert payloads(rest) == [f"m{i}" for i in range(start + 1, count)]


def test_sub_interleaved_publishers_in_transport_seq_order(
    gateway: Gateway, http: httpx.Client
) -> None:
    publishers = [a0.Publisher("t") for _ in range(3)]
    expected = []
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST")
        for i in range(40):
            source = i % 4
            payload = f"s{source}-{i}"
            expected.append(payload)
            if source == 3:
                body = {"topic": "t", "packet": {"payload": payload}}
                assert http.post("/api/pub", json=body).status_code == 200
            else:
                publishers[source].pub(payload)
        packets = recv_packets(ws, 40)
        assert_no_message(ws)
    assert payloads(packets) == expected
    assert [seq(p) for p in packets] == list(range(40))
    writers = {header(p, "a0_writer_id") for p in packets}
    assert len(writers) == 4


def test_sub_concurrent_publishers_all_delivered(
    gateway: Gateway, http: httpx.Client
) -> None:
    per_source = 25

    def a0_source(name: str) -> None:
        pub = a0.Publisher("t")
        for i in range(per_source):
            pub.pub(f"{name}-{i}")

    def rest_source() -> None:
        with httpx.Client(base_url=gateway.url, trust_env=False) as client:
            for i in range(per_source):
                body = {"topic": "t", "packet": {"payload": f"rest-{i}"}}
                assert client.post("/api/pub", json=body).status_code == 200

    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST")
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(a0_source, f"a0{n}") for n in range(3)]
            futures.append(pool.submit(rest_source))
            for future in futures:
                future.result()  # Re-raises what failed in the thread.
        packets = recv_packets(ws, 4 * per_source)
        assert_no_message(ws)
    assert [seq(p) for p in packets] == list(range(4 * per_source))
    by_source: dict[str, list[int]] = {}
    for p in packets:
        name, index = p["payload"].rsplit("-", 1)
        by_source.setdefault(name, []).append(int(index))
    assert by_source == {
        name: list(range(per_source)) for name in ("a00", "a01", "a02", "rest")
    }


def test_sub_two_subscribers_get_same_packets(gateway: Gateway) -> None:
    publish(5)
    with (
        ws_connect(gateway, "/wsapi/sub") as ws1,
        ws_connect(gateway, "/wsapi/sub") as ws2,
    ):
        handshake(ws1, topic="t", init="OLDEST")
        handshake(ws2, topic="t", init="OLDEST", scheduler="ON_ACK")
        assert payloads(recv_packets(ws1, 5)) == [f"p{i}" for i in range(5)]
        assert recv_packet(ws2)["payload"] == "p0"
        assert_no_message(ws2)


# --- Handshake errors ----------------------------------------------------------

HANDSHAKE_ERRORS = [
    pytest.param("not json", "Request must be json.", id="not-json"),
    pytest.param("", "Request must be json.", id="empty"),
    pytest.param("ACK", "Request must be json.", id="ack-first"),
    pytest.param('["t"]', "Request must be a json object.", id="array"),
    pytest.param("null", "Request must be a json object.", id="null"),
    pytest.param("{}", "Request missing required field: topic", id="missing-topic"),
    pytest.param(
        {"path": "t.pubsub.a0"},
        "Request missing required field: topic",
        id="path-not-topic",
    ),
    pytest.param(
        {"topic": "t", "init": "FOO"},
        "Request has unknown value for field: init  value: FOO",
        id="unknown-init",
    ),
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
def test_sub_bad_handshake_closes_4000(
    gateway: Gateway, message: object, reason: str
) -> None:
    with ws_connect(gateway, "/wsapi/sub") as ws:
        ws.send(message if isinstance(message, str) else json.dumps(message))
        expect_close(ws, 4000, reason)


@pytest.mark.parametrize(
    "init", [-1, 1.5, True, [3]], ids=["negative", "float", "bool", "list"]
)
def test_sub_bad_init_value_closes_4000(gateway: Gateway, init: object) -> None:
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init=init)
        reason = expect_close(ws, 4000)
    assert "init" in reason


def test_sub_second_handshake_closes_4000(gateway: Gateway) -> None:
    publish(1)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST")
        assert recv_packet(ws)["payload"] == "p0"
        handshake(ws, topic="t", init="OLDEST")
        expect_close(ws, 4000, "Handshake only allowed once per websocket.")


def test_sub_bad_handshake_leaves_other_streams_alone(gateway: Gateway) -> None:
    with (
        ws_connect(gateway, "/wsapi/sub") as good,
        ws_connect(gateway, "/wsapi/sub") as bad,
    ):
        handshake(good, topic="t", init="OLDEST")
        bad.send("nope")
        expect_close(bad, 4000, "Request must be json.")
        publish(1)
        assert recv_packet(good)["payload"] == "p0"


# --- Names and numbers the gateway must refuse -----------------------------


def test_sub_init_beyond_uint64_closes_4000(gateway: Gateway) -> None:
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init=2**64)
        reason = expect_close(ws, 4000)
    assert "init" in reason


def test_sub_topic_with_lone_surrogate_closes_4000(gateway: Gateway) -> None:
    with ws_connect(gateway, "/wsapi/sub") as ws:
        ws.send('{"topic": "\\ud800"}')
        expect_close(ws, 4000)


def test_sub_topic_with_nul_closes_4000(gateway: Gateway) -> None:
    publish(1)
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t\u0000x", init="OLDEST")
        expect_close(ws, 4000)


# --- Live packets sent by the reader thread ------------------------------------
# An idle connection's live packets go from the AlephZero reader thread straight
# to the socket, while the event loop writes pings, pongs and close frames.


@pytest.mark.parametrize(
    ("size", "rcvbuf"),
    [(16, None), (40_000, 4096)],
    ids=["small-packets", "congested-socket"],
)
def test_sub_live_packets_and_pings_stay_whole_frames_in_order(
    start_gateway: Callable[..., Gateway], size: int, rcvbuf: int | None
) -> None:
    # With a small receive buffer and pauses in reading, the socket fills
    # often, so frames go out in parts, from the reader thread or the event
    # loop, between pings.
    gateway = start_gateway(args=["--ping-interval", "0.01", "--ping-timeout", "5"])
    count = 2000
    make_topic("t", count * (size + 1024))  # The ring must not drop any.
    received: list[str] = []
    pings = 0
    with RawWebSocket(gateway, "/wsapi/sub", rcvbuf=rcvbuf) as ws:
        ws.send_text(json.dumps({"topic": "t", "init": "OLDEST"}))
        publisher = threading.Thread(
            target=publish_paced, args=(count, 0.0005, size), daemon=True
        )
        publisher.start()
        while len(received) < count:
            opcode, data = ws.recv_frame()
            if opcode == 0x9:
                pings += 1
                ws.send_frame(0xA, data)
            else:
                assert opcode == 0x1, f"unexpected opcode {opcode}"
                received.append(json.loads(data)["payload"])
                if rcvbuf is not None and len(received) % 50 == 0:
                    time.sleep(0.02)
        publisher.join()
    assert received == [f"{i}".ljust(size, ".") for i in range(count)]
    assert pings > 10, "the test needs pings between the packets"


def test_sub_close_after_live_packets_ends_the_connection(gateway: Gateway) -> None:
    with RawWebSocket(gateway, "/wsapi/sub") as ws:
        ws.send_text(json.dumps({"topic": "t"}))
        pub = a0.Publisher("t")
        deadline = time.monotonic() + TIMEOUT
        while True:
            pub.pub("live")
            try:
                opcode, _ = ws.recv_frame(timeout=0.1)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "the stream delivered nothing"
        assert opcode == 0x1

        ws.send_text(json.dumps({"topic": "t"}))
        code, reason = ws.recv_close()
        assert (code, reason) == (4000, "Handshake only allowed once per websocket.")
        ws.send_frame(0x8, code.to_bytes(2, "big"))
        ws.wait_dropped(timeout=2.0)


def test_sub_connections_leave_no_open_files(gateway: Gateway) -> None:
    def open_files() -> int:
        return len(os.listdir(f"/proc/{gateway.proc.pid}/fd"))

    def subscribe_once(i: int) -> None:
        with ws_connect(gateway, "/wsapi/sub") as ws:
            handshake(ws, topic="t")
            publish_until_received(ws, lambda n: a0.Publisher("t").pub(f"{i}.{n}"))

    subscribe_once(0)  # Opens what the gateway keeps for the topic.
    before = open_files()
    for i in range(1, 21):
        subscribe_once(i)
    wait_until(lambda: open_files() <= before, what="the gateway to close its files")
