"""A lean HTTP/1.1 keep-alive load generator.

``concurrency`` connections each send one pre-built request, wait for its
response, and send it again at once (no pipelining), for a warm-up and then a
measured window.  Responses are parsed only as far as needed to find where
they end (``Content-Length`` or chunked) and their status.
"""

from __future__ import annotations

import asyncio
import socket
import time


def post_request(
    host: str, port: int, path: str, body: bytes, token: str | None = None
) -> bytes:
    """A complete POST request with a JSON body (and a bearer token)."""
    auth = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""
    return (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"%sContent-Length: %d\r\n\r\n"
        % (path.encode(), host.encode(), port, auth, len(body))
    ) + body


class _State:
    def __init__(self) -> None:
        self.measuring = False
        self.stopping = False
        self.count = 0
        self.errors = 0
        self.first_error: str | None = None
        self.latencies: list = []
        self.in_flight = 0
        self.idle: asyncio.Future | None = None

    def record(self, latency_ns: int, status: int, body: bytes) -> None:
        if not self.measuring:
            return
        if status == 200:
            self.count += 1
            self.latencies.append(latency_ns)
        else:
            self.errors += 1
            if self.first_error is None:
                self.first_error = f"{status} {body[:200].decode('utf-8', 'replace')}"


class _Conn(asyncio.Protocol):
    def __init__(self, state: _State, request: bytes) -> None:
        self.state = state
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.head_end = -1
        self.body_end = -1
        self.chunked = False
        self.t0 = 0
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        st = self.state
        if self.busy:
            self.busy = False
            st.in_flight -= 1
        if not st.stopping:
            st.errors += 1
            if st.first_error is None:
                st.first_error = f"connection closed by server ({exc})"
        self._check_idle()

    def send(self) -> None:
        assert self.transport is not None
        self.busy = True
        self.state.in_flight += 1
        self.t0 = time.perf_counter_ns()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head = buf[:end].lower()
            self.head_end = end + 4
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
                self.body_end = self.head_end + length
                self.chunked = False
            else:
                self.chunked = b"chunked" in head
                self.body_end = -1 if self.chunked else self.head_end
        if self.chunked:
            stop = buf.find(b"\r\n0\r\n\r\n", self.head_end - 2)
            if stop < 0:
                self.buf = buf
                return
            self.body_end = stop + 7
        if len(buf) < self.body_end:
            self.buf = buf
            return
        latency = time.perf_counter_ns() - self.t0
        status = int(buf[9:12])
        body = buf[self.head_end : self.body_end]
        self.buf = buf[self.body_end :]
        self.head_end = -1
        self.body_end = -1
        self.busy = False
        st = self.state
        st.in_flight -= 1
        st.record(latency, status, body)
        if not st.stopping:
            self.send()
        else:
            self._check_idle()

    def _check_idle(self) -> None:
        st = self.state
        if st.in_flight == 0 and st.idle is not None and not st.idle.done():
            st.idle.set_result(None)


async def run_load(
    host: str,
    port: int,
    request: bytes,
    concurrency: int,
    warmup: float,
    duration: float,
    meter=None,
) -> dict:
    """Runs the load; returns counts, rate and raw latencies (ns).

    `meter`, when given, is started and stopped around the measured window.
    """
    loop = asyncio.get_running_loop()
    state = _State()
    conns = []
    for _ in range(concurrency):
        _, conn = await loop.create_connection(
            lambda: _Conn(state, request), host, port
        )
        conns.append(conn)
    for conn in conns:
        conn.send()
    await asyncio.sleep(warmup)
    state.measuring = True
    if meter is not None:
        meter.start()
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    await asyncio.sleep(duration)
    state.measuring = False
    t_end = time.perf_counter()
    if meter is not None:
        meter.stop()
    cpu_end = time.process_time()
    state.stopping = True
    state.idle = loop.create_future()
    if state.in_flight:
        try:
            await asyncio.wait_for(state.idle, 10)
        except asyncio.TimeoutError:
            # Unanswered 10 s after the window: each counts as an error.
            state.errors += state.in_flight
            if state.first_error is None:
                state.first_error = f"{state.in_flight} request(s) never answered"
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    elapsed = t_end - t_start
    return {
        "requests": state.count,
        "errors": state.errors,
        "first_error": state.first_error,
        "elapsed_s": elapsed,
        "rate": state.count / elapsed if elapsed > 0 else 0.0,
        "client_cpu_pct": 100.0 * (cpu_end - cpu_start) / elapsed
        if elapsed > 0
        else 0.0,
        "latencies_ns": state.latencies,
    }
