"""A trivial local sender, to measure the harness's own ceiling.

``python -m bench.canned --port P`` serves on one port, in its own process
(like the gateway), on uvloop:

* any HTTP request gets a canned ``200 success`` response (a canned packet for
  paths starting with ``/api/rpc``), with keep-alive;
* a WebSocket upgrade is accepted; the first text message is a JSON
  handshake whose ``bench_count``, ``bench_size`` and ``response_encoding``
  say what to send: ``bench_count`` pre-built frames shaped like the gateway's
  (the last one ending with the drain end marker), as fast as the socket
  takes them, or one per ``ACK`` when ``scheduler`` is ``ON_ACK``.

It does no other work, so what the harness measures against it is what the
harness itself can do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from bench import payloads
from bench.wsclient import OP_CLOSE, OP_TEXT, accept_key, server_frame

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nserver: canned\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 7\r\naccess-control-allow-origin: *\r\n\r\nsuccess"
)
_RPC_BODY = payloads.packet_json(payloads.text(64), "none")
RPC_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nserver: canned\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\naccess-control-allow-origin: *\r\n\r\n" % len(_RPC_BODY)
) + _RPC_BODY

# Bytes of frames written per transport.write() call.
BLOB_BYTES = 256 * 1024


class Canned(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.body_left = 0
        self.ws = False
        self.handshake_done = False
        self.paused = False
        self.ack_mode = False
        self.left = 0
        self.sent_last = True
        self.frame = b""
        self.last = b""
        self.blob = b""
        self.per_blob = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if not self.ack_mode:
            self._pump()

    def data_received(self, data: bytes) -> None:
        if self.ws:
            self._ws_data(data)
            return
        assert self.transport is not None
        buf = self.buf + data if self.buf else data
        pos = 0
        out = []
        while True:
            if self.body_left:
                avail = len(buf) - pos
                if avail < self.body_left:
                    self.body_left -= avail
                    pos = len(buf)
                    break
                pos += self.body_left
                self.body_left = 0
                continue
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            raw = buf[pos:end]
            head = raw.lower()
            pos = end + 4
            if b"\r\nupgrade: websocket" in head:
                self._upgrade(raw, buf[pos:])
                return
            out.append(RPC_RESPONSE if head.startswith(b"post /api/rpc") else RESPONSE)
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                self.body_left = int(head[at + 17 : stop if stop >= 0 else len(head)])
        self.buf = buf[pos:]
        if out:
            self.transport.write(b"".join(out))

    # WebSocket

    def _upgrade(self, head: bytes, rest: bytes) -> None:
        assert self.transport is not None
        key = b""
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept_key(key)
        )
        self.ws = True
        self.buf = b""
        if rest:
            self._ws_data(rest)

    def _ws_data(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        n = len(buf)
        i = 0
        acks = 0
        while n - i >= 2:
            b0, b1 = buf[i], buf[i + 1]
            ln = b1 & 0x7F
            h = 2
            if ln == 126:
                if n - i < 4:
                    break
                ln = int.from_bytes(buf[i + 2 : i + 4], "big")
                h = 4
            elif ln == 127:
                if n - i < 10:
                    break
                ln = int.from_bytes(buf[i + 2 : i + 10], "big")
                h = 10
            if b1 & 0x80:
                h += 4
            end = i + h + ln
            if end > n:
                break
            op = b0 & 0x0F
            if op == OP_TEXT:
                if self.handshake_done:
                    acks += 1
                else:
                    mask = buf[i + h - 4 : i + h] if b1 & 0x80 else b"\0\0\0\0"
                    payload = bytes(
                        b ^ mask[j % 4] for j, b in enumerate(buf[i + h : end])
                    )
                    self._start(json.loads(payload))
            elif op == OP_CLOSE:
                assert self.transport is not None
                self.transport.write(server_frame(OP_CLOSE, b"\x03\xe8"))
                self.transport.close()
                return
            i = end
        self.buf = buf[i:]
        if acks and self.ack_mode:
            self._send_acked(acks)

    def _start(self, handshake: dict) -> None:
        self.handshake_done = True
        count = int(handshake.get("bench_count", 1))
        size = int(handshake.get("bench_size", 64))
        encoding = handshake.get("response_encoding", "none")
        self.ack_mode = handshake.get("scheduler") == "ON_ACK"
        self.frame = server_frame(
            OP_TEXT, payloads.packet_json(payloads.drain_payload(size), encoding)
        )
        self.last = server_frame(
            OP_TEXT,
            payloads.packet_json(payloads.drain_payload(size, last=True), encoding),
        )
        self.per_blob = max(1, BLOB_BYTES // len(self.frame))
        self.blob = self.frame * self.per_blob
        self.left = count - 1
        self.sent_last = False
        if self.ack_mode:
            self._send_acked(1)
        else:
            self._pump()

    def _pump(self) -> None:
        assert self.transport is not None
        while not self.paused and self.left > 0 and not self.transport.is_closing():
            k = min(self.left, self.per_blob)
            self.transport.write(self.blob if k == self.per_blob else self.frame * k)
            self.left -= k
        if self.left <= 0 and not self.sent_last and not self.paused:
            self.sent_last = True
            self.transport.write(self.last)

    def _send_acked(self, credit: int) -> None:
        assert self.transport is not None
        while credit and not self.sent_last:
            credit -= 1
            if self.left > 0:
                self.left -= 1
                self.transport.write(self.frame)
            else:
                self.sent_last = True
                self.transport.write(self.last)


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Canned, host, port)
    bound = server.sockets[0].getsockname()[1]
    print(f"PORT {bound}", flush=True)
    # Serve until stdin closes (the harness exits or closes the pipe).
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    await reader.read()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.canned")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(_serve(args.host, args.port))
    except ImportError:
        asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
