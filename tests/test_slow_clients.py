"""Slow and vanished clients: bounded memory, drop counts, keepalive cleanup."""

from __future__ import annotations

import json
import threading
import time
from typing import Callable

import a0
import httpx
import pytest
from helpers import (
    TIMEOUT,
    Gateway,
    RawWebSocket,
    assert_serving,
    handshake,
    proc_status_kib,
    recv_packet,
    thread_count,
    wait_for_warning,
    wait_until,
    ws_connect,
)

StartGateway = Callable[..., Gateway]
MIB = 1024 * 1024
SLACK = 5.0


def stalled_subscriber(gateway: Gateway, **fields: object) -> RawWebSocket:
    """A subscriber that handshakes, then reads nothing (tiny receive window)."""
    ws = RawWebSocket(gateway, "/wsapi/sub", rcvbuf=4096)
    assert ws.status == 101
    ws.send_text(json.dumps(fields))
    return ws


def responsive(gateway: Gateway) -> None:
    """REST and a fresh stream are served promptly."""
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT, trust_env=False) as http:
        assert http.get("/api/ls").status_code == 200


def test_immediate_stalled_client_gets_drop_count_later(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--queue-limit", "65536"])
    a0.File("t.pubsub.a0")  # The topic exists before the stream starts.
    payload = "x" * (64 * 1024)
    with stalled_subscriber(
        gateway, topic="t", init="OLDEST", scheduler="IMMEDIATE"
    ) as slow:
        publisher = a0.Publisher("t")
        publisher.pub("first")
        for i in range(300):  # About 19 MiB while the client reads nothing.
            publisher.pub(f"{i:06d}{payload}")
            if i % 100 == 0:
                responsive(gateway)
        responsive(gateway)
        # A fast client on the same topic is not held back by the slow one.
        with ws_connect(gateway, "/wsapi/sub") as fast:
            handshake(fast, topic="t", init="MOST_RECENT")
            assert recv_packet(fast)["payload"].startswith("000299")

        # The slow client reads again: it drains what was queued, then gets
        # a later packet; the drops are reported on the packets after them.
        dropped = 0
        final_sent = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                wait = TIMEOUT if final_sent else 1.0
                opcode, data = slow.recv_frame(timeout=wait)
            except TimeoutError:
                assert not final_sent, "the final packet never arrived"
                publisher.pub("final")
                final_sent = True
                continue
            if opcode != 0x1:
                continue
            packet = json.loads(data)
            counts = [int(v) for k, v in packet["headers"] if k == "a0gw_dropped"]
            dropped += sum(counts)
            if packet["payload"] == "final":
                break
        else:
            pytest.fail("the final packet never arrived")
    assert dropped > 0
    assert_serving(gateway)


@pytest.mark.parametrize("scheduler", ["ON_DRAIN", "IMMEDIATE"])
def test_stalled_client_memory_stays_bounded(gateway: Gateway, scheduler: str) -> None:
    pid = gateway.proc.pid
    before = proc_status_kib(pid, "RssAnon")
    a0.File("big.pubsub.a0")
    chunk = b"y" * (256 * 1024)
    peak = before
    with stalled_subscriber(
        gateway, topic="big", init="OLDEST", scheduler=scheduler
    ) as slow:
        publisher = a0.Publisher("big")
        for i in range(800):  # 200 MiB.
            publisher.pub(chunk)
            if i % 50 == 0:
                peak = max(peak, proc_status_kib(pid, "RssAnon"))
        time.sleep(0.3)
        peak = max(peak, proc_status_kib(pid, "RssAnon"))
        responsive(gateway)
        slow.sock.close()
    assert peak < 200 * 1024, f"RssAnon grew from {before} KiB to {peak} KiB"
    assert_serving(gateway)


def settled_thread_count(pid: int) -> int:
    """The thread count once it has not changed for a moment."""
    last = thread_count(pid)
    stable_since = time.monotonic()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() - stable_since < 0.5 and time.monotonic() < deadline:
        time.sleep(0.05)
        now = thread_count(pid)
        if now != last:
            last, stable_since = now, time.monotonic()
    return last


def test_vanished_peer_is_dropped_and_its_reader_freed(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(args=["--ping-interval", "0.5", "--ping-timeout", "0.5"])
    pid = gateway.proc.pid
    # Warm up: one stream opened and closed, so lazily started threads exist.
    with ws_connect(gateway, "/wsapi/sub") as ws:
        handshake(ws, topic="warm", init="OLDEST")
        a0.Publisher("warm").pub("x")
        recv_packet(ws)
    baseline = settled_thread_count(pid)

    peers = []
    for i in range(3):
        peer = RawWebSocket(gateway, "/wsapi/sub")
        assert peer.status == 101
        peer.send_text(json.dumps({"topic": f"gone{i}"}))
        peers.append(peer)
    try:
        wait_until(
            lambda: thread_count(pid) > baseline, what="readers for the new streams"
        )
        start = time.monotonic()
        # The peers now vanish: they never read, answer or close.
        wait_until(
            lambda: thread_count(pid) <= baseline,
            timeout=0.5 + 0.5 + 2 * SLACK,
            what="the readers of vanished peers to be freed",
        )
        assert time.monotonic() - start < 0.5 + 0.5 + 2 * SLACK
        wait_for_warning(gateway, "No pong within 0.5 s")
        for peer in peers:
            peer.wait_dropped(timeout=SLACK)
    finally:
        for peer in peers:
            peer.sock.close()
    assert_serving(gateway)


def test_many_stalled_clients_do_not_block_others(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway()
    a0.File("t.pubsub.a0")
    stalled = [
        stalled_subscriber(gateway, topic="t", init="OLDEST", scheduler=scheduler)
        for scheduler in ["ON_DRAIN", "IMMEDIATE", "ON_ACK"] * 3
    ]
    try:
        publisher = a0.Publisher("t")
        stop = threading.Event()

        def flood() -> None:
            data = "z" * (128 * 1024)
            while not stop.is_set():
                publisher.pub(data)

        thread = threading.Thread(target=flood)
        thread.start()
        try:
            for _ in range(3):
                responsive(gateway)
            a0.Publisher("other").pub("marker")
            with ws_connect(gateway, "/wsapi/sub") as ws:
                handshake(ws, topic="other", init="OLDEST")
                assert recv_packet(ws)["payload"] == "marker"
        finally:
            stop.set()
            thread.join()
    finally:
        for ws in stalled:
            ws.sock.close()
    assert_serving(gateway)
