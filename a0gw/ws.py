"""WebSocket connections, framed by the sans-I/O layer of `websockets`.

A connection starts with the opening handshake (RFC 6455 §4) done by
``websockets``; its first text message is the JSON handshake that opens a
native stream.  From then on the stream's frames, already built as complete
WebSocket frames in C++, are written to the transport as they come, as fast as
the socket drains: while the transport is paused the stream's queue fills and
its scheduler holds the AlephZero reader back.

While the connection is idle (nothing buffered, nothing queued) the stream is
in direct mode: its AlephZero thread sends each frame to the socket itself, so
a live packet reaches the client without waking the event loop.  The loop ends
direct mode (``Stream.hold``) before it writes anything of its own, after the
rest of a frame the thread sent in part, and the next ``Stream.flush`` on an
idle connection starts it again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from a0gw import _native
from a0gw.errors import ClientError, PayloadTooLarge, RequestFailed
from a0gw.request import RequestMessage
from a0gw.routes import native_errors

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
        # Fragments of a message still being received, and its opcode.
        self.fragments: list[bytes] = []
        self.fragment_opcode = Opcode.TEXT
        # The transport asked us to stop writing (its buffer is full).
        self.paused = False
        # We sent a close frame: no more data frames may follow it.
        self.closing = False
        # Drops the connection when the closing handshake stalls.
        self.close_timer: asyncio.TimerHandle | None = None
        # Ends the connection if the JSON handshake does not come in time.
        self.handshake_timer: asyncio.TimerHandle | None = None
        # Keepalive: the next ping, or the deadline of the pong awaited.
        self.ping_timer: asyncio.TimerHandle | None = None

    # Public methods

    def accept(
        self,
        transport: asyncio.Transport,
        request: Request,
        trailing: bytes,
        cors: bytes | None,
    ) -> None:
        """Completes the opening handshake on `transport`, then serves it.

        `cors` is the Access-Control-Allow-Origin to answer with, if any.
        """
        self.transport = transport
        # websockets checks the upgrade request and computes the response.
        response = ServerProtocol(logger=protocol_logger).accept(request)
        response.headers["Server"] = "a0gw"
        if cors is not None:
            response.headers["Access-Control-Allow-Origin"] = cors.decode("latin-1")
        transport.set_protocol(self)
        transport.write(response.serialize())
        if response.status_code != 101:
            logger.warning(
                "WebSocket upgrade refused on %s: %d", self.path, response.status_code
            )
            transport.close()
            return
        limits = self.gateway.config
        transport.set_write_buffer_limits(
            high=limits.socket_high_water, low=limits.socket_high_water // 4
        )
        self.gateway.ws_connections.add(self)
        loop = asyncio.get_running_loop()
        self.handshake_timer = loop.call_later(
            self.gateway.config.handshake_timeout, self._on_handshake_timeout
        )
        self._schedule_ping()
        self._flush()
        if trailing:
            self.data_received(trailing)

    def on_stream_ready(self) -> None:
        """Called by the gateway when the stream has frames; sends them."""
        if self.paused or self.closing or self.stream is None or self.transport is None:
            return
        idle = self.transport.get_write_buffer_size() == 0
        data, close_code, close_reason = self.stream.flush(idle)
        if data:
            self.transport.write(data)
        if close_code:
            logger.warning("Closing stream on %s: %s", self.path, close_reason)
            self.close(close_code, close_reason)

    def close(self, code: int, reason: str) -> None:
        """Starts the closing handshake (RFC 6455 §7.1.2) and stops the stream."""
        self._hold_stream()
        self._stop_stream()
        if self.closing or self.transport is None:
            return
        self.closing = True
        try:
            self.protocol.send_close(code, _truncate_reason(reason))
        except InvalidState:
            pass
        self._flush()

    def abort(self) -> None:
        """Drops the connection at once."""
        if self.transport is not None:
            self.transport.abort()

    # Transport callbacks

    def connection_lost(self, exc: Exception | None) -> None:
        self.gateway.ws_connections.discard(self)
        for timer in (self.close_timer, self.handshake_timer, self.ping_timer):
            if timer is not None:
                timer.cancel()
        self._stop_stream()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.on_stream_ready()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for frame in self.protocol.events_received():
            # After the opening handshake the protocol only yields frames.
            assert isinstance(frame, Frame)
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self._receive_fragment(frame.opcode, bytes(frame.data), frame.fin)
            elif frame.opcode is Opcode.PONG:
                self._schedule_ping()
        self._log_too_large_close()
        self._flush()

    def _log_too_large_close(self) -> None:
        """Says which side's size limit a 1009 close came from."""
        sent = self.protocol.close_sent
        if sent is None or sent.code != PayloadTooLarge.close_code or self.closing:
            return
        if self.protocol.close_rcvd_then_sent:
            # The client's own limit: the gateway only echoes its close.
            logger.info(
                "Client closed %s (1009): a message was larger than it accepts",
                self.path,
            )
        else:
            limit = self.gateway.config.max_message_bytes
            logger.warning("WebSocket message over %d bytes on %s", limit, self.path)

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
        with native_errors():
            stream = self.opener(self.gateway.bridge, request)
        self.stream = stream
        self.gateway.bridge.listeners[stream.id] = self
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            stream.attach_socket(sock.fileno())
        logger.debug("Stream %d opened on %s", stream.id, self.path)
        # Send what came during the handshake, and start direct mode.
        self.on_stream_ready()

    # Timers

    def _on_handshake_timeout(self) -> None:
        self.handshake_timer = None
        if self.stream is None and not self.closing:
            timeout = self.gateway.config.handshake_timeout
            logger.warning(
                "No handshake within %g s on %s; closing", timeout, self.path
            )
            self.close(
                CLOSE_BAD_REQUEST, f"Handshake not received within {timeout:g} s."
            )

    def _schedule_ping(self) -> None:
        if self.ping_timer is not None:
            self.ping_timer.cancel()
        loop = asyncio.get_running_loop()
        self.ping_timer = loop.call_later(
            self.gateway.config.ping_interval, self._send_ping
        )

    def _send_ping(self) -> None:
        if self.closing or self.transport is None:
            return
        try:
            self.protocol.send_ping(b"a0gw")
        except InvalidState:
            return
        self._flush()
        loop = asyncio.get_running_loop()
        self.ping_timer = loop.call_later(
            self.gateway.config.ping_timeout, self._on_pong_timeout
        )

    def _on_pong_timeout(self) -> None:
        # The peer vanished without a close (cable pulled, laptop asleep):
        # drop it so its AlephZero reader is freed.
        self.ping_timer = None
        logger.warning(
            "No pong within %g s on %s; dropping the connection",
            self.gateway.config.ping_timeout,
            self.path,
        )
        if self.transport is not None:
            self.transport.abort()

    # Private methods

    def _stop_stream(self) -> None:
        stream = self.stream
        if stream is None:
            return
        self.gateway.bridge.listeners.pop(stream.id, None)
        stream.close()

    def _hold_stream(self) -> None:
        """Stops the stream's thread sending, before the loop writes itself."""
        if self.stream is None or self.transport is None or self.transport.is_closing():
            return
        # A frame the socket has part of must end before any other frame.
        rest = self.stream.hold()
        if rest:
            self.transport.write(rest)

    def _flush(self) -> None:
        """Writes what the protocol has to send; closes the socket when it says."""
        assert self.transport is not None
        outgoing = self.protocol.data_to_send()
        if outgoing:
            self._hold_stream()
        for data in outgoing:
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
