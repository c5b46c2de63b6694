"""WebSocket /wsapi/log: streaming an AlephZero log at or above a level."""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from typing import Any

import a0
import pytest
from helpers import (
    STANDARD_HEADERS,
    Gateway,
    assert_no_message,
    expect_close,
    handshake,
    header,
    publish_until_received,
    recv_packet,
    recv_packets,
    seq,
    user_headers,
    ws_connect,
)

LEVELS = ["DBG", "INFO", "WARN", "ERR", "CRIT"]
METHODS = {"DBG": "dbg", "INFO": "info", "WARN": "warn", "ERR": "err", "CRIT": "crit"}


def log_each_level(topic: str = "l", prefix: str = "") -> None:
    """Logs one message per level, lowest first; each payload names its level."""
    logger = a0.Logger(topic)
    for level in LEVELS:
        getattr(logger, METHODS[level])(f"{prefix}{level}")


def payloads(packets: list[dict[str, Any]]) -> list[str]:
    return [p["payload"] for p in packets]


# --- Levels --------------------------------------------------------------------


def test_log_default_level_is_info(gateway: Gateway) -> None:
    log_each_level()
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="l", init="OLDEST")
        packets = recv_packets(ws, 4)
        assert_no_message(ws)
    assert payloads(packets) == ["INFO", "WARN", "ERR", "CRIT"]
    assert [header(p, "a0_log_level") for p in packets] == payloads(packets)


@pytest.mark.parametrize("level", LEVELS)
def test_log_level_delivers_that_level_and_above(gateway: Gateway, level: str) -> None:
    log_each_level()
    expected = LEVELS[LEVELS.index(level) :]
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="l", init="OLDEST", level=level)
        packets = recv_packets(ws, len(expected))
        assert_no_message(ws)
        # Live messages are filtered the same way.
        log_each_level(prefix="live-")
        live = recv_packets(ws, len(expected))
        assert_no_message(ws)
    assert payloads(packets) == expected
    assert payloads(live) == [f"live-{name}" for name in expected]


def test_log_empty_level_is_default(gateway: Gateway) -> None:
    log_each_level()
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="l", init="OLDEST", level="")
        assert payloads(recv_packets(ws, 4)) == ["INFO", "WARN", "ERR", "CRIT"]
        assert_no_message(ws)


def test_log_live_messages_below_level_are_skipped(gateway: Gateway) -> None:
    logger = a0.Logger("l")
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="l", init="OLDEST", level="WARN")
        for i in range(5):
            logger.dbg(f"d{i}")
            logger.info(f"i{i}")
        logger.err("e")
        assert recv_packet(ws)["payload"] == "e"
        assert_no_message(ws)


# --- Messages ------------------------------------------------------------------


def test_log_message_has_headers_and_payload(gateway: Gateway) -> None:
    a0.Logger("l").warn(a0.Packet([("k", "v"), ("k", "w")], "careful"))
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="l", init="OLDEST")
        packet = recv_packet(ws)
    assert packet["payload"] == "careful"
    assert header(packet, "a0_log_level") == "WARN"
    assert Counter(k for k, _ in packet["headers"]) >= Counter(STANDARD_HEADERS)
    own = user_headers(packet["headers"])
    assert own.pop(("a0_log_level", "WARN")) == 1
    assert own == Counter([("k", "v"), ("k", "w")])
    assert seq(packet) == 0


def test_log_lives_in_log_file(gateway: Gateway, root: str) -> None:
    log_each_level("aaa/bbb")
    assert os.path.isfile(os.path.join(root, "aaa", "bbb.log.a0"))
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="aaa/bbb", init="OLDEST", level="CRIT")
        assert recv_packet(ws)["payload"] == "CRIT"


def test_log_response_encoding_base64_random_bytes(gateway: Gateway) -> None:
    data = [os.urandom(n) for n in (0, 1, 2, 3, 1000)]
    logger = a0.Logger("l")
    for item in data:
        logger.err(a0.Packet([], item))
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="l", init="OLDEST", response_encoding="base64")
        packets = recv_packets(ws, len(data))
    assert [base64.b64decode(p["payload"], validate=True) for p in packets] == data
    assert all(header(p, "a0_log_level") == "ERR" for p in packets)


def test_log_non_utf8_payload_closes_1011_naming_base64(gateway: Gateway) -> None:
    a0.Logger("l").info(a0.Packet([], b"abc\xffdef"))
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="l", init="OLDEST")
        reason = expect_close(ws, 1011)
    assert "base64" in reason


# --- Stream options ------------------------------------------------------------


def test_log_default_init_is_await_new(gateway: Gateway) -> None:
    log_each_level(prefix="old-")
    logger = a0.Logger("l")
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="l")
        count, first = publish_until_received(ws, lambda i: logger.info(f"m{i}"))
        assert first["payload"].startswith("m")
        start = int(first["payload"][1:])
        rest = recv_packets(ws, count - 1 - start)
        assert payloads(rest) == [f"m{i}" for i in range(start + 1, count)]


def test_log_init_most_recent(gateway: Gateway) -> None:
    log_each_level()
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="l", init="MOST_RECENT")
        assert recv_packet(ws)["payload"] == "CRIT"
        assert_no_message(ws)


def test_log_integer_init_starts_at_that_seq(gateway: Gateway) -> None:
    log_each_level()
    with ws_connect(gateway, "/wsapi/log") as ws:
        # Seq 3 is ERR; DBG..WARN (0..2) are skipped.
        handshake(ws, topic="l", init=3, level="DBG")
        packets = recv_packets(ws, 2)
        assert_no_message(ws)
    assert [(seq(p), p["payload"]) for p in packets] == [(3, "ERR"), (4, "CRIT")]


def test_log_on_ack_waits_for_ack(gateway: Gateway) -> None:
    log_each_level()
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="l", init="OLDEST", scheduler="ON_ACK")
        assert recv_packet(ws)["payload"] == "INFO"
        assert_no_message(ws)
        ws.send("ACK")
        assert recv_packet(ws)["payload"] == "WARN"
        assert_no_message(ws)
        ws.send("ACK")
        assert recv_packet(ws)["payload"] == "ERR"


def test_log_iter_newest_skips_to_newest(gateway: Gateway) -> None:
    logger = a0.Logger("l")
    logger.info("first")
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="l", init="OLDEST", iter="NEWEST", scheduler="ON_ACK")
        assert recv_packet(ws)["payload"] == "first"
        for i in range(10):
            logger.info(f"n{i}")
        assert_no_message(ws)
        ws.send("ACK")
        assert recv_packet(ws)["payload"] == "n9"


def test_log_two_streams_with_different_levels(gateway: Gateway) -> None:
    log_each_level()
    with (
        ws_connect(gateway, "/wsapi/log") as low,
        ws_connect(gateway, "/wsapi/log") as high,
    ):
        handshake(low, topic="l", init="OLDEST", level="DBG")
        handshake(high, topic="l", init="OLDEST", level="ERR")
        assert payloads(recv_packets(low, 5)) == LEVELS
        assert payloads(recv_packets(high, 2)) == ["ERR", "CRIT"]
        assert_no_message(high)


# --- Handshake errors ----------------------------------------------------------

HANDSHAKE_ERRORS = [
    pytest.param("not json", "Request must be json.", id="not-json"),
    pytest.param("ACK", "Request must be json.", id="ack-first"),
    pytest.param('["l"]', "Request must be a json object.", id="array"),
    pytest.param("{}", "Request missing required field: topic", id="missing-topic"),
    pytest.param(
        {"topic": "l", "level": "X"},
        "Request has unknown value for field: level  value: X",
        id="unknown-level",
    ),
    pytest.param(
        {"topic": "l", "level": "info"},
        "Request has unknown value for field: level  value: info",
        id="lowercase-level",
    ),
    pytest.param(
        {"topic": "l", "level": "WARNING"},
        "Request has unknown value for field: level  value: WARNING",
        id="long-level",
    ),
    pytest.param(
        {"topic": "l", "init": "FOO"},
        "Request has unknown value for field: init  value: FOO",
        id="unknown-init",
    ),
    pytest.param(
        {"topic": "l", "iter": "OLDEST"},
        "Request has unknown value for field: iter  value: OLDEST",
        id="unknown-iter",
    ),
    pytest.param(
        {"topic": "l", "scheduler": "LATER"},
        "Request has unknown value for field: scheduler  value: LATER",
        id="unknown-scheduler",
    ),
    pytest.param(
        {"topic": "l", "response_encoding": "hex"},
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
    pytest.param(
        {"topic": "l", "level": 3},
        "Request field has incorrect format. field: level  error: type must be string,"
        " but is number",
        id="level-number",
    ),
]


@pytest.mark.parametrize("message, reason", HANDSHAKE_ERRORS)
def test_log_bad_handshake_closes_4000(
    gateway: Gateway, message: object, reason: str
) -> None:
    with ws_connect(gateway, "/wsapi/log") as ws:
        ws.send(message if isinstance(message, str) else json.dumps(message))
        expect_close(ws, 4000, reason)


def test_log_second_handshake_closes_4000(gateway: Gateway) -> None:
    log_each_level()
    with ws_connect(gateway, "/wsapi/log") as ws:
        handshake(ws, topic="l", init="OLDEST", level="CRIT")
        assert recv_packet(ws)["payload"] == "CRIT"
        handshake(ws, topic="l", init="OLDEST")
        expect_close(ws, 4000, "Handshake only allowed once per websocket.")
