"""A lean WebSocket client (RFC 6455) for measuring streams.

It does the opening handshake itself over a raw asyncio transport, sends the
JSON handshake, then parses the server's frames with as little work per frame
as possible: it counts messages and bytes, and only looks inside a frame when
asked to (the first message, the end marker, or every message for latency).
Frames larger than ``BIG_FRAME`` are skipped over without being buffered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import time
from typing import Callable

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

# Data frames at least this large are counted without being buffered.
BIG_FRAME = 64 * 1024
# How many trailing bytes of a skipped frame are kept (for the end marker).
TAIL = 64


def client_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final client frame; clients must mask (RFC 6455 §5.3)."""
    if mask is None:
        mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
        n, "big"
    )
    return head + mask + masked


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One final unmasked frame, as a server sends it."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


ACK_FRAME = client_frame(OP_TEXT, b"ACK", b"\x5a\x17\xc3\x08")


class WsClient(asyncio.Protocol):
    """One stream subscriber.

    Args:
        handshake: the JSON handshake, sent as the first text message.
        ack: send ``ACK`` after every message (the ON_ACK scheduler).
        marker: the client is done when a frame ends with these bytes
            (followed by at most a few closing characters).
        on_messages: called with the complete messages of each read and the
            monotonic time (ns) of that read; used for latency.
        deadline: a ``time.perf_counter()`` value after which the client is
            done (checked once per read).
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        handshake: bytes,
        *,
        ack: bool = False,
        marker: bytes | None = None,
        on_messages: Callable[[list, int], None] | None = None,
        deadline: float | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.host, self.port, self.path = host, port, path
        self.handshake = handshake
        self.ack = ack
        self.marker = marker
        self.on_messages = on_messages
        self.deadline = deadline
        self.transport: asyncio.Transport | None = None
        self.key = base64.b64encode(os.urandom(16))
        self.upgraded = False
        self.buf = bytearray()
        self.skip = 0  # bytes left of a big frame being skipped
        self.skip_fin = False
        self.tail = b""  # last bytes of the big frame being skipped
        self.messages = 0  # complete data messages received
        self.rx_bytes = 0  # bytes received after the upgrade
        self.first_message: bytes | None = None
        self.t_open = 0.0  # perf_counter when the handshake was sent
        self.t_first = 0.0  # perf_counter of the first message
        self.t_last = 0.0  # perf_counter of the latest message
        self.end_seen = False  # the marker arrived
        self.deadline_hit = False
        self.closed_by_us = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.error: str | None = None
        self.opened: asyncio.Future = loop.create_future()
        self.done: asyncio.Future = loop.create_future()
        self.lost: asyncio.Future = loop.create_future()

    # Connection

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str, handshake: bytes, **kw
    ) -> WsClient:
        """Connects, upgrades and sends the handshake."""
        loop = asyncio.get_running_loop()
        client = cls(host, port, path, handshake, **kw)
        await loop.create_connection(lambda: client, host, port)
        await client.opened
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = (
            b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
            % (self.path.encode(), self.host.encode(), self.port, self.key)
        )
        self.transport.write(request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(
                ConnectionError(f"connection lost during upgrade: {exc}")
            )
        if (
            self.error is None
            and self.close_code is None
            and not self.done.done()
            and not self.closed_by_us
        ):
            self.error = (
                f"connection lost: {exc}" if exc else "connection closed by server"
            )
        self._finish()
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> None:
        self.closed_by_us = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def pause(self) -> None:
        """Stops reading: the socket buffers fill and the sender must hold back."""
        assert self.transport is not None
        self.transport.pause_reading()

    def resume(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def send_text(self, text: bytes) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(OP_TEXT, text))

    # Receiving

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            rest = bytes(self.buf[end + 4 :])
            self.buf = bytearray()
            if not self._check_upgrade(head):
                return
            self.upgraded = True
            self.t_open = time.perf_counter()
            assert self.transport is not None
            self.transport.write(client_frame(OP_TEXT, self.handshake))
            self.opened.set_result(None)
            if not rest:
                return
            data = rest
        self._frames(data)

    def _check_upgrade(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        ok = len(status) >= 2 and status[1] == b"101"
        accept = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-accept":
                accept = value.strip()
        if not ok or accept != accept_key(self.key):
            self.error = f"upgrade refused: {lines[0].decode('latin-1')}"
            self.opened.set_exception(ConnectionError(self.error))
            self.close()
            return False
        return True

    def _frames(self, data: bytes) -> None:
        now = time.perf_counter()
        n = len(data)
        self.rx_bytes += n
        count = 0
        last_tail = b""
        i = 0
        if self.skip:
            k = self.skip
            if n < k:
                self.skip = k - n
                self.tail = (self.tail + data)[-TAIL:] if n < TAIL else data[-TAIL:]
                return
            part = data[max(0, k - TAIL) : k]
            self.tail = (self.tail + part)[-TAIL:] if k < TAIL else part
            self.skip = 0
            if self.skip_fin:
                count = 1
                last_tail = self.tail
            i = k

        # Parse in place through a memoryview: slices of it copy nothing.
        if self.buf:
            self.buf += memoryview(data)[i:]
            src = self.buf
            i = 0
        else:
            src = data
        mv = memoryview(src)
        n = len(mv)
        msgs = [] if self.on_messages is not None else None
        while n - i >= 2:
            b0 = mv[i]
            ln = mv[i + 1] & 0x7F
            if ln < 126:
                h = 2
            elif ln == 126:
                if n - i < 4:
                    break
                ln = (mv[i + 2] << 8) | mv[i + 3]
                h = 4
            else:
                if n - i < 10:
                    break
                ln = int.from_bytes(mv[i + 2 : i + 10], "big")
                h = 10
            end = i + h + ln
            op = b0 & 0x0F
            if end > n:
                if ln >= BIG_FRAME and op <= OP_BINARY and msgs is None:
                    # Count it without buffering it.
                    self.skip = end - n
                    self.skip_fin = bool(b0 & 0x80)
                    self.tail = bytes(mv[max(i + h, n - TAIL) : n])
                    i = n
                break
            if op <= OP_BINARY:
                if b0 & 0x80:
                    count += 1
                    last_tail = mv[max(i + h, end - TAIL) : end]
                    if self.first_message is None:
                        self.first_message = bytes(mv[i + h : end])
                    if msgs is not None:
                        msgs.append(bytes(mv[i + h : end]))
            else:
                self._control(op, bytes(mv[i + h : end]))
            i = end
        if last_tail and not isinstance(last_tail, bytes):
            last_tail = bytes(last_tail)
        leftover = bytes(mv[i:]) if i < n else b""
        mv.release()
        if src is self.buf:
            if leftover:
                del self.buf[:i]
            else:
                self.buf = bytearray()
        elif leftover:
            self.buf = bytearray(leftover)

        if count:
            if not self.messages:
                self.t_first = now
            self.messages += count
            self.t_last = now
            if self.ack and self.transport is not None:
                self.transport.write(ACK_FRAME * count)
            if msgs:
                assert self.on_messages is not None
                self.on_messages(msgs, time.monotonic_ns())
            if (
                self.marker is not None
                and self.marker in last_tail[-(len(self.marker) + 8) :]
            ):
                self.end_seen = True
                self._finish()
        if self.deadline is not None and now >= self.deadline:
            self.deadline_hit = True
            self._finish()

    def _control(self, op: int, payload: bytes) -> None:
        if op == OP_CLOSE:
            self.close_code = (
                int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            )
            self.close_reason = payload[2:].decode("utf-8", "replace")
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(client_frame(OP_CLOSE, payload[:2]))
                self.transport.close()
            self._finish()
        elif op == OP_PING and self.transport is not None:
            self.transport.write(client_frame(OP_PONG, payload))

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
