"""The `a0gw serve` command: startup, deadman, signals, port and environment."""

from __future__ import annotations

import signal
import socket
from typing import Callable

import a0
import httpx
import pytest
from helpers import (
    TIMEOUT,
    Gateway,
    deadman_taken,
    expect_close,
    free_port,
    handshake,
    read_topic,
    recv_packet,
    wait_until,
    ws_connect,
)

StartGateway = Callable[..., Gateway]


def get_ls(gateway: Gateway) -> httpx.Response:
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT, trust_env=False) as client:
        return client.get("/api/ls")


def test_cli_takes_deadman_once_listening(start_gateway: StartGateway) -> None:
    assert not deadman_taken("api")
    gateway = start_gateway(ready=False)
    wait_until(lambda: deadman_taken("api"), timeout=30, what="the deadman")
    # The deadman is only taken once the port accepts requests.
    assert get_ls(gateway).status_code == 200


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)
def test_cli_signal_closes_websockets_releases_deadman_exits_0(
    start_gateway: StartGateway, sig: int
) -> None:
    gateway = start_gateway()
    a0.Publisher("t").pub("x")
    with (
        ws_connect(gateway, "/wsapi/sub") as streaming,
        ws_connect(gateway, "/wsapi/sub") as blocked,
        ws_connect(gateway, "/wsapi/read") as idle,
        socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT),
    ):
        handshake(streaming, topic="t", init="OLDEST")
        assert recv_packet(streaming)["payload"] == "x"
        # An ON_ACK stream whose reader waits for an ACK that never comes.
        handshake(blocked, topic="t", init="OLDEST", scheduler="ON_ACK")
        assert recv_packet(blocked)["payload"] == "x"
        a0.Publisher("t").pub("y")
        assert recv_packet(streaming)["payload"] == "y"
        gateway.send_signal(sig)
        for ws in (streaming, blocked, idle):
            expect_close(ws, 1001)
        assert gateway.wait_exit() == 0
    assert not deadman_taken("api")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT).close()


def test_cli_sigterm_while_idle_exits_0(start_gateway: StartGateway) -> None:
    gateway = start_gateway()
    assert gateway.stop(signal.SIGTERM) == 0
    assert not deadman_taken("api")
    assert "Traceback" not in gateway.stderr_text()


def test_cli_port_in_use_fails_with_message(start_gateway: StartGateway) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        gateway = start_gateway(port=port, ready=False)
        status = gateway.wait_exit(timeout=30)
    assert status != 0
    stderr = gateway.stderr_text()
    assert str(port) in stderr
    assert "address already in use" in stderr.lower()
    assert not deadman_taken("api")


def test_cli_port_from_port_str(start_gateway: StartGateway) -> None:
    port = free_port()
    gateway = start_gateway(
        port=port, use_port_option=False, env={"PORT_STR": str(port)}
    )
    assert get_ls(gateway).status_code == 200


def test_cli_host_option(start_gateway: StartGateway) -> None:
    gateway = start_gateway(args=["--host", "127.0.0.1"])
    assert get_ls(gateway).status_code == 200


def test_cli_invalid_port_str_fails_with_message(start_gateway: StartGateway) -> None:
    gateway = start_gateway(
        use_port_option=False, env={"PORT_STR": "http"}, ready=False
    )
    assert gateway.wait_exit(timeout=30) != 0
    assert "PORT_STR" in gateway.stderr_text()


def test_cli_root_from_a0_root(start_gateway: StartGateway, root: str) -> None:
    gateway = start_gateway(use_root_option=False)
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT, trust_env=False) as client:
        body = {"topic": "from/env", "packet": {"payload": "x"}}
        assert client.post("/api/pub", json=body).status_code == 200
        assert client.get("/api/ls").json() == ["from/env.pubsub.a0"]
    assert [p.payload for p in read_topic("from/env")] == [b"x"]


def test_cli_deadman_topic_from_a0_topic(start_gateway: StartGateway) -> None:
    gateway = start_gateway(env={"A0_TOPIC": "mygw"}, topic="mygw")
    assert deadman_taken("mygw")
    assert not deadman_taken("api")
    assert gateway.stop(signal.SIGTERM) == 0
    assert not deadman_taken("mygw")
