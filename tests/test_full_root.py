"""A full file system under the AlephZero root (a full /dev/shm).

AlephZero creates its files sparse and writes them through a mapping, so a
write the file system cannot back kills the writer with SIGBUS.  The gateway
must refuse such writes with the reason, keep what it wrote, and keep serving.

The root here is a small tmpfs of its own, which needs the right to mount
(root in the test machine's namespace); elsewhere these tests are skipped.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import a0
import httpx
import pytest
from helpers import (
    Gateway,
    assert_serving,
    expect_close,
    handshake,
    read_file,
    read_topic,
    wait_for_warning,
    ws_connect,
)

TMPFS_BYTES = 8 * 1024 * 1024
BIG = "x" * 1_000_000


@pytest.fixture
def root(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An AlephZero root on a tmpfs of TMPFS_BYTES."""
    path = f"/dev/shm/a0gw-test-{uuid.uuid4().hex}"
    os.makedirs(path)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", path],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        os.rmdir(path)
        pytest.skip(f"cannot mount a small tmpfs here: {mount.stderr.strip()}")
    monkeypatch.setenv("A0_ROOT", path)
    monkeypatch.delenv("PORT_STR", raising=False)
    monkeypatch.delenv("A0_TOPIC", raising=False)
    yield path
    subprocess.run(["umount", "-l", path], check=False)
    os.rmdir(path)


def fill(http: httpx.Client, topic: str) -> int:
    """Publishes 1 MB packets on `topic` until one is refused; returns how
    many were accepted."""
    for accepted in range(TMPFS_BYTES // len(BIG) + 2):
        response = http.post(
            "/api/pub", json={"topic": topic, "packet": {"payload": BIG}}
        )
        if response.status_code != 200:
            assert response.status_code == 507, response.text
            assert response.text.startswith(
                f"No space left to write to topic '{topic}': its file system has "
            ), response.text
            return accepted
    pytest.fail("the file system never filled up")


def test_publish_on_full_root_is_507_and_nothing_is_lost(
    http: httpx.Client, gateway: Gateway
) -> None:
    accepted = fill(http, "full")
    assert accepted > 0
    wait_for_warning(gateway, "No space left to write to topic 'full'")
    # A packet the file system can still hold goes through.
    body = {"topic": "full", "packet": {"payload": "small"}}
    assert http.post("/api/pub", json=body).status_code == 200
    payloads = [p.payload for p in read_topic("full")]
    assert payloads == [BIG.encode()] * accepted + [b"small"]
    assert_serving(gateway)


def test_write_rpc_and_prpc_on_full_root_are_refused(
    http: httpx.Client, gateway: Gateway
) -> None:
    fill(http, "full")
    response = http.post(
        "/api/write", json={"path": "w.a0", "packet": {"payload": BIG}}
    )
    assert response.status_code == 507
    assert "No space left to write to file" in response.text
    assert read_file("w.a0") == []

    requests: list[bytes] = []

    def echo(req: a0.RpcRequest) -> None:
        requests.append(req.pkt.payload)
        req.reply(a0.Packet([], b"ok"))

    rpc_server = a0.RpcServer("svc", echo, lambda _id: None)
    response = http.post("/api/rpc", json={"topic": "svc", "packet": {"payload": BIG}})
    assert response.status_code == 507
    assert "No space left to write to rpc topic 'svc'" in response.text
    assert requests == []
    del rpc_server

    prpc_server = a0.PrpcServer("job", lambda conn: None, lambda _id: None)
    with ws_connect(gateway, "/wsapi/prpc") as ws:
        handshake(ws, topic="job", packet={"payload": BIG})
        reason = expect_close(ws, 1011)
    assert "No space left to write to prpc topic 'job'" in reason
    del prpc_server
    assert_serving(gateway)
