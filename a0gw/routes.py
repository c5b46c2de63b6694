"""What each path of the API does.

REST routes take the request body and return a :class:`Response`; stream
routes take a parsed handshake and open a native stream.  Both raise
:class:`ClientError` for the client's mistakes.  Neither touches a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
from collections.abc import Awaitable, Iterator
from typing import Callable, Union

from a0gw import _native
from a0gw.bridge import Bridge
from a0gw.errors import (
    ClientError,
    InsufficientStorage,
    PayloadTooLarge,
    UpstreamTimeout,
)
from a0gw.request import (
    HEADERS_FIELD,
    ITER_OPTIONS,
    PAYLOAD_FIELD,
    SCHEDULER_OPTIONS,
    Packet,
    RequestMessage,
    StreamRequest,
    bad_format,
    parse_stream_request,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Response:
    """A complete HTTP response body and its type."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


SUCCESS = Response(200, b"success")

RestHandler = Callable[[Bridge, bytes], Union[Response, Awaitable[Response]]]
StreamOpener = Callable[[Bridge, RequestMessage], _native.Stream]


@contextlib.contextmanager
def native_errors() -> Iterator[None]:
    """Turns the native layer's complaints about a request into ClientError."""
    try:
        yield
    except _native.InvalidBase64 as exc:
        raise bad_format(PAYLOAD_FIELD, str(exc)) from None
    except _native.PacketTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    except _native.NoSpace as exc:
        # The operator's problem more than the client's: say it in the log.
        logger.warning("%s", exc)
        raise InsufficientStorage(str(exc)) from None
    except _native.AlephZeroError as exc:
        raise ClientError(str(exc)) from None


# REST routes


def publish(bridge: Bridge, body: bytes) -> Response:
    """POST /api/pub: publish one packet on a pubsub topic."""
    message = RequestMessage.parse(body)
    packet = message.packet()
    message.response_encoding()
    topic = message.required_name("topic")
    payload = _checked_payload(message, packet)
    bridge.policy.check_writable("publish")
    bridge.checked_topic("pubsub", topic)
    with native_errors():
        bridge.publishers.publish(topic, packet.headers, payload, packet.base64)
    return SUCCESS


def write(bridge: Bridge, body: bytes) -> Response:
    """POST /api/write: write one packet to an AlephZero file."""
    message = RequestMessage.parse(body)
    packet = message.packet()
    message.response_encoding()
    path = message.required_name("path")
    payload = _checked_payload(message, packet)
    standard_headers = message.boolean("standard_headers", False)
    bridge.policy.check_writable("write")
    path = bridge.checked_path(path)
    with native_errors():
        _native.write_file(
            path, packet.headers, payload, packet.base64, standard_headers
        )
    return SUCCESS


def ls(bridge: Bridge, body: bytes) -> Response:
    """GET /api/ls: every AlephZero file under the root, sorted."""
    # An explicit stack, not os.walk: a tree made by another process may be
    # deeper than Python's recursion limit.
    found = []
    folders = [bridge.root]
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.path)
            elif entry.name.endswith(".a0") and not entry.is_dir():
                found.append(os.path.relpath(entry.path, bridge.root))
    found.sort()
    body = json.dumps(found, separators=(",", ":")).encode()
    return Response(200, body, "application/json")


async def rpc(bridge: Bridge, body: bytes) -> Response:
    """POST /api/rpc: one request to an AlephZero RPC server, and its reply."""
    message = RequestMessage.parse(body)
    packet = message.packet()
    encoding = message.response_encoding()
    topic = message.required_name("topic")
    payload = _checked_payload(message, packet)
    timeout = _timeout(message, bridge.rpc_timeout)
    bridge.policy.check_writable("rpc")
    bridge.checked_topic("rpc", topic)
    with native_errors():
        stream, request_id = bridge.rpc_clients.call(
            bridge.hub,
            bridge.new_stream_id(),
            topic,
            packet.headers,
            payload,
            packet.base64,
            encoding,
        )

    reply = PendingReply(stream)
    bridge.listeners[stream.id] = reply
    try:
        data, close_code, reason = await asyncio.wait_for(reply.future, timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
        # No reply in time, or the client went away: the request is withdrawn
        # so the server's cancel callback runs and nothing stays pending.
        bridge.rpc_clients.cancel(topic, request_id)
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise UpstreamTimeout(
            f"No reply from the RPC server of topic {topic!r} within {timeout:g} s."
        ) from None
    finally:
        del bridge.listeners[stream.id]
        stream.close()
    if close_code:
        raise ClientError(reason)
    return Response(200, data, "application/json")


class PendingReply:
    """Completes a future when the one-shot stream of an RPC reply is ready."""

    def __init__(self, stream: _native.Stream) -> None:
        self.stream = stream
        self.future: asyncio.Future[tuple[bytes, int, str]] = (
            asyncio.get_running_loop().create_future()
        )

    def on_stream_ready(self) -> None:
        if not self.future.done():
            data, close_code, reason = self.stream.take()
            self.future.set_result((bytes(data), close_code, reason))


def _timeout(message: RequestMessage, default: float) -> float:
    present, value = message.lookup("timeout")
    if not present:
        return default
    error = bad_format("timeout", "must be a positive number of seconds")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error
    try:
        seconds = float(value)
    except OverflowError:
        raise error from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise error
    return seconds


def _checked_payload(
    message: RequestMessage, packet: Packet, required: bool = True
) -> bytes:
    """The payload as bytes for the native layer, which decodes base64 itself."""
    if required:
        message.require(PAYLOAD_FIELD)
    if packet.payload is None:
        return b""
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


def _options(
    bridge: Bridge, request: StreamRequest, every_packet: bool = True
) -> _native.StreamOptions:
    # `every_packet`: the reader sees every packet of its file, so a jump in
    # transport_seq under ITER_NEXT means packets were overwritten (a log
    # listener skips lower levels, so its jumps mean nothing).
    newest = request.iter == _native.ITER_NEWEST
    return bridge.stream_options(
        request.scheduler,
        request.encoding,
        request.seq_min,
        skips_to_newest=newest,
        report_gaps=every_packet and not newest,
    )


def subscribe(bridge: Bridge, message: RequestMessage) -> _native.Stream:
    """/wsapi/sub: stream the packets of a pubsub topic."""
    request = parse_stream_request(message, "topic")
    return _native.open_subscriber(
        bridge.hub,
        bridge.new_stream_id(),
        bridge.checked_topic("pubsub", request.name),
        request.init,
        request.iter,
        _options(bridge, request),
    )


def read(bridge: Bridge, message: RequestMessage) -> _native.Stream:
    """/wsapi/read: stream the packets of an AlephZero file."""
    request = parse_stream_request(message, "path")
    return _native.open_reader(
        bridge.hub,
        bridge.new_stream_id(),
        bridge.checked_path(request.name),
        request.init,
        request.iter,
        _options(bridge, request),
    )


LOG_LEVELS = {"CRIT": 0, "ERR": 1, "WARN": 2, "INFO": 3, "DBG": 4}


def log(bridge: Bridge, message: RequestMessage) -> _native.Stream:
    """/wsapi/log: stream an AlephZero log at or above a level."""
    request = parse_stream_request(message, "topic")
    level = message.option("level", LOG_LEVELS, LOG_LEVELS["INFO"])
    return _native.open_log_listener(
        bridge.hub,
        bridge.new_stream_id(),
        bridge.checked_topic("log", request.name),
        level,
        request.init,
        request.iter,
        _options(bridge, request, every_packet=False),
    )


def prpc(bridge: Bridge, message: RequestMessage) -> _native.Stream:
    """/wsapi/prpc: open a progressive RPC and stream its progress."""
    packet = message.packet()
    encoding = message.response_encoding()
    topic = message.required_name("topic")
    payload = _checked_payload(message, packet, required=False)
    iter_ = message.option("iter", ITER_OPTIONS, _native.ITER_NEXT)
    scheduler = message.option(
        "scheduler", SCHEDULER_OPTIONS, _native.SCHEDULER_ON_DRAIN
    )
    bridge.policy.check_writable("prpc")
    bridge.checked_topic("prpc", topic)
    return _native.open_prpc(
        bridge.hub,
        bridge.new_stream_id(),
        topic,
        packet.headers,
        payload,
        packet.base64,
        bridge.stream_options(
            scheduler, encoding, newest_only=iter_ == _native.ITER_NEWEST
        ),
    )


def discover(bridge: Bridge, message: RequestMessage) -> _native.Stream:
    """/wsapi/discover: announce AlephZero files of a protocol, now and later."""
    message.require("protocol")
    template = message.option("protocol", _native.topic_templates(), "")
    if not template:
        raise ClientError("Request has unknown value for field: protocol  value: ")
    topic = message.name("topic") or "**/*"
    if ".." in topic.split("/"):
        raise ClientError(f"Topic {topic!r} is outside the AlephZero root.")
    scheduler = message.option(
        "scheduler", SCHEDULER_OPTIONS, _native.SCHEDULER_ON_DRAIN
    )
    return _native.open_discovery(
        bridge.hub,
        bridge.new_stream_id(),
        bridge.root,
        template,
        topic,
        bridge.stream_options(scheduler, _native.ENCODING_NONE),
    )


REST_ROUTES: dict[str, tuple[str, RestHandler]] = {
    "/api/ls": ("GET", ls),
    "/api/pub": ("POST", publish),
    "/api/rpc": ("POST", rpc),
    "/api/write": ("POST", write),
}

STREAM_ROUTES: dict[str, StreamOpener] = {
    "/wsapi/discover": discover,
    "/wsapi/log": log,
    "/wsapi/prpc": prpc,
    "/wsapi/read": read,
    "/wsapi/sub": subscribe,
}
