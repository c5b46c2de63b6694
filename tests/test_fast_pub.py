"""The native publish path answers exactly as the Python path would.

`POST /api/pub` with nothing unusual about it is answered in C++; any other
spelling of the same request (here: a query string) goes through h11 and the
Python routes.  Under every access policy both must give the same bytes back
and publish the same packets, request by request, pipelined or not.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from helpers import (
    TIMEOUT,
    Gateway,
    read_raw_response,
    read_response,
    read_topic,
    request_bytes,
    wait_for_log,
)
from hypothesis import given, settings
from hypothesis import strategies as st

StartGateway = Callable[..., Gateway]
TOKEN = "fast-T0ken"
ALLOWED_ORIGIN = "https://dash.example"
# Globs with the corners of their syntax: `*` and `?` stop at a slash, `**`
# crosses slashes, `***` is `**` then `*`, and the rest is literal.
ALLOW_GLOBS = ["a/**", "b/*/c", "?x*", "d/**/e", "f/***", "g.*"]
DENY_GLOBS = ["a/s*", "**/no"]

POLICIES = {
    "default": [],
    "token": ["--token", TOKEN],
    "origins": ["--allow-origin", ALLOWED_ORIGIN, "--allow-origin", "http://other"],
    "globs": [
        *(arg for glob in ALLOW_GLOBS for arg in ("--allow-topic", glob)),
        *(arg for glob in DENY_GLOBS for arg in ("--deny-topic", glob)),
    ],
    "everything": ["--token", TOKEN, "--allow-origin", ALLOWED_ORIGIN, "--access-log"],
}


@pytest.fixture(scope="module", params=list(POLICIES))
def gateway(
    request: pytest.FixtureRequest, start_module_gateway: StartGateway
) -> Gateway:
    name = f"gw-fast-{request.param}"
    return start_module_gateway(
        args=POLICIES[request.param], env={"A0_TOPIC": name}, topic=name
    )


@pytest.fixture
def conn(gateway: Gateway) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        yield sock


def unique(prefix: str = "a/t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def publish(topic: str, payload: str = "x", **fields: Any) -> bytes:
    return json.dumps(
        {"topic": topic, "packet": {"payload": payload}, **fields}
    ).encode()


def exchange(sock: socket.socket, requests: list[bytes]) -> list[bytes]:
    """Sends `requests` pipelined in one write; returns the raw responses."""
    sock.sendall(b"".join(requests))
    buffer = bytearray()
    return [read_raw_response(sock, buffer) for _ in requests]


# Header lines of requests a policy may allow or refuse.
VARIANTS = {
    "bare": [],
    "token": [f"Authorization: Bearer {TOKEN}"],
    "token-lowercase-scheme": [f"authorization: bearer {TOKEN}"],
    "wrong-token": ["Authorization: Bearer nope"],
    "token-prefix": [f"Authorization: Bearer {TOKEN[:-1]}"],
    "token-twice": [f"Authorization: Bearer {TOKEN}", "Authorization: Bearer x"],
    "basic-scheme": [f"Authorization: Basic {TOKEN}"],
    "allowed-origin": [f"Authorization: Bearer {TOKEN}", f"Origin: {ALLOWED_ORIGIN}"],
    "other-origin": [f"Authorization: Bearer {TOKEN}", "Origin: https://evil.example"],
    "origin-twice": [
        f"Authorization: Bearer {TOKEN}",
        f"Origin: {ALLOWED_ORIGIN}",
        "Origin: https://evil.example",
    ],
}
TOPICS = ["a/x", "a/secret", "b/y/c", "b/y/z/c", "zx", "g.a0", "c/no", "f/g/h"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_pub_answers_like_python_path(
    gateway: Gateway, conn: socket.socket, variant: str
) -> None:
    headers = VARIANTS[variant]
    for topic in TOPICS:
        fast, slow = exchange(
            conn,
            [
                request_bytes("POST", "/api/pub", publish(topic, "fast"), headers),
                request_bytes(
                    "POST", "/api/pub?via=h11", publish(topic, "slow"), headers
                ),
            ],
        )
        assert fast == slow, topic


def test_fast_pub_publishes_each_answered_request_once(
    gateway: Gateway, conn: socket.socket
) -> None:
    topic = unique()
    good = [f"Authorization: Bearer {TOKEN}", f"Origin: {ALLOWED_ORIGIN}"]
    bad = ["Authorization: Bearer nope", "Origin: https://evil.example"]
    requests = [
        request_bytes(
            "POST", "/api/pub", publish(topic, str(i)), good if i % 2 else bad
        )
        for i in range(6)
    ]
    statuses = [int(r.split(b" ", 2)[1]) for r in exchange(conn, requests)]

    # What each policy refuses of `bad`, the others take.
    published = [p.payload.decode() for p in read_topic(topic)]
    assert published == [str(i) for i, s in enumerate(statuses) if s == 200]
    assert statuses[1::2] == [200, 200, 200]


def test_fast_pub_split_request_is_answered_once_whole(
    gateway: Gateway, conn: socket.socket
) -> None:
    topic = unique()
    headers = [f"Authorization: Bearer {TOKEN}", f"Origin: {ALLOWED_ORIGIN}"]
    first = request_bytes("POST", "/api/pub", publish(topic, "y" * 50000), headers)
    second = request_bytes("POST", "/api/pub", publish(topic, "z"), headers)
    # Small pieces, each its own read at the gateway; the second request
    # starts in the piece that ends the first.
    data = first + second
    cut = len(first) - 10
    for at in range(0, cut, 700):
        conn.sendall(data[at : min(at + 700, cut)])
        time.sleep(0.001)
    conn.sendall(data[cut:])

    buffer = bytearray()
    assert read_response(conn, buffer)[::2] == (200, b"success")
    assert read_response(conn, buffer)[::2] == (200, b"success")
    assert [p.payload for p in read_topic(topic)] == [b"y" * 50000, b"z"]


# --- Topic globs ---------------------------------------------------------------

GLOB_SETTINGS = settings(max_examples=200, deadline=None, database=None)
# Names from the characters the globs above care about.
names = st.text(alphabet="abcdefgx/.?*", min_size=1, max_size=12)


@pytest.fixture(scope="module")
def glob_conn(start_module_gateway: StartGateway) -> Iterator[socket.socket]:
    name = "gw-fast-glob-property"
    gateway = start_module_gateway(
        args=POLICIES["globs"], env={"A0_TOPIC": name}, topic=name
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        yield sock


@GLOB_SETTINGS
@given(topic=names)
def test_fast_pub_globs_agree_with_python(glob_conn: socket.socket, topic: str) -> None:
    fast, slow = exchange(
        glob_conn,
        [
            request_bytes("POST", "/api/pub", publish(topic)),
            request_bytes("POST", "/api/pub?via=h11", publish(topic)),
        ],
    )
    assert fast == slow


# --- Access log ----------------------------------------------------------------


def test_fast_pub_logs_one_access_line_per_request(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--access-log", "--token", TOKEN])
    topic = unique()
    auth = [f"Authorization: Bearer {TOKEN}"]
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        statuses = [
            int(r.split(b" ", 2)[1])
            for r in exchange(
                sock,
                [
                    request_bytes("POST", "/api/pub", publish(topic, "1"), auth),
                    request_bytes("POST", "/api/pub", publish(topic, "2")),
                    request_bytes("POST", "/api/pub", publish(topic, "3"), auth),
                    request_bytes("POST", "/api/pub", publish(topic, "4"), auth),
                ],
            )
        ]
    assert statuses == [200, 401, 200, 200]

    wait_for_log(gateway, '"POST /api/pub" 401')
    lines = [
        line.split("a0gw.access: ", 1)[1].split(" ", 1)[1]
        for line in gateway.stderr_text().splitlines()
        if "a0gw.access: " in line
    ]
    assert lines == [f'"POST /api/pub" {status}' for status in statuses]


def test_access_log_hides_token_in_query(start_gateway: StartGateway) -> None:
    gateway = start_gateway(args=["--access-log", "--token", TOKEN])
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        sock.sendall(request_bytes("GET", f"/api/ls?token={TOKEN}&x=1"))
        assert read_response(sock, bytearray())[0] == 200
    line = wait_for_log(gateway, "GET /api/ls")
    assert TOKEN not in line
    assert '"GET /api/ls?token=***&x=1" 200' in line
