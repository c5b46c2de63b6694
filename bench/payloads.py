"""Payloads and message shapes shared by the harness, its peers and the canned sender.

Every payload is ASCII text, so it is valid under ``response_encoding: "none"``
and needs no JSON escaping.
"""

from __future__ import annotations

import base64
import json

# The last packet of a pre-filled topic ends with this, so a client can tell
# the end of a drain by looking at the tail of one frame only.
END_TAIL = b"0123456789ENDEND"

# How many trailing characters of the last frame's payload are compared.
MARKER_LEN = 16

# Headers of the shape AlephZero adds to every published packet; the canned
# sender puts them in its frames so they are as long as the gateway's.
STANDARD_HEADERS = [
    ["a0_time_mono", "0000001801648465645"],
    ["a0_time_wall", "2026-01-01T00:00:00.000000000-00:00"],
    ["a0_transport_seq", "123456"],
    ["a0_writer_id", "E4AA5175-F74D-414B-8570-61B2205133B4"],
    ["a0_writer_seq", "123456"],
]

# Width of the monotonic-clock stamp at the start of a latency payload.
STAMP_DIGITS = 20


def text(size: int, fill: bytes = b"x") -> bytes:
    """`size` bytes of ASCII text."""
    return (fill * size)[:size]


def drain_payload(size: int, last: bool = False) -> bytes:
    """A payload of a pre-filled topic; the last one ends with END_TAIL."""
    if not last:
        return text(size, b"a")
    if size < len(END_TAIL):
        raise ValueError(f"payload size {size} is smaller than the end marker")
    return text(size - len(END_TAIL), b"a") + END_TAIL


def encoded(payload: bytes, encoding: str) -> bytes:
    """The payload as it appears inside the JSON string of a frame."""
    if encoding == "base64":
        return base64.b64encode(payload)
    # ASCII without quotes or backslashes: the JSON string is the text itself.
    return payload


def end_marker(size: int, encoding: str) -> bytes:
    """Bytes that end the payload string of the last packet of a drain."""
    return encoded(drain_payload(size, last=True), encoding)[-MARKER_LEN:]


def stamped(stamp_ns: int, size: int) -> bytes:
    """A latency payload: the zero-padded stamp, then padding to `size`."""
    head = b"%0*d" % (STAMP_DIGITS, stamp_ns)
    return head + text(max(0, size - len(head)), b".")


def packet_json(payload: bytes, encoding: str) -> bytes:
    """A packet as the gateway sends it on a stream (used by the canned sender)."""
    headers = json.dumps(STANDARD_HEADERS, separators=(",", ":")).encode()
    return (
        b'{"headers":' + headers + b',"payload":"' + encoded(payload, encoding) + b'"}'
    )


def pub_body(topic: str, payload: bytes) -> bytes:
    """The body of a POST /api/pub or /api/rpc request."""
    return json.dumps(
        {"topic": topic, "packet": {"payload": payload.decode("ascii")}},
        separators=(",", ":"),
    ).encode()
