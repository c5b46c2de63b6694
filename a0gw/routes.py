"""What each path of the API does.

REST routes take the request body and return a :class:`Response`; stream
routes take a parsed handshake and open a native stream.  Both raise
:class:`ClientError` for the client's mistakes.  Neither touches a socket.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

from a0gw import _native
from a0gw.bridge import Bridge
from a0gw.errors import ClientError
from a0gw.request import (
    HEADERS_FIELD,
    PAYLOAD_FIELD,
    Packet,
    RequestMessage,
    bad_format,
    parse_stream_request,
)


@dataclasses.dataclass
class Response:
    """A complete HTTP response body and its type."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


SUCCESS = Response(200, b"success")

RestHandler = Callable[[Bridge, bytes], Response]
StreamOpener = Callable[[Bridge, RequestMessage], _native.Stream]


# REST routes


def publish(bridge: Bridge, body: bytes) -> Response:
    """POST /api/pub: publish one packet on a pubsub topic."""
    message = RequestMessage.parse(body)
    packet = message.packet()
    message.response_encoding()
    topic = message.required_string("topic")
    payload = _checked_payload(message, packet)
    try:
        bridge.publishers.publish(topic, packet.headers, payload, packet.base64)
    except _native.InvalidBase64 as exc:
        raise bad_format(PAYLOAD_FIELD, str(exc)) from None
    except _native.AlephZeroError as exc:
        raise ClientError(str(exc)) from None
    return SUCCESS


def write(bridge: Bridge, body: bytes) -> Response:
    """POST /api/write: write one packet to an AlephZero file."""
    message = RequestMessage.parse(body)
    packet = message.packet()
    message.response_encoding()
    path = message.required_string("path")
    payload = _checked_payload(message, packet)
    standard_headers = message.boolean("standard_headers", False)
    try:
        _native.write_file(path, packet.headers, payload, packet.base64, standard_headers)
    except _native.InvalidBase64 as exc:
        raise bad_format(PAYLOAD_FIELD, str(exc)) from None
    except _native.AlephZeroError as exc:
        raise ClientError(str(exc)) from None
    return SUCCESS


def ls(bridge: Bridge, body: bytes) -> Response:
    """GET /api/ls: every AlephZero file under the root, sorted."""
    found = []
    for folder, _, files in os.walk(bridge.root):
        for name in files:
            if name.endswith(".a0"):
                found.append(os.path.relpath(os.path.join(folder, name), bridge.root))
    found.sort()
    body = json.dumps(found, separators=(",", ":")).encode()
    return Response(200, body, "application/json")


def _checked_payload(message: RequestMessage, packet: Packet) -> bytes:
    """The payload as bytes for the native layer, which decodes base64 itself."""
    message.require(PAYLOAD_FIELD)
    assert packet.payload is not None
    try:
        for key, value in packet.headers:
            key.encode()
            value.encode()
    except UnicodeEncodeError:
        raise bad_format(HEADERS_FIELD, "headers must be valid unicode") from None
    try:
        return packet.payload.encode("ascii" if packet.base64 else "utf-8")
    except UnicodeEncodeError as exc:
        if packet.base64:
            raise bad_format(
                PAYLOAD_FIELD, f"not valid base64 at character {exc.start}"
            ) from None
        raise bad_format(PAYLOAD_FIELD, "payload must be valid unicode") from None


# Stream routes


def subscribe(bridge: Bridge, message: RequestMessage) -> _native.Stream:
    """/wsapi/sub: stream the packets of a pubsub topic."""
    request = parse_stream_request(message, "topic")
    return _native.open_subscriber(
        bridge.hub,
        bridge.new_stream_id(),
        request.name,
        request.init,
        request.iter,
        scheduler=request.scheduler,
        encoding=request.encoding,
        seq_min=request.seq_min,
        drain_bytes=bridge.limits.drain_bytes,
        immediate_bytes=bridge.limits.immediate_bytes,
    )


def read(bridge: Bridge, message: RequestMessage) -> _native.Stream:
    """/wsapi/read: stream the packets of an AlephZero file."""
    request = parse_stream_request(message, "path")
    return _native.open_reader(
        bridge.hub,
        bridge.new_stream_id(),
        request.name,
        request.init,
        request.iter,
        scheduler=request.scheduler,
        encoding=request.encoding,
        seq_min=request.seq_min,
        drain_bytes=bridge.limits.drain_bytes,
        immediate_bytes=bridge.limits.immediate_bytes,
    )


REST_ROUTES: dict[str, tuple[str, RestHandler]] = {
    "/api/ls": ("GET", ls),
    "/api/pub": ("POST", publish),
    "/api/write": ("POST", write),
}

STREAM_ROUTES: dict[str, StreamOpener] = {
    "/wsapi/read": read,
    "/wsapi/sub": subscribe,
}
