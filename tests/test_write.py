"""POST /api/write: writing a packet to an AlephZero file."""

from __future__ import annotations

import json
import os
from collections import Counter

import httpx
import pytest
from helpers import (
    STANDARD_HEADERS,
    Gateway,
    assert_nothing_written,
    b64,
    read_file,
    read_topic,
    user_headers,
)


def write(http: httpx.Client, body: object) -> httpx.Response:
    return http.post("/api/write", json=body)


def test_write_replies_success_and_writes_packet(http: httpx.Client, root: str) -> None:
    response = write(http, {"path": "aaa/bbb.a0", "packet": {"payload": "hello"}})
    assert response.status_code == 200
    assert response.text == "success"
    assert os.path.isfile(os.path.join(root, "aaa", "bbb.a0"))
    packets = read_file("aaa/bbb.a0")
    assert [p.payload for p in packets] == [b"hello"]


def test_write_has_only_user_headers_by_default(http: httpx.Client) -> None:
    headers = [["aaa", "1"], ["bbb", "2"], ["aaa", "3"]]
    body = {"path": "f.a0", "packet": {"headers": headers, "payload": "x"}}
    assert write(http, body).status_code == 200
    (packet,) = read_file("f.a0")
    assert Counter(packet.headers) == Counter(
        [("aaa", "1"), ("bbb", "2"), ("aaa", "3")]
    )


def test_write_without_headers_has_no_headers(http: httpx.Client) -> None:
    assert write(http, {"path": "f.a0", "packet": {"payload": "x"}}).status_code == 200
    (packet,) = read_file("f.a0")
    assert packet.headers == []


def test_write_standard_headers_false_has_only_user_headers(http: httpx.Client) -> None:
    body = {
        "path": "f.a0",
        "packet": {"headers": [["k", "v"]], "payload": "x"},
        "standard_headers": False,
    }
    assert write(http, body).status_code == 200
    (packet,) = read_file("f.a0")
    assert packet.headers == [("k", "v")]


def test_write_standard_headers_true_adds_them(http: httpx.Client) -> None:
    body = {
        "path": "f.a0",
        "packet": {"headers": [["k", "v"]], "payload": "x"},
        "standard_headers": True,
    }
    assert write(http, body).status_code == 200
    (packet,) = read_file("f.a0")
    keys = Counter(k for k, _ in packet.headers)
    for key in STANDARD_HEADERS:
        assert keys[key] == 1, packet.headers
    assert user_headers(packet.headers) == Counter([("k", "v")])


def test_write_appends_in_order(http: httpx.Client) -> None:
    for i in range(4):
        body = {"path": "f.a0", "packet": {"payload": f"p{i}"}}
        assert write(http, body).status_code == 200
    assert [p.payload for p in read_file("f.a0")] == [b"p0", b"p1", b"p2", b"p3"]


def test_write_base64_random_bytes(http: httpx.Client) -> None:
    data = os.urandom(3000)
    body = {
        "path": "f.a0",
        "packet": {"payload": b64(data)},
        "request_encoding": "base64",
    }
    assert write(http, body).status_code == 200
    (packet,) = read_file("f.a0")
    assert packet.payload == data


def test_write_request_encoding_none_writes_text_as_is(http: httpx.Client) -> None:
    body = {"path": "f.a0", "packet": {"payload": "aGk="}, "request_encoding": "none"}
    assert write(http, body).status_code == 200
    (packet,) = read_file("f.a0")
    assert packet.payload == b"aGk="


def test_write_to_pubsub_file_reaches_subscribers(http: httpx.Client) -> None:
    body = {
        "path": "topic.pubsub.a0",
        "packet": {"payload": "x"},
        "standard_headers": True,
    }
    assert write(http, body).status_code == 200
    assert [p.payload for p in read_topic("topic")] == [b"x"]


# --- Errors --------------------------------------------------------------------

PACKET = {"payload": "x"}

ERRORS = [
    pytest.param(b"not json", "Request must be json.", id="not-json"),
    pytest.param(b"", "Request must be json.", id="empty-body"),
    pytest.param(b'["f.a0"]', "Request must be a json object.", id="array"),
    pytest.param(
        {"packet": PACKET}, "Request missing required field: path", id="missing-path"
    ),
    pytest.param(
        {"topic": "f", "packet": PACKET},
        "Request missing required field: path",
        id="topic-instead-of-path",
    ),
    pytest.param(
        {"path": "f.a0", "packet": {}},
        "Request missing required field: /packet/payload",
        id="missing-payload",
    ),
    pytest.param(
        {"path": "f.a0", "packet": PACKET, "request_encoding": "foo"},
        "Request has unknown value for field: request_encoding  value: foo",
        id="unknown-request-encoding",
    ),
    pytest.param({"path": "/", "packet": PACKET}, "Is a directory", id="root-dir"),
    pytest.param(
        {"path": 3, "packet": PACKET},
        "Request field has incorrect format. field: path  error: type must be string,"
        " but is number",
        id="path-number",
    ),
    pytest.param(
        {"path": "f.a0", "packet": PACKET, "standard_headers": "yes"},
        "Request field has incorrect format. field: standard_headers"
        "  error: type must be boolean, but is string",
        id="standard-headers-string",
    ),
]


@pytest.mark.parametrize("body, message", ERRORS)
def test_write_rejects_bad_request(
    http: httpx.Client, root: str, body: object, message: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post("/api/write", content=content)
    assert response.status_code == 400
    assert response.text == message
    assert_nothing_written(root)


def test_write_rejects_invalid_base64(http: httpx.Client, root: str) -> None:
    body = {"path": "f.a0", "packet": {"payload": "@@@@"}, "request_encoding": "base64"}
    response = write(http, body)
    assert response.status_code == 400
    assert response.text.startswith(
        "Request field has incorrect format. field: /packet/payload"
    ), response.text
    assert "base64" in response.text
    assert_nothing_written(root)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"k": "v"}, id="object"),
        pytest.param([["k"]], id="short-pair"),
        pytest.param([["k", 1]], id="number-value"),
    ],
)
def test_write_rejects_malformed_headers(
    http: httpx.Client, root: str, headers: object
) -> None:
    response = write(
        http, {"path": "f.a0", "packet": {"headers": headers, "payload": "x"}}
    )
    assert response.status_code == 400
    assert "/packet/headers" in response.text
    assert_nothing_written(root)


@pytest.mark.parametrize("payload", ["\ud800", "a\udfffb"])
def test_write_rejects_payload_that_is_not_unicode(
    http: httpx.Client, root: str, payload: str
) -> None:
    body = json.dumps({"path": "f.a0", "packet": {"payload": payload}})
    response = http.post("/api/write", content=body)
    assert response.status_code == 400
    assert response.text.startswith(
        "Request field has incorrect format. field: /packet/payload"
    )
    assert_nothing_written(root)


# --- Names and numbers the gateway must refuse -----------------------------


@pytest.mark.parametrize("path", ["notes.txt", "api.deadman"])
def test_write_to_non_a0_file_is_400_and_gateway_survives(
    gateway: Gateway, root: str, path: str
) -> None:
    if path == "notes.txt":
        with open(os.path.join(root, path), "w") as f:
            f.write("hello\n")
    body = {"path": path, "packet": {"payload": "x"}}
    with httpx.Client(base_url=gateway.url, timeout=3.0, trust_env=False) as client:
        try:
            response = client.post("/api/write", json=body)
            ls_status = client.get("/api/ls").status_code
        except httpx.TransportError as exc:
            status = gateway.proc.poll()
            if status is None:
                gateway.proc.kill()  # Hung: no point in waiting for SIGTERM.
            pytest.fail(f"gateway crashed (exit status {status}) or hung: {exc!r}")
    assert response.status_code == 400
    assert ls_status == 200


def test_write_path_with_nul_is_rejected(http: httpx.Client, root: str) -> None:
    response = write(http, {"path": "f.a0\u0000x", "packet": PACKET})
    assert response.status_code == 400
    assert_nothing_written(root)


def test_write_path_with_lone_surrogate_is_400(http: httpx.Client, root: str) -> None:
    response = http.post(
        "/api/write", content=b'{"path": "\\ud800.a0", "packet": {"payload": "x"}}'
    )
    assert response.status_code == 400
    assert_nothing_written(root)
