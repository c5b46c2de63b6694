"""Packets too large for the AlephZero file they would go to.

AlephZero sizes a topic's file when it first creates it; a file made smaller
beforehand (by another process, or by hand) keeps its size.  A packet that
does not fit must be refused with the reason, leaving the file and the
gateway as they were.
"""

from __future__ import annotations

import os
import time

import a0
import httpx
from helpers import (
    Gateway,
    assert_serving,
    expect_close,
    handshake,
    read_file,
    read_topic,
    ws_connect,
)

FILE_SIZE = 64 * 1024
FITS = "f" * 1000
TOO_LARGE = "x" * (FILE_SIZE + 1)


def small_file(root: str, name: str) -> None:
    """An empty AlephZero file of FILE_SIZE bytes at `name` under `root`."""
    with open(os.path.join(root, name), "wb") as file:
        file.truncate(FILE_SIZE)


def assert_too_large(response: httpx.Response, name: str) -> None:
    assert response.status_code == 413, response.text
    assert "does not fit" in response.text
    assert name in response.text
    assert f"its file has {FILE_SIZE} bytes" in response.text


def test_pub_larger_than_topic_file_is_413(
    http: httpx.Client, gateway: Gateway, root: str
) -> None:
    small_file(root, "small.pubsub.a0")
    ok = {"topic": "small", "packet": {"payload": FITS}}
    assert http.post("/api/pub", json=ok).status_code == 200
    big = {"topic": "small", "packet": {"payload": TOO_LARGE}}
    assert_too_large(http.post("/api/pub", json=big), "'small'")
    assert http.post("/api/pub", json=ok).status_code == 200
    assert [p.payload for p in read_topic("small")] == [FITS.encode()] * 2
    assert os.path.getsize(os.path.join(root, "small.pubsub.a0")) == FILE_SIZE
    assert_serving(gateway)


def test_write_larger_than_file_is_413(
    http: httpx.Client, gateway: Gateway, root: str
) -> None:
    small_file(root, "small.a0")
    big = {"path": "small.a0", "packet": {"payload": TOO_LARGE}}
    assert_too_large(http.post("/api/write", json=big), "small.a0")
    ok = {"path": "small.a0", "packet": {"payload": FITS}}
    assert http.post("/api/write", json=ok).status_code == 200
    assert [p.payload for p in read_file("small.a0")] == [FITS.encode()]
    assert_serving(gateway)


def test_rpc_request_larger_than_topic_file_is_413(
    http: httpx.Client, gateway: Gateway, root: str
) -> None:
    small_file(root, "small.rpc.a0")
    requests: list[bytes] = []

    def echo(req: a0.RpcRequest) -> None:
        requests.append(req.pkt.payload)
        req.reply(a0.Packet([], b"re:" + req.pkt.payload))

    server = a0.RpcServer("small", echo, lambda _id: None)
    big = {"topic": "small", "packet": {"payload": TOO_LARGE}}
    assert_too_large(http.post("/api/rpc", json=big), "'small'")
    ok = {"topic": "small", "packet": {"payload": FITS}}
    response = http.post("/api/rpc", json=ok)
    assert response.status_code == 200, response.text
    assert response.json()["payload"] == "re:" + FITS
    assert requests == [FITS.encode()]
    del server
    assert_serving(gateway)


def test_prpc_request_larger_than_topic_file_closes_1009(
    gateway: Gateway, root: str
) -> None:
    small_file(root, "small.prpc.a0")
    connections: list[bytes] = []

    def onconnect(conn: a0.PrpcConnection) -> None:
        connections.append(conn.pkt.payload)
        conn.send(a0.Packet([], b"done"), True)

    cancels: list[str] = []
    server = a0.PrpcServer("small", onconnect, cancels.append)
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="small", packet={"payload": TOO_LARGE})
        reason = expect_close(ws, 1009)
    assert "does not fit" in reason and "'small'" in reason
    # A request that never went out has nothing to cancel.
    time.sleep(0.3)
    assert cancels == []
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="small", packet={"payload": FITS})
        assert ws.recv(timeout=5)
    assert connections == [FITS.encode()]
    del server
    assert_serving(gateway)
