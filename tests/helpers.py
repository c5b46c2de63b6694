"""Helpers shared by the a0gw tests: the gateway process, WebSocket and a0 peers.

The tests never import a0gw: they run it as a subprocess and talk to it over
HTTP and WebSocket, with the `alephzero` package (`a0`) as the AlephZero peer.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import a0
import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

STANDARD_HEADERS = {
    "a0_time_mono",
    "a0_time_wall",
    "a0_transport_seq",
    "a0_writer_id",
    "a0_writer_seq",
}

# Seconds allowed for anything the gateway should do "right away".
TIMEOUT = 10.0


def _die_with_parent() -> None:
    """In a gateway child about to exec: the kernel sends it SIGTERM when the
    test process dies, so a crashed test run leaves no gateway behind."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Any, timeout: float = TIMEOUT, what: str = "condition"
) -> None:
    """Polls `predicate` until it is true; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Recorder:
    """Records what callbacks on AlephZero threads are called with, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def __call__(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)

    def items(self) -> list[Any]:
        with self._lock:
            return list(self._items)

    def wait_count(
        self, count: int, timeout: float = TIMEOUT, what: str = "callbacks"
    ) -> list[Any]:
        """Waits until at least `count` calls were recorded; returns them all."""
        wait_until(lambda: len(self.items()) >= count, timeout, f"{count} {what}")
        return self.items()


def deadman_taken(topic: str = "api", timeout: float = 0.05) -> bool:
    """Whether some process holds the AlephZero deadman of `topic`."""
    try:
        a0.Deadman(topic).wait_taken(timeout)
    except RuntimeError:
        return False
    return True


class Gateway:
    """One `python -m a0gw serve` subprocess."""

    def __init__(
        self,
        root: str,
        port: int | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        topic: str = "api",
        use_port_option: bool = True,
        use_root_option: bool = True,
    ) -> None:
        self.root = root
        self.port = port if port is not None else free_port()
        self.topic = topic
        self.signalled = False
        cmd = [sys.executable, "-m", "a0gw", "serve"]
        if use_port_option:
            cmd += ["--port", str(self.port)]
        if use_root_option:
            cmd += ["--root", root]
        cmd += args or []
        full_env = dict(os.environ)
        full_env["A0_ROOT"] = root
        full_env.pop("PORT_STR", None)
        full_env.pop("A0_TOPIC", None)
        full_env.update(env or {})
        # Not the repo root: its a0gw/ folder would shadow the installed package.
        self._cwd = tempfile.TemporaryDirectory(prefix="a0gw-cwd-")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in cleanup)
        self.proc = subprocess.Popen(
            cmd,
            cwd=self._cwd.name,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            preexec_fn=_die_with_parent,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stderr_text(self) -> str:
        if self._stderr.closed:
            return self._final_stderr
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Waits until the gateway holds its deadman (it listens before taking it)."""
        deadline = time.monotonic() + timeout
        while not deadman_taken(self.topic):
            if self.proc.poll() is not None:
                pytest.fail(
                    f"gateway exited with {self.proc.returncode} before it was ready:\n"
                    + self.stderr_text()
                )
            if time.monotonic() > deadline:
                pytest.fail("gateway not ready in time:\n" + self.stderr_text())

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(
                f"gateway did not exit within {timeout} s:\n" + self.stderr_text()
            )

    def send_signal(self, sig: int) -> None:
        """Sends `sig`; the fixture then only waits for the exit, expecting 0.

        A second signal would hit a gateway already shutting down.
        """
        self.signalled = True
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        """Sends `sig` (unless already signalled) and returns the exit status."""
        if self.proc.poll() is None and not self.signalled:
            self.send_signal(sig)
        return self.wait_exit(timeout)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._final_stderr = self.stderr_text()
        self._stderr.close()
        self._cwd.cleanup()


# --- WebSocket -----------------------------------------------------------------


@contextlib.contextmanager
def ws_connect(
    gateway: Gateway, path: str, **kwargs: Any
) -> Iterator[ClientConnection]:
    kwargs.setdefault("max_size", None)
    with connect(
        gateway.ws_url(path),
        proxy=None,
        compression=None,
        open_timeout=TIMEOUT,
        **kwargs,
    ) as ws:
        yield ws


def handshake(ws: ClientConnection, **fields: Any) -> None:
    ws.send(json.dumps(fields))


def recv_packet(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next packet message, checked for shape."""
    message = ws.recv(timeout=timeout)
    assert isinstance(message, str), "packets must come as text messages"
    packet = json.loads(message)
    assert isinstance(packet, dict)
    assert set(packet) == {"headers", "payload"}
    assert isinstance(packet["payload"], str)
    for pair in packet["headers"]:
        assert isinstance(pair, list) and len(pair) == 2
        assert all(isinstance(x, str) for x in pair)
    return packet


def recv_packets(
    ws: ClientConnection, count: int, timeout: float = TIMEOUT
) -> list[dict[str, Any]]:
    return [recv_packet(ws, timeout) for _ in range(count)]


def assert_no_message(ws: ClientConnection, timeout: float = 0.3) -> None:
    """Nothing arrives within `timeout` seconds."""
    with pytest.raises(TimeoutError):
        message = ws.recv(timeout=timeout)
        pytest.fail(f"unexpected message: {message[:200]!r}")


def expect_close(ws: ClientConnection, code: int, reason: str | None = None) -> str:
    """The server closes `ws` with `code` (and `reason`), sending nothing before."""
    try:
        message = ws.recv(timeout=TIMEOUT)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "no close frame received"
        assert exc.rcvd.code == code, exc.rcvd
        if reason is not None:
            assert exc.rcvd.reason == reason
        return exc.rcvd.reason
    pytest.fail(f"expected close {code}, got a message: {str(message)[:200]!r}")


def header(packet: dict[str, Any], key: str) -> str:
    values = [v for k, v in packet["headers"] if k == key]
    assert len(values) == 1, f"{key} appears {len(values)} times in {packet['headers']}"
    return values[0]


def seq(packet: dict[str, Any]) -> int:
    return int(header(packet, "a0_transport_seq"))


def user_headers(headers: Any) -> Counter[tuple[str, str]]:
    """The headers other than AlephZero's standard ones, as a multiset."""
    return Counter((k, v) for k, v in headers if k not in STANDARD_HEADERS)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- AlephZero peers -----------------------------------------------------------


def read_topic(topic: str) -> list[a0.Packet]:
    """Every packet currently on a pubsub topic, oldest first."""
    sub = a0.SubscriberSync(topic, a0.INIT_OLDEST, a0.ITER_NEXT)
    out = []
    while sub.can_read():
        out.append(sub.read())
    return out


def read_file(path: str) -> list[a0.Packet]:
    """Every packet currently in an AlephZero file, oldest first."""
    reader = a0.ReaderSync(a0.File(path), a0.INIT_OLDEST, a0.ITER_NEXT)
    out = []
    while reader.can_read():
        out.append(reader.read())
    return out


def a0_files(root: str) -> list[str]:
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".a0"):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


def assert_nothing_written(root: str) -> None:
    """No AlephZero file under `root` holds a packet."""
    for rel in a0_files(root):
        packets = read_file(os.path.join(root, rel))
        assert packets == [], f"{rel} holds {len(packets)} packet(s)"


def publish_until_received(
    ws: ClientConnection, publish: Any, timeout: float = TIMEOUT
) -> tuple[int, dict[str, Any]]:
    """Publishes markers with `publish(i)` until the stream delivers one.

    For AWAIT_NEW streams, whose start the client cannot observe.  Returns how
    many markers were published and the first packet received.
    """
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        publish(count)
        count += 1
        try:
            return count, recv_packet(ws, timeout=0.1)
        except TimeoutError:
            continue
    pytest.fail("the stream delivered nothing")


# --- Gateway process internals and logs ----------------------------------------


def proc_status_kib(pid: int, field: str) -> int:
    """A size field of /proc/<pid>/status (e.g. "RssAnon"), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0])
    raise KeyError(field)


def thread_count(pid: int) -> int:
    """Threads of process `pid` right now."""
    return len(os.listdir(f"/proc/{pid}/task"))


def wait_for_log(gateway: Gateway, text: str, timeout: float = TIMEOUT) -> str:
    """Waits for a line of the gateway's stderr containing `text`; returns it."""
    found: list[str] = []

    def present() -> bool:
        found[:] = [x for x in gateway.stderr_text().splitlines() if text in x]
        return bool(found)

    wait_until(present, timeout, what=f"a log line with {text!r}")
    return found[0]


def warnings_logged(gateway: Gateway, text: str) -> list[str]:
    """The WARNING lines of the gateway's stderr that contain `text`."""
    return [
        line
        for line in gateway.stderr_text().splitlines()
        if " WARNING " in line and text in line
    ]


def wait_for_warning(gateway: Gateway, text: str, timeout: float = TIMEOUT) -> str:
    """Waits for a WARNING line containing `text` in the gateway's stderr."""
    found: list[str] = []

    def present() -> bool:
        found[:] = warnings_logged(gateway, text)
        return bool(found)

    wait_until(present, timeout, what=f"a WARNING with {text!r}")
    return found[0]


def assert_serving(gateway: Gateway, timeout: float = TIMEOUT) -> None:
    """The gateway is alive and answers REST requests and opens streams."""
    assert gateway.proc.poll() is None, (
        f"gateway exited with {gateway.proc.returncode}:\n{gateway.stderr_text()}"
    )
    with httpx.Client(base_url=gateway.url, timeout=timeout, trust_env=False) as client:
        assert client.get("/api/ls").status_code == 200
        topic = f"alive-{uuid.uuid4().hex[:8]}"
        body = {"topic": topic, "packet": {"payload": "ping"}}
        response = client.post("/api/pub", json=body)
        assert response.status_code == 200, response.text
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic=topic, init="OLDEST")
        assert recv_packet(ws, timeout)["payload"] == "ping"


# --- Raw sockets ---------------------------------------------------------------


def http_head_and_body(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and (what came of) the body of a raw HTTP response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def request_bytes(
    method: str, path: str, body: bytes = b"", headers: Iterable[str] = ()
) -> bytes:
    """A raw HTTP/1.1 request with a Content-Length and extra `headers` lines."""
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def read_raw_response(sock: socket.socket, buffer: bytearray) -> bytes:
    """Reads one whole HTTP response with a Content-Length from `sock`.

    `buffer` holds what was received beyond the responses read so far.
    """
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        buffer += chunk
    _, headers, rest = http_head_and_body(bytes(buffer))
    size = len(buffer) - len(rest) + int(headers["content-length"])
    while len(buffer) < size:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        buffer += chunk
    response = bytes(buffer[:size])
    del buffer[:size]
    return response


def read_response(
    sock: socket.socket, buffer: bytearray
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the next response on `sock` (see above)."""
    return http_head_and_body(read_raw_response(sock, buffer))


def read_until_closed(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Everything `sock` receives until the peer closes it (fails on timeout)."""
    sock.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            pytest.fail(f"connection still open after {timeout} s")
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data)
        except socket.timeout:
            pytest.fail(f"connection still open after {timeout} s")
        if not chunk:
            return bytes(data)
        data += chunk


class RawWebSocket:
    """A minimal WebSocket client on a plain socket, for misbehaving peers.

    It upgrades, sends frames it is told to, and answers nothing by itself
    (no pongs, no close frames) unless asked.
    """

    def __init__(
        self,
        gateway: Gateway,
        path: str,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", gateway.port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{gateway.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = bytearray()
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.status, self.headers, _ = http_head_and_body(head + b"\r\n\r\n")
        self.buffer = bytearray(rest)

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        """Sends one masked frame, as clients must."""
        first = (0x80 if fin else 0) | opcode
        size = len(payload)
        if size < 126:
            head = bytes([first, 0x80 | size])
        elif size < 1 << 16:
            head = bytes([first, 0x80 | 126]) + size.to_bytes(2, "big")
        else:
            head = bytes([first, 0x80 | 127]) + size.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    def _fill(self, count: int, timeout: float) -> None:
        self.sock.settimeout(timeout)
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the gateway")
            self.buffer += chunk

    def recv_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """The next frame from the gateway: (opcode, payload)."""
        self._fill(2, timeout)
        opcode = self.buffer[0] & 0x0F
        size = self.buffer[1] & 0x7F
        offset = 2
        if size == 126:
            self._fill(4, timeout)
            size = int.from_bytes(self.buffer[2:4], "big")
            offset = 4
        elif size == 127:
            self._fill(10, timeout)
            size = int.from_bytes(self.buffer[2:10], "big")
            offset = 10
        self._fill(offset + size, timeout)
        payload = bytes(self.buffer[offset : offset + size])
        del self.buffer[: offset + size]
        return opcode, payload

    def recv_close(self, timeout: float = TIMEOUT) -> tuple[int, str]:
        """Skips frames until a close frame; returns its code and reason."""
        deadline = time.monotonic() + timeout
        while True:
            opcode, payload = self.recv_frame(max(deadline - time.monotonic(), 0.01))
            if opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if payload else 1005
                return code, payload[2:].decode()

    def wait_dropped(self, timeout: float) -> None:
        """Reads and ignores frames until the gateway ends the TCP connection."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                if not self.sock.recv(65536):
                    return
            except ConnectionResetError:
                return
            except socket.timeout:
                break
        pytest.fail(f"the gateway kept the connection for more than {timeout} s")
