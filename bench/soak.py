"""Soak test: many connections and requests, then check that nothing leaked.

Starts a gateway on a temporary AlephZero root, notes its open file
descriptors, threads and resident anonymous memory, then runs 10,000 WebSocket cycles
(connect, handshake on a topic that gets a packet, receive it, disconnect) and
100,000 REST requests (publishes, both paths, errors, ls, writes).  Afterwards
descriptors and threads must be back to where they started and memory within
a small margin.  Prints a report and exits non-zero on a leak.

    python bench/soak.py [--ws-cycles N] [--rest-requests N]

Not part of the test suite: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

# Resident memory may grow this much (allocator caches, interned strings).
RSS_MARGIN = 16 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_stats(pid: int) -> dict[str, int]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    # Anonymous memory only: the mapped topic files are shared memory that
    # fills as topics are written (up to their size), not the gateway's own.
    rss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                rss = int(line.split()[1]) * 1024
    return {"fds": fds, "threads": threads, "rss": rss}


def settle(pid: int, baseline: dict[str, int], seconds: float = 10.0) -> dict[str, int]:
    """Waits for descriptors and threads to return to the baseline."""
    deadline = time.monotonic() + seconds
    stats = process_stats(pid)
    while time.monotonic() < deadline:
        stats = process_stats(pid)
        if stats["fds"] <= baseline["fds"] and stats["threads"] <= baseline["threads"]:
            break
        time.sleep(0.2)
    return stats


class RawWebSocket:
    """A minimal client: enough to handshake and read one text frame."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head[:80]!r}")

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        return chunk

    def send_text(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        if len(data) < 126:
            head = bytes([0x81, 0x80 | len(data)])
        else:
            head = bytes([0x81, 0x80 | 126]) + len(data).to_bytes(2, "big")
        self.sock.sendall(head + mask + masked)

    def recv_frame(self) -> tuple[int, bytes]:
        while True:
            if len(self.buffer) >= 2:
                length = self.buffer[1] & 127
                start = 2
                if length == 126:
                    length = int.from_bytes(self.buffer[2:4], "big")
                    start = 4
                elif length == 127:
                    length = int.from_bytes(self.buffer[2:10], "big")
                    start = 10
                if len(self.buffer) >= start + length:
                    opcode = self.buffer[0] & 15
                    payload = self.buffer[start : start + length]
                    self.buffer = self.buffer[start + length :]
                    return opcode, payload
            self.buffer += self._recv()

    def close(self) -> None:
        # Close frame with code 1000, then drop the socket.
        mask = os.urandom(4)
        body = (1000).to_bytes(2, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(body))
        self.sock.sendall(bytes([0x88, 0x80 | 2]) + mask + masked)
        self.sock.close()


def rest_request(sock: socket.socket, method: str, path: str, body: bytes) -> int:
    head = f"{method} {path} HTTP/1.1\r\nHost: soak\r\nContent-Length: {len(body)}"
    sock.sendall(head.encode() + b"\r\n\r\n" + body)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ")[1])


def run_ws(port: int, cycles: int, publish: object) -> None:
    for i in range(cycles):
        ws = RawWebSocket(port, "/wsapi/sub")
        ws.send_text(json.dumps({"topic": "soak/ws", "init": "MOST_RECENT"}))
        if i % 10 == 0:
            opcode, payload = ws.recv_frame()
            if opcode != 1 or b"payload" not in payload:
                raise RuntimeError(f"unexpected frame {opcode} {payload[:80]!r}")
        ws.close()
        if i % 1000 == 0:
            print(f"  websocket cycles: {i}", file=sys.stderr)


def run_rest(port: int, requests: int) -> None:
    bodies = [
        ("POST", "/api/pub", {"topic": "soak/rest", "packet": {"payload": "x" * 64}}),
        (
            "POST",
            "/api/pub",
            {
                "topic": "soak/rest",
                "packet": {"payload": "aGk="},
                "request_encoding": "base64",
            },
        ),
        ("POST", "/api/write", {"path": "soak/file.a0", "packet": {"payload": "w"}}),
        ("POST", "/api/pub", {"topic": "/", "packet": {"payload": "bad"}}),
        ("POST", "/api/pub", {"packet": {"payload": "no topic"}}),
        ("GET", "/api/ls", None),
        ("GET", "/nowhere", None),
    ]
    encoded = [
        (m, p, json.dumps(b).encode() if b is not None else b"") for m, p, b in bodies
    ]
    sock = socket.create_connection(("127.0.0.1", port))
    for i in range(requests):
        method, path, body = encoded[i % len(encoded)]
        status = rest_request(sock, method, path, body)
        if status >= 500:
            raise RuntimeError(f"{method} {path} answered {status}")
        if i % 20000 == 0:
            print(f"  rest requests: {i}", file=sys.stderr)
    sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ws-cycles", type=int, default=10_000)
    parser.add_argument("--rest-requests", type=int, default=100_000)
    args = parser.parse_args()

    root = f"/dev/shm/a0gw-soak-{uuid.uuid4().hex[:8]}"
    port = free_port()
    workdir = tempfile.mkdtemp()
    env = dict(os.environ, A0_ROOT=root)
    gateway = subprocess.Popen(
        [sys.executable, "-m", "a0gw", "serve", "--port", str(port), "--root", root],
        cwd=workdir,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

        # A publisher so every subscription has a packet to receive.
        os.environ["A0_ROOT"] = root
        import a0

        publisher = a0.Publisher("soak/ws")
        publisher.pub("hello")

        # Warm up once so lazily created objects are in the baseline.
        run_ws(port, 20, publisher)
        run_rest(port, 200)
        baseline = settle(gateway.pid, process_stats(gateway.pid), 1.0)
        print(f"baseline: {baseline}", file=sys.stderr)

        # Two halves: a leak keeps growing in the second, a cache does not.
        started = time.monotonic()
        run_ws(port, args.ws_cycles // 2, publisher)
        run_rest(port, args.rest_requests // 2)
        middle = settle(gateway.pid, baseline)
        print(f"middle:   {middle}", file=sys.stderr)
        run_ws(port, args.ws_cycles - args.ws_cycles // 2, publisher)
        run_rest(port, args.rest_requests - args.rest_requests // 2)
        elapsed = time.monotonic() - started

        after = settle(gateway.pid, baseline)
        print(f"after:    {after}", file=sys.stderr)
        leaks = []
        if after["fds"] > baseline["fds"]:
            leaks.append(f"file descriptors {baseline['fds']} -> {after['fds']}")
        if after["threads"] > baseline["threads"]:
            leaks.append(f"threads {baseline['threads']} -> {after['threads']}")
        if after["rss"] > baseline["rss"] + RSS_MARGIN:
            leaks.append(f"resident memory {baseline['rss']} -> {after['rss']}")
        if after["rss"] > middle["rss"] + RSS_MARGIN // 4:
            leaks.append(
                f"resident memory still growing {middle['rss']} -> {after['rss']}"
            )
        print(
            f"{args.ws_cycles} websocket cycles and {args.rest_requests} REST requests "
            f"in {elapsed:.1f} s; fds {baseline['fds']} -> {after['fds']}, "
            f"threads {baseline['threads']} -> {after['threads']}, "
            f"RSS {baseline['rss'] / 2**20:.1f} -> {middle['rss'] / 2**20:.1f} "
            f"(half way) -> {after['rss'] / 2**20:.1f} MiB"
        )
        if leaks:
            print("LEAK: " + "; ".join(leaks))
            return 1
        print("no leak")
        return 0
    finally:
        gateway.terminate()
        gateway.wait(10)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
