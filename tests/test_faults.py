"""Faults: AlephZero peers killed mid-work, the root wiped, SIGTERM under load."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import a0
import httpx
import pytest
from helpers import (
    TIMEOUT,
    Gateway,
    assert_serving,
    handshake,
    read_topic,
    recv_packet,
    wait_until,
    ws_connect,
)
from websockets.exceptions import ConnectionClosed

SLACK = 5.0

PUBLISHER = """
import itertools, sys
import a0
publisher = a0.Publisher(sys.argv[1])
print("ready", flush=True)
for i in itertools.count():
    publisher.pub(f"loop{i}")
"""

# Answers requests whose payload is "echo"; on any other, reports it and hangs.
RPC_SERVER = """
import sys, time
import a0

def on_request(request):
    if request.pkt.payload == b"echo":
        request.reply("echoed")
        return
    print("got", flush=True)
    time.sleep(3600)

server = a0.RpcServer(a0.RpcTopic(sys.argv[1]), on_request, lambda _id: None)
print("ready", flush=True)
time.sleep(3600)
"""

# Sends two progress messages, then hangs without finishing.
PRPC_SERVER = """
import sys, time
import a0

def on_connect(connection):
    connection.send("p0", False)
    connection.send("p1", False)
    print("sent", flush=True)
    time.sleep(3600)

server = a0.PrpcServer(a0.PrpcTopic(sys.argv[1]), on_connect, lambda _id: None)
print("ready", flush=True)
time.sleep(3600)
"""


class Peer:
    """An AlephZero peer process running one of the scripts above."""

    def __init__(self, script: str, topic: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, topic],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )

    def expect(self, line: str, timeout: float = 30.0) -> None:
        """Waits for `line` on the peer's stdout."""
        result: list[str] = []
        stdout = self.proc.stdout
        assert stdout is not None
        reader = threading.Thread(
            target=lambda: result.append(stdout.readline()), daemon=True
        )
        reader.start()
        reader.join(timeout)
        assert result and result[0].strip() == line, f"peer said {result!r}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(TIMEOUT)


@pytest.fixture
def spawn(root: str) -> Iterator[Callable[[str, str], Peer]]:
    peers: list[Peer] = []

    def start(script: str, topic: str) -> Peer:
        peer = Peer(script, topic)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        if peer.proc.poll() is None:
            peer.proc.kill()
        peer.proc.wait()
        if peer.proc.stdout is not None:
            peer.proc.stdout.close()


def rest(gateway: Gateway, route: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=gateway.url, timeout=30, trust_env=False) as http:
        return http.post(route, json=body)


def read_until(ws: Any, payload: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if recv_packet(ws, timeout)["payload"] == payload:
            return
    pytest.fail(f"{payload!r} never arrived")


# --- Peers killed --------------------------------------------------------------


def test_publisher_killed_while_publishing(
    gateway: Gateway, spawn: Callable[[str, str], Peer]
) -> None:
    with (
        ws_connect(gateway, "/wsapi/sub") as ws,
        ws_connect(gateway, "/wsapi/sub") as other,
    ):
        handshake(ws, topic="busy", iter="NEWEST")
        handshake(other, topic="quiet", init="OLDEST")
        for round_ in range(3):
            publisher = spawn(PUBLISHER, "busy")
            publisher.expect("ready")
            # Packets flow, then the publisher dies mid-loop.
            first = recv_packet(ws)["payload"]
            assert first.startswith("loop")
            time.sleep(0.05)
            publisher.kill()
            # The topic still works for the gateway, both ways.
            marker = f"after-kill-{round_}"
            body = {"topic": "busy", "packet": {"payload": marker}}
            response = rest(gateway, "/api/pub", body)
            assert response.status_code == 200, response.text
            read_until(ws, marker)
            a0.Publisher("quiet").pub(f"quiet-{round_}")
            assert recv_packet(other)["payload"] == f"quiet-{round_}"
    # A new AlephZero subscriber sees the topic intact.
    payloads = [p.payload for p in read_topic("busy")]
    assert b"after-kill-2" in payloads
    assert_serving(gateway)


def test_rpc_server_killed_before_replying_gives_504(
    gateway: Gateway, spawn: Callable[[str, str], Peer]
) -> None:
    server = spawn(RPC_SERVER, "svc")
    server.expect("ready")
    body = {"topic": "svc", "packet": {"payload": "hang"}, "timeout": 2}
    with ThreadPoolExecutor(1) as pool:
        start = time.monotonic()
        future = pool.submit(rest, gateway, "/api/rpc", body)
        server.expect("got")
        server.kill()
        response = future.result(timeout=30)
        elapsed = time.monotonic() - start
    assert response.status_code == 504
    assert "svc" in response.text
    assert 2.0 <= elapsed < 2.0 + SLACK, elapsed
    assert_serving(gateway)
    # A new server on the same topic is reached.
    server = spawn(RPC_SERVER, "svc")
    server.expect("ready")
    body = {"topic": "svc", "packet": {"payload": "echo"}, "timeout": 10}
    response = rest(gateway, "/api/rpc", body)
    assert response.status_code == 200, response.text
    assert response.json()["payload"] == "echoed"


def test_prpc_server_killed_mid_stream(
    gateway: Gateway, spawn: Callable[[str, str], Peer]
) -> None:
    server = spawn(PRPC_SERVER, "prog")
    server.expect("ready")
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="prog", packet={"payload": "go"}, scheduler="IMMEDIATE")
        first = ws.recv(timeout=TIMEOUT)
        server.expect("sent")
        server.kill()
        # The client keeps its socket (no more progress) or gets a close.
        messages = [first]
        try:
            while True:
                messages.append(ws.recv(timeout=1.0))
        except TimeoutError:
            pass
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            assert exc.rcvd.code != 1011, exc.rcvd
        assert len(messages) <= 2
        # Other clients are served meanwhile.
        assert_serving(gateway)
    # A new server on the same topic is reached.
    server = spawn(PRPC_SERVER, "prog")
    server.expect("ready")
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="prog", packet={"payload": "again"})
        assert '"p0"' in ws.recv(timeout=TIMEOUT)


# --- The root wiped ------------------------------------------------------------


def test_root_removed_and_recreated(gateway: Gateway, root: str) -> None:
    body = {"topic": "t", "packet": {"payload": "before"}}
    assert rest(gateway, "/api/pub", body).status_code == 200
    shutil.rmtree(root)
    # While the root is missing, requests fail cleanly (or recreate it).
    body = {"topic": "t", "packet": {"payload": "missing"}}
    assert rest(gateway, "/api/pub", body).status_code < 500
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    for payload in ("after1", "after2"):
        body = {"topic": "t", "packet": {"payload": payload}}
        response = rest(gateway, "/api/pub", body)
        assert response.status_code == 200, response.text
    assert [p.payload for p in read_topic("t")] == [b"after1", b"after2"]
    body = {"path": "f.a0", "packet": {"payload": "w"}}
    assert rest(gateway, "/api/write", body).status_code == 200
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT, trust_env=False) as http:
        assert http.get("/api/ls").json() == ["f.a0", "t.pubsub.a0"]
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="t", init="OLDEST")
        assert recv_packet(ws)["payload"] == "after1"


# --- SIGTERM under load --------------------------------------------------------


def test_sigterm_under_load_exits_0_and_keeps_acknowledged_publishes(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway()
    stop = threading.Event()
    acknowledged: dict[str, list[str]] = {}
    close_codes: list[int | None] = []
    received = [0]

    def publish(topic: str) -> None:
        done = acknowledged.setdefault(topic, [])
        with httpx.Client(
            base_url=gateway.url, timeout=TIMEOUT, trust_env=False
        ) as http:
            for i in range(1_000_000):
                if stop.is_set():
                    return
                payload = f"{topic}-{i}"
                body = {"topic": topic, "packet": {"payload": payload}}
                try:
                    response = http.post("/api/pub", json=body)
                except httpx.TransportError:
                    return
                if response.status_code == 200 and response.text == "success":
                    done.append(payload)

    def subscribe(topic: str) -> None:
        with ws_connect(gateway, "/wsapi/sub") as ws:
            handshake(ws, topic=topic, init="OLDEST")
            try:
                while True:
                    ws.recv(timeout=TIMEOUT)
                    received[0] += 1
            except ConnectionClosed as exc:
                close_codes.append(exc.rcvd.code if exc.rcvd else None)
            except TimeoutError:
                close_codes.append(-1)

    topics = [f"load{k}" for k in range(4)]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(subscribe, t) for t in topics[:3]]
        futures += [pool.submit(publish, t) for t in topics]
        wait_until(
            lambda: sum(map(len, acknowledged.values())) > 1000 and received[0] > 300,
            timeout=60,
            what="publishes and deliveries under way",
        )
        gateway.send_signal(signal.SIGTERM)
        start = time.monotonic()
        status = gateway.wait_exit(timeout=TIMEOUT)
        elapsed = time.monotonic() - start
        stop.set()
        for future in futures:
            future.result(timeout=30)
    assert status == 0
    assert elapsed < 2.0, f"exit took {elapsed:.2f} s"
    assert close_codes == [1001, 1001, 1001]
    for topic in topics:
        stored = {p.payload.decode() for p in read_topic(topic)}
        missing = [p for p in acknowledged[topic] if p not in stored]
        assert not missing, f"{len(missing)} acknowledged publishes lost on {topic}"
        assert acknowledged[topic], f"nothing acknowledged on {topic}"
