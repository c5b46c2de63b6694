"""The `a0gw` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from a0gw import __version__
from a0gw.config import DEFAULT_PORT, DEFAULT_ROOT, Config
from a0gw.errors import ConfigError

# The command line's defaults are the configuration's.
DEFAULTS = Config()


def _port_from_env() -> int:
    # PORT_STR is the reference bridge's variable for the port.
    text = os.environ.get("PORT_STR", str(DEFAULT_PORT))
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"Invalid port in PORT_STR: {text!r}") from None
    return port


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="a0gw", description="REST and WebSocket gateway to AlephZero."
    )
    parser.add_argument("--version", action="version", version=f"a0gw {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--host",
        default=DEFAULTS.host,
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for all interfaces)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port to listen on (default $PORT_STR or {DEFAULT_PORT})",
    )
    serve.add_argument(
        "--root",
        default=None,
        help=f"AlephZero root (default $A0_ROOT or {DEFAULT_ROOT})",
    )
    serve.add_argument(
        "--max-body",
        type=_positive_int,
        default=DEFAULTS.max_body_bytes,
        metavar="BYTES",
        help="largest REST request body (default 16 MiB)",
    )
    serve.add_argument(
        "--max-message",
        type=_positive_int,
        default=DEFAULTS.max_message_bytes,
        metavar="BYTES",
        help="largest WebSocket message from a client (default 16 MiB)",
    )
    serve.add_argument(
        "--queue-limit",
        type=_positive_int,
        default=DEFAULTS.immediate_bytes,
        metavar="BYTES",
        help="bytes an IMMEDIATE stream may queue before it drops packets "
        "(default 4 MiB)",
    )
    serve.add_argument(
        "--rpc-timeout",
        type=_positive_float,
        default=DEFAULTS.rpc_timeout,
        metavar="SECONDS",
        help="how long a REST RPC waits for its reply; a request's own "
        '"timeout" field overrides it (default 30)',
    )
    serve.add_argument(
        "--handshake-timeout",
        type=_positive_float,
        default=DEFAULTS.handshake_timeout,
        metavar="SECONDS",
        help="time a client has to send its HTTP request, or its JSON handshake "
        "after a WebSocket upgrade (default 10)",
    )
    serve.add_argument(
        "--ping-interval",
        type=_positive_float,
        default=DEFAULTS.ping_interval,
        metavar="SECONDS",
        help="WebSocket keepalive ping interval (default 20)",
    )
    serve.add_argument(
        "--ping-timeout",
        type=_positive_float,
        default=DEFAULTS.ping_timeout,
        metavar="SECONDS",
        help="drop a WebSocket whose pong is this late (default 20)",
    )
    serve.add_argument(
        "--max-connections",
        type=_positive_int,
        default=DEFAULTS.max_connections,
        metavar="N",
        help="open client connections allowed at once (default 4096)",
    )
    security = serve.add_argument_group("access")
    security.add_argument(
        "--token",
        default=os.environ.get("A0GW_TOKEN"),
        help="require this bearer token (Authorization header, or ?token= for "
        "WebSockets); default $A0GW_TOKEN",
    )
    security.add_argument(
        "--allow-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="origin allowed for WebSockets and CORS; repeat for several (default any)",
    )
    security.add_argument(
        "--read-only",
        action="store_true",
        help="refuse pub, write, rpc and prpc",
    )
    security.add_argument(
        "--allow-topic",
        action="append",
        default=[],
        metavar="GLOB",
        help="only topics and paths matching a glob are reachable; repeatable",
    )
    security.add_argument(
        "--deny-topic",
        action="append",
        default=[],
        metavar="GLOB",
        help="topics and paths matching a glob are refused; repeatable",
    )
    serve.add_argument(
        "--access-log", action="store_true", help="log one line per request"
    )
    serve.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `a0gw` command."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("a0gw.access").setLevel(
        logging.INFO if args.access_log else logging.WARNING
    )
    if args.log_level != "debug":
        logging.getLogger("a0gw.ws.protocol").setLevel(logging.WARNING)
    try:
        port = args.port if args.port is not None else _port_from_env()
        if not 0 <= port <= 65535:
            raise ConfigError(f"Invalid port: {port}")
    except ConfigError as exc:
        print(f"a0gw: {exc}", file=sys.stderr)
        sys.exit(2)

    config = Config(
        host=args.host,
        port=port,
        root=args.root or os.environ.get("A0_ROOT") or DEFAULT_ROOT,
        topic=os.environ.get("A0_TOPIC") or "api",
        max_body_bytes=args.max_body,
        max_message_bytes=args.max_message,
        immediate_bytes=args.queue_limit,
        rpc_timeout=args.rpc_timeout,
        handshake_timeout=args.handshake_timeout,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        max_connections=args.max_connections,
        token=args.token or None,
        origins=tuple(args.allow_origin or ("*",)),
        read_only=args.read_only,
        allow_topics=tuple(args.allow_topic),
        deny_topics=tuple(args.deny_topic),
        access_log=args.access_log,
    )

    from a0gw.server import run

    sys.exit(run(config))
