"""The gateway process: listening socket, event loop, deadman and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import threading

from a0gw import _native
from a0gw.bridge import Bridge, StreamLimits
from a0gw.config import Config
from a0gw.http import HttpConnection
from a0gw.policy import AccessPolicy
from a0gw.ws import CLOSE_GOING_AWAY, WebSocketConnection

logger = logging.getLogger("a0gw.server")


# Seconds shutdown waits for WebSocket clients to complete the closing handshake.
SHUTDOWN_GRACE = 1.0


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class DeadmanHolder:
    """Takes and releases the AlephZero deadman of a topic on its own thread.

    AlephZero's deadman is a robust mutex: only the thread that took it may
    release it, and taking it blocks while another process holds it.  One
    thread does both, so the event loop never blocks and the release is valid.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._release = threading.Event()
        self._thread: threading.Thread | None = None

    async def take(self) -> None:
        """Returns once the deadman is held."""
        loop = asyncio.get_running_loop()
        taken: asyncio.Future[None] = loop.create_future()

        def hold() -> None:
            deadman = _native.Deadman(self.topic)
            if not deadman.try_take():
                logger.warning(
                    "Deadman of topic %r is held by another process; waiting",
                    self.topic,
                )
                deadman.take()
            with contextlib.suppress(RuntimeError):  # The loop already closed.
                loop.call_soon_threadsafe(_resolve, taken)
            self._release.wait()
            deadman.release()

        self._thread = threading.Thread(target=hold, name="a0gw-deadman", daemon=True)
        self._thread.start()
        await taken

    def release(self) -> None:
        """Releases the deadman if it was taken; stops waiting for it if not."""
        self._release.set()
        if self._thread is not None:
            # A thread still waiting for another holder is left behind: it
            # is a daemon and ends with the process.
            self._thread.join(timeout=1.0)


class Gateway:
    """Serves the AlephZero API on one port until told to stop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.policy = AccessPolicy(
            token=config.token,
            origins=config.origins,
            read_only=config.read_only,
            allow_topics=config.allow_topics,
            deny_topics=config.deny_topics,
        )
        self.bridge = Bridge(
            config.root,
            StreamLimits(
                drain_bytes=config.drain_bytes, immediate_bytes=config.immediate_bytes
            ),
            rpc_timeout=config.rpc_timeout,
            policy=self.policy,
        )
        # The native publish path, unless the policy refuses every publish.
        self.fast_pub: _native.FastPub | None = None
        rules = self.policy.native_rules()
        if rules is not None:
            self.fast_pub = _native.FastPub(
                self.bridge.publishers,
                rules,
                config.max_body_bytes,
                config.max_header_bytes,
            )
        # Live connections, so shutdown can close them.
        self.http_connections: set[HttpConnection] = set()
        self.ws_connections: set[WebSocketConnection] = set()
        self.stopping = asyncio.Event()

    # Public methods

    async def serve(self) -> None:
        """Listens, takes the deadman, and serves until stop() is called.

        Raises:
            OSError: the port cannot be bound.
        """
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: HttpConnection(self), self.config.host, self.config.port
        )
        loop.add_reader(self.bridge.hub.fd, self.bridge.dispatch_ready)
        self._log_listening(server)
        deadman = DeadmanHolder(self.config.topic)
        taken = asyncio.ensure_future(deadman.take())
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({taken, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if taken.done():
                logger.info("Holding the deadman of topic %r", self.config.topic)
            await stopping
            logger.info("Shutting down")
        finally:
            taken.cancel()
            stopping.cancel()
            server.close()
            loop.remove_reader(self.bridge.hub.fd)
            await self._close_connections()
            deadman.release()
            await server.wait_closed()
        logger.info("Stopped")

    def connection_count(self) -> int:
        """Open client connections, HTTP and WebSocket."""
        return len(self.http_connections) + len(self.ws_connections)

    def stop(self) -> None:
        """Asks serve() to return; safe to call from a signal handler."""
        self.stopping.set()

    # Private methods

    async def _close_connections(self) -> None:
        for ws in list(self.ws_connections):
            ws.close(CLOSE_GOING_AWAY, "Gateway shutting down.")
        for http in list(self.http_connections):
            http.shutdown()

        # Give the close frames, queued behind whatever the sockets still had
        # to send, a moment to leave; then drop what is left.
        deadline = asyncio.get_running_loop().time() + SHUTDOWN_GRACE
        while self.ws_connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for ws in list(self.ws_connections):
            ws.abort()

    def _log_listening(self, server: asyncio.Server) -> None:
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            logger.info(
                "Listening on http://%s:%d (AlephZero root %s)",
                host,
                port,
                self.config.root,
            )
        if self.config.host in ("127.0.0.1", "localhost", "::1"):
            logger.info(
                "Only local clients can connect; "
                "use --host 0.0.0.0 to listen on all interfaces"
            )
        elif self.config.token is None:
            logger.warning(
                "Listening beyond this machine without --token: anyone can connect"
            )


def _raise_file_limit() -> None:
    # Each connection is a descriptor and each stream maps a file: lift the soft
    # limit to the hard one so --max-connections, not the shell, is the bound.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(config: Config) -> int:
    """Runs a gateway with uvloop until SIGTERM or SIGINT; returns the exit status."""
    import uvloop

    _raise_file_limit()
    os.environ["A0_ROOT"] = config.root
    os.environ["A0_TOPIC"] = config.topic
    try:
        os.makedirs(config.root, exist_ok=True)
    except OSError as exc:
        logger.error(
            "Cannot use %s as the AlephZero root: %s", config.root, exc.strerror
        )
        return 1
    if not os.path.isdir(config.root):
        logger.error(
            "Cannot use %s as the AlephZero root: not a directory", config.root
        )
        return 1

    async def main() -> int:
        gateway = Gateway(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gateway.stop)
        try:
            await gateway.serve()
        except OSError as exc:
            logger.error(
                "Cannot listen on %s:%d: %s",
                config.host,
                config.port,
                exc.strerror or exc,
            )
            return 1
        return 0

    return uvloop.run(main())
