"""Settings of a running gateway, from the command line and the environment."""

from __future__ import annotations

import dataclasses

DEFAULT_PORT = 24880
DEFAULT_ROOT = "/dev/shm/alephzero"
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything `a0gw serve` can be told."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    root: str = DEFAULT_ROOT
    # The AlephZero topic of the gateway's deadman (A0_TOPIC).
    topic: str = "api"
    max_body_bytes: int = 16 * MIB
    max_message_bytes: int = 16 * MIB
    max_header_bytes: int = 16 * 1024
    # Bytes a WebSocket transport may buffer before the stream waits.
    socket_high_water: int = 512 * 1024
    # Per-stream queue bounds (see a0gw.bridge.StreamLimits).
    drain_bytes: int = 256 * 1024
    immediate_bytes: int = 4 * MIB
    # Seconds a REST RPC waits for its reply unless the request says.
    rpc_timeout: float = 30.0
    # Seconds a client has to send a whole HTTP request once connected (or
    # idle between keep-alive requests), and its JSON handshake once upgraded.
    handshake_timeout: float = 10.0
    # WebSocket keepalive: a ping every interval; no pong within the timeout
    # drops the connection and frees its AlephZero reader.
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    max_connections: int = 4096
    # Access policy (see a0gw.policy.AccessPolicy).
    token: str | None = None
    origins: tuple[str, ...] = ("*",)
    read_only: bool = False
    allow_topics: tuple[str, ...] = ()
    deny_topics: tuple[str, ...] = ()
    access_log: bool = False
