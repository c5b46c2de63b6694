"""POST /api/pub: publishing on a pubsub topic."""

from __future__ import annotations

import json
import os
from collections import Counter

import httpx
import pytest
from helpers import (
    STANDARD_HEADERS,
    assert_nothing_written,
    b64,
    read_topic,
    user_headers,
)


def pub(http: httpx.Client, body: object) -> httpx.Response:
    return http.post("/api/pub", json=body)


def test_pub_replies_success_and_publishes_payload(http: httpx.Client) -> None:
    response = pub(http, {"topic": "foo", "packet": {"payload": "hello"}})
    assert response.status_code == 200
    assert response.text == "success"
    packets = read_topic("foo")
    assert [p.payload for p in packets] == [b"hello"]


def test_pub_adds_standard_headers_and_user_headers(http: httpx.Client) -> None:
    headers = [["aaa", "1"], ["bbb", "two"], ["aaa", "3"]]
    response = pub(
        http, {"topic": "foo", "packet": {"headers": headers, "payload": "x"}}
    )
    assert response.status_code == 200
    (packet,) = read_topic("foo")
    keys = Counter(k for k, _ in packet.headers)
    for key in STANDARD_HEADERS:
        assert keys[key] == 1, packet.headers
    assert user_headers(packet.headers) == Counter(
        [("aaa", "1"), ("bbb", "two"), ("aaa", "3")]
    )


def test_pub_without_headers_has_only_standard_headers(http: httpx.Client) -> None:
    assert pub(http, {"topic": "foo", "packet": {"payload": "x"}}).status_code == 200
    (packet,) = read_topic("foo")
    assert sorted(k for k, _ in packet.headers) == sorted(STANDARD_HEADERS)


def test_pub_topic_lives_in_pubsub_file(http: httpx.Client, root: str) -> None:
    assert (
        pub(http, {"topic": "aaa/bbb", "packet": {"payload": "x"}}).status_code == 200
    )
    assert os.path.isfile(os.path.join(root, "aaa", "bbb.pubsub.a0"))


def test_pub_transport_seq_counts_up(http: httpx.Client) -> None:
    for i in range(5):
        assert (
            pub(http, {"topic": "foo", "packet": {"payload": str(i)}}).status_code
            == 200
        )
    packets = read_topic("foo")
    assert [p.payload for p in packets] == [b"0", b"1", b"2", b"3", b"4"]
    assert [dict(p.headers)["a0_transport_seq"] for p in packets] == [
        "0",
        "1",
        "2",
        "3",
        "4",
    ]


def test_pub_payload_is_utf8_of_the_text(http: httpx.Client) -> None:
    text = 'h\u00e9llo \u2603 \U0001f600 "quoted" \\ \n\t\u0000end'
    assert pub(http, {"topic": "foo", "packet": {"payload": text}}).status_code == 200
    (packet,) = read_topic("foo")
    assert packet.payload == text.encode()


def test_pub_empty_payload(http: httpx.Client) -> None:
    assert pub(http, {"topic": "foo", "packet": {"payload": ""}}).status_code == 200
    (packet,) = read_topic("foo")
    assert packet.payload == b""


def test_pub_request_encoding_none_publishes_text_as_is(http: httpx.Client) -> None:
    body = {
        "topic": "foo",
        "packet": {"payload": "aGVsbG8="},
        "request_encoding": "none",
    }
    assert pub(http, body).status_code == 200
    (packet,) = read_topic("foo")
    assert packet.payload == b"aGVsbG8="


def test_pub_request_encoding_base64_publishes_random_bytes(http: httpx.Client) -> None:
    data = os.urandom(4096) + bytes(range(256))
    body = {
        "topic": "foo",
        "packet": {"payload": b64(data)},
        "request_encoding": "base64",
    }
    response = pub(http, body)
    assert response.status_code == 200, response.text
    (packet,) = read_topic("foo")
    assert packet.payload == data


def test_pub_base64_leaves_headers_as_text(http: httpx.Client) -> None:
    body = {
        "topic": "foo",
        "packet": {"headers": [["k", "aGVsbG8="]], "payload": b64(b"\x00\xff")},
        "request_encoding": "base64",
    }
    assert pub(http, body).status_code == 200
    (packet,) = read_topic("foo")
    assert packet.payload == b"\x00\xff"
    assert user_headers(packet.headers) == Counter([("k", "aGVsbG8=")])


def test_pub_one_mib_payload(http: httpx.Client) -> None:
    text = "0123456789abcdef" * (1024 * 1024 // 16)
    assert pub(http, {"topic": "big", "packet": {"payload": text}}).status_code == 200
    (packet,) = read_topic("big")
    assert packet.payload == text.encode()


def test_pub_accepts_json_without_content_type(http: httpx.Client) -> None:
    body = json.dumps({"topic": "foo", "packet": {"payload": "x"}})
    response = http.post("/api/pub", content=body)
    assert response.status_code == 200
    assert [p.payload for p in read_topic("foo")] == [b"x"]


# --- Errors --------------------------------------------------------------------

PACKET = {"payload": "x"}

ERRORS = [
    pytest.param(b"not json", "Request must be json.", id="not-json"),
    pytest.param(b"", "Request must be json.", id="empty-body"),
    pytest.param(b'{"topic": "foo", ', "Request must be json.", id="truncated-json"),
    pytest.param(b'[{"topic": "foo"}]', "Request must be a json object.", id="array"),
    pytest.param(b'"foo"', "Request must be a json object.", id="string"),
    pytest.param(b"12", "Request must be a json object.", id="number"),
    pytest.param(
        {"packet": PACKET}, "Request missing required field: topic", id="missing-topic"
    ),
    pytest.param(
        {"topic": "foo", "packet": {"headers": []}},
        "Request missing required field: /packet/payload",
        id="missing-payload",
    ),
    pytest.param(
        {"topic": "foo"},
        "Request missing required field: /packet/payload",
        id="missing-packet",
    ),
    pytest.param(
        {"topic": "foo", "packet": PACKET, "request_encoding": "foo"},
        "Request has unknown value for field: request_encoding  value: foo",
        id="unknown-request-encoding",
    ),
    pytest.param(
        {"topic": "/", "packet": PACKET}, "Invalid topic name", id="invalid-topic"
    ),
    pytest.param(
        {"topic": 12, "packet": PACKET},
        "Request field has incorrect format. field: topic  error: type must be string,"
        " but is number",
        id="topic-number",
    ),
    pytest.param(
        {"topic": None, "packet": PACKET},
        "Request field has incorrect format. field: topic  error: type must be string,"
        " but is null",
        id="topic-null",
    ),
]


@pytest.mark.parametrize("body, message", ERRORS)
def test_pub_rejects_bad_request(
    http: httpx.Client, root: str, body: object, message: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post("/api/pub", content=content)
    assert response.status_code == 400
    assert response.text == message
    assert response.headers["content-type"].startswith("text/plain")
    assert_nothing_written(root)


def test_pub_rejects_payload_of_wrong_type(http: httpx.Client, root: str) -> None:
    response = pub(http, {"topic": "foo", "packet": {"payload": 5}})
    assert response.status_code == 400
    assert response.text.startswith(
        "Request field has incorrect format. field: /packet/payload"
    )
    assert_nothing_written(root)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("not base64!", id="bad-characters"),
        pytest.param("aGVsbG8", id="bad-length"),
        pytest.param("aGV=sbG8", id="padding-inside"),
        pytest.param("h\u00e9llo===", id="non-ascii"),
    ],
)
def test_pub_rejects_invalid_base64(
    http: httpx.Client, root: str, payload: str
) -> None:
    body = {
        "topic": "foo",
        "packet": {"payload": payload},
        "request_encoding": "base64",
    }
    response = pub(http, body)
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
        pytest.param("k: v", id="string"),
        pytest.param([["k"]], id="short-pair"),
        pytest.param([["k", "v", "w"]], id="long-pair"),
        pytest.param([["k", 1]], id="number-value"),
        pytest.param([[1, "v"]], id="number-key"),
        pytest.param([["k", None]], id="null-value"),
        pytest.param(["kv"], id="string-entry"),
        pytest.param([["a", "b"], {"k": "v"}], id="object-entry"),
    ],
)
def test_pub_rejects_malformed_headers(
    http: httpx.Client, root: str, headers: object
) -> None:
    response = pub(
        http, {"topic": "foo", "packet": {"headers": headers, "payload": "x"}}
    )
    assert response.status_code == 400
    assert "/packet/headers" in response.text
    assert_nothing_written(root)


@pytest.mark.parametrize(
    "body, field",
    [
        pytest.param(
            b'{"topic": "t", "packet": {"payload": "\\ud800"}}',
            "/packet/payload",
            id="payload",
        ),
        pytest.param(
            b'{"topic": "t", "packet": {"headers": [["k", "\\udc00"]],'
            b' "payload": "x"}}',
            "/packet/headers",
            id="header",
        ),
    ],
)
def test_pub_rejects_text_that_is_not_unicode(
    http: httpx.Client, root: str, body: bytes, field: str
) -> None:
    response = http.post("/api/pub", content=body)
    assert response.status_code == 400
    assert response.text.startswith(
        f"Request field has incorrect format. field: {field}"
    ), response.text
    assert_nothing_written(root)


def test_pub_after_error_still_publishes(http: httpx.Client) -> None:
    assert pub(http, {"topic": "/", "packet": PACKET}).status_code == 400
    assert pub(http, {"topic": "foo", "packet": PACKET}).status_code == 200
    assert [p.payload for p in read_topic("foo")] == [b"x"]


# --- Names and numbers the gateway must refuse -----------------------------


def test_pub_topic_with_nul_is_rejected(http: httpx.Client, root: str) -> None:
    response = pub(http, {"topic": "t\u0000x", "packet": PACKET})
    assert response.status_code == 400
    assert_nothing_written(root)


def test_pub_topic_with_lone_surrogate_is_400(http: httpx.Client, root: str) -> None:
    response = http.post(
        "/api/pub", content=b'{"topic": "\\ud800", "packet": {"payload": "x"}}'
    )
    assert response.status_code == 400
    assert_nothing_written(root)
