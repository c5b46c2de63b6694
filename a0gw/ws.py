"""WebSocket connections, framed by the sans-I/O layer of `websockets`.

A connection starts with the opening handshake (RFC 6455 §4) done by
``websockets``; its first text message is the JSON handshake that opens a
native stream.  From then on the stream's frames, already built as complete
WebSocket frames in C++, are written to the transport as they come, as fast as
the socket drains: while the transport is paused the stream's queue fills and
its scheduler holds the AlephZero reader back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from websockets.exceptions import InvalidState
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from a0gw import _native
from a0gw.errors import ClientError, PayloadTooLarge, RequestFailed
from a0gw.request import RequestMessage

if TYPE_CHECKING:
    from a0gw.routes import StreamOpener
    from a0gw.server import Gateway

logger = logging.getLogger("a0gw.ws")
# websockets' own messages: frames at DEBUG, each connection at INFO.
protocol_logger = logging.getLogger("a0gw.ws.protocol")

# Close codes (RFC 6455 §7.4.1), and the reference bridge's code for bad requests.
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011
CLOSE_BAD_REQUEST = 4000

# A close reason must fit in a control frame (RFC 6455 §5.5).
MAX_CLOSE_REASON = 123

# Seconds to wait for the client's close frame before dropping the connection.
CLOSE_TIMEOUT = 5.0

HANDSHAKE_TWICE = "Handshake only allowed once per websocket."


def _truncate_reason(reason: str) -> str:
    data = reason.encode()
    if len(data) <= MAX_CLOSE_REASON:
        return reason
    return data[:MAX_CLOSE_REASON].decode("utf-8", "ignore")


class WebSocketConnection(asyncio.Protocol):
    """One WebSocket client of a stream route."""

    def __init__(self, gateway: Gateway, opener: StreamOpener, path: str) -> None:
        self.gateway = gateway
        self.opener = opener
        self.path = path
        self.transport: asyncio.Transport | None = None
        # Frames after the opening handshake.  h11 already parsed the HTTP
        # request, so this protocol starts in the OPEN state.
        self.protocol = ServerProtocol(
            state=State.OPEN,
            max_size=gateway.config.max_message_bytes,
            logger=protocol_logger,
        )
        # The native stream, once the handshake opened it.
        self.stream: _native.Stream | None = None
        # Fragments of a text message still being received.
        self.fragments: list[bytes] = []
        # The transport asked us to stop writing (its buffer is full).
        self.paused = False
        # We sent a close frame: no more data frames may follow it.
        self.closing = False
        self.close_timer: asyncio.TimerHandle | None = None

    # Public methods

    def accept(self, transport: asyncio.Transport, request: Request, trailing: bytes) -> None:
        """Completes the opening handshake on `transport`, then serves it."""
        self.transport = transport
        # websockets checks the upgrade request and computes the response.
        response = ServerProtocol(logger=protocol_logger).accept(request)
        transport.set_protocol(self)
        transport.write(response.serialize())
        if response.status_code != 101:
            logger.warning("WebSocket upgrade refused on %s: %d", self.path, response.status_code)
            transport.close()
            return
        limits = self.gateway.config
        transport.set_write_buffer_limits(
            high=limits.socket_high_water, low=limits.socket_high_water // 4
        )
        self.gateway.ws_connections.add(self)
        self._flush()
        if trailing:
            self.data_received(trailing)

    def on_stream_ready(self) -> None:
        """Called by the gateway when the stream has frames; sends them."""
        if self.paused or self.closing or self.stream is None or self.transport is None:
            return
        data, close_code, close_reason = self.stream.take()
        if data:
            self.transport.write(data)
        if close_code:
            logger.warning("Closing stream on %s: %s", self.path, close_reason)
            self.close(close_code, close_reason)

    def close(self, code: int, reason: str) -> None:
        """Starts the closing handshake (RFC 6455 §7.1.2) and stops the stream."""
        self._stop_stream()
        if self.closing or self.transport is None:
            return
        self.closing = True
        try:
            self.protocol.send_close(code, _truncate_reason(reason))
        except InvalidState:
            pass
        self._flush()

    # Transport callbacks

    def connection_lost(self, exc: Exception | None) -> None:
        self.gateway.ws_connections.discard(self)
        if self.close_timer is not None:
            self.close_timer.cancel()
        self._stop_stream()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.on_stream_ready()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for frame in self.protocol.events_received():
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self._receive_fragment(frame.opcode, frame.data, frame.fin)
        if self.protocol.close_code == PayloadTooLarge.close_code and not self.closing:
            limit = self.gateway.config.max_message_bytes
            logger.warning("WebSocket message over %d bytes on %s", limit, self.path)
        self._flush()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    # Messages

    def _receive_fragment(self, opcode: Opcode, data: bytes, fin: bool) -> None:
        if opcode is not Opcode.CONT:
            self.fragments = []
            self.fragment_opcode = opcode
        self.fragments.append(data)
        if not fin:
            return
        message = b"".join(self.fragments)
        self.fragments = []
        if self.closing:
            return
        if self.fragment_opcode is not Opcode.TEXT:
            self.close(CLOSE_BAD_REQUEST, "Messages must be text.")
            return
        try:
            self._receive_message(message)
        except RequestFailed as exc:
            logger.warning("Bad handshake on %s: %s", self.path, exc.reason)
            self.close(exc.close_code, exc.reason)
        except Exception:
            logger.exception("Unexpected error on %s", self.path)
            self.close(CLOSE_INTERNAL_ERROR, "Internal server error")

    def _receive_message(self, message: bytes) -> None:
        if self.stream is None:
            self._open_stream(message)
        elif message == b"ACK":
            self.stream.ack()
        else:
            raise ClientError(HANDSHAKE_TWICE)

    def _open_stream(self, message: bytes) -> None:
        request = RequestMessage.parse(message)
        try:
            stream = self.opener(self.gateway.bridge, request)
        except _native.AlephZeroError as exc:
            raise ClientError(str(exc)) from None
        self.stream = stream
        self.gateway.bridge.listeners[stream.id] = self
        logger.debug("Stream %d opened on %s", stream.id, self.path)

    # Private methods

    def _stop_stream(self) -> None:
        stream = self.stream
        if stream is None:
            return
        self.gateway.bridge.listeners.pop(stream.id, None)
        stream.close()

    def _flush(self) -> None:
        """Writes what the protocol has to send; closes the socket when it says."""
        assert self.transport is not None
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            else:
                # The protocol wants the TCP connection closed (RFC 6455 §7.1.1).
                self.transport.close()
                return
        if self.protocol.close_expected() and self.close_timer is None:
            # The closing handshake started; give the client a moment to finish
            # it (RFC 6455 §7.1.1), then drop the connection.
            self._stop_stream()
            self.closing = True
            loop = asyncio.get_running_loop()
            self.close_timer = loop.call_later(CLOSE_TIMEOUT, self.transport.abort)
