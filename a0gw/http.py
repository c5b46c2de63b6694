"""HTTP/1.1 connections, parsed with h11.

One :class:`HttpConnection` per TCP connection.  It answers REST routes with
keep-alive and pipelining, and hands a WebSocket upgrade on a stream route to
:class:`a0gw.ws.WebSocketConnection`, which takes over the transport.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

import h11
from websockets.datastructures import Headers
from websockets.http11 import Request as WsRequest

from a0gw import _native, routes
from a0gw.errors import (
    ClientError,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestFailed,
    RequestTimeout,
    Unauthorized,
)
from a0gw.ws import WebSocketConnection

if TYPE_CHECKING:
    from a0gw.server import Gateway

# A documented state of h11 that its __all__ leaves out.
MIGHT_SWITCH_PROTOCOL = h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]

logger = logging.getLogger("a0gw.server")
access_logger = logging.getLogger("a0gw.access")

PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"Content-Type, Authorization"),
    (b"access-control-max-age", b"86400"),
]
SERVER_HEADER = (b"server", b"a0gw")
CLOSE_HEADER = (b"connection", b"close")
TOKEN_IN_QUERY = re.compile(r"([?&])token=[^&]*")
# The Python repr of the bytes h11 quotes in some of its errors, e.g.
# "illegal request line: bytearray(b'HELLO')": kept in the log, not sent.
QUOTED_BYTES = re.compile(r":\s*(?:bytearray\()?b['\"].*$", re.DOTALL)
# RFC 9110 §11.6.1: a 401 names the scheme the client must use.
AUTHENTICATE_HEADER = (b"www-authenticate", b'Bearer realm="a0gw"')


class HttpConnection(asyncio.Protocol):
    """Serves REST requests on one connection until it closes or upgrades."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.transport: asyncio.Transport | None = None
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=gateway.config.max_header_bytes
        )
        # The request being received, and its body so far.
        self.request: h11.Request | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        # Set once the body outgrew the limit: the rest of it is ignored.
        self.rejected = False
        # A route still working on the current request (an RPC awaiting its reply).
        self.pending: asyncio.Task[routes.Response] | None = None
        # Access-Control-Allow-Origin for the current request, if any.
        self.cors: bytes | None = b"*"
        # Fires when the client is too slow to send a request, or idles too long.
        self.timer: asyncio.TimerHandle | None = None
        # Bytes of a publish the native fast path waits to see whole, and how
        # many more of them it needs first.
        self.fast_buffer = bytearray()
        self.fast_needed = 0
        # Whether any request was answered on this connection yet.
        self.served = False

    # Transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if self.gateway.connection_count() >= self.gateway.config.max_connections:
            logger.warning(
                "Connection limit (%d) reached; refusing a connection",
                self.gateway.config.max_connections,
            )
            self._write_raw_response(503, "Too many connections.")
            return
        self.gateway.http_connections.add(self)
        self._start_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gateway.http_connections.discard(self)
        self._stop_timer()
        if self.pending is not None:
            self.pending.cancel()

    def data_received(self, data: bytes) -> None:
        fast = self.gateway.fast_pub
        if fast is not None and self._idle():
            data = self._fast_path(fast, data)
            if not data:
                return
        self.h11.receive_data(data)
        self._process()

    def _idle(self) -> bool:
        return (
            self.pending is None
            and self.h11.their_state is h11.IDLE
            and not self.h11.trailing_data[0]
        )

    def _fast_path(self, fast: _native.FastPub, data: bytes) -> bytes:
        """Lets the native path answer publishes; returns what is left for h11."""
        assert self.transport is not None
        if self.fast_buffer:
            self.fast_buffer += data
            if len(data) < self.fast_needed:
                # Looking again only once the request is whole keeps a large
                # body arriving in small pieces linear, not quadratic.
                self.fast_needed -= len(data)
                return b""
            data = bytes(self.fast_buffer)
            self.fast_buffer.clear()
        consumed, answered, responses, needed = fast.handle(data)
        if responses:
            self.transport.write(responses)
            self.served = True
            self._start_timer()
            if access_logger.isEnabledFor(logging.INFO):
                for _ in range(answered):
                    self._log_access("POST", "/api/pub", 200)
        rest = data[consumed:]
        if needed:
            # A publish still arriving: wait for the rest of it.
            self.fast_buffer += rest
            self.fast_needed = needed
            return b""
        return rest

    def eof_received(self) -> bool | None:
        self.h11.receive_data(b"")
        self._process()
        return None

    # Public methods

    def shutdown(self) -> None:
        """Closes the connection; a request still waiting gets a 503."""
        if self.transport is None:
            return
        if self.pending is not None:
            # Cancelling the route withdraws its RPC at the server.
            self.pending.cancel()
            self.pending = None
            self._respond(503, b"Gateway shutting down.", extra=[CLOSE_HEADER])
        self.transport.close()

    # Request processing

    def _process(self) -> None:
        assert self.transport is not None
        while not self.transport.is_closing() and self.pending is None:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._reject_malformed(exc)
                return

            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                if self.h11.their_state is MIGHT_SWITCH_PROTOCOL:
                    self._upgrade()
                # Otherwise a pipelined request waits for our response.
                return
            if isinstance(event, h11.Request):
                self.request = event
                self.body = []
                self.body_size = 0
                self.rejected = False
                if self._declared_body_size(event) > self.gateway.config.max_body_bytes:
                    # Refused from its Content-Length, before any of the body.
                    self._refuse_large_body()
                    return
                if self.h11.they_are_waiting_for_100_continue:
                    # RFC 9110 §10.1.1: tell the client to send its body.
                    continue_response = h11.InformationalResponse(
                        status_code=100, headers=[]
                    )
                    self.transport.write(self.h11.send(continue_response) or b"")
                if self._head_size(event) > self.gateway.config.max_header_bytes:
                    # h11 bounds only a head that arrives in pieces.
                    logger.warning(
                        "Request header over %d bytes refused",
                        self.gateway.config.max_header_bytes,
                    )
                    self._write_raw_response(431, "Request header is too large.")
                    return
            elif isinstance(event, h11.Data):
                self._receive_body(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._stop_timer()
                if self.h11.their_state is not MIGHT_SWITCH_PROTOCOL:
                    self._dispatch()
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return

    @staticmethod
    def _head_size(request: h11.Request) -> int:
        size = len(request.method) + len(request.target) + 12
        for name, value in request.headers:
            size += len(name) + len(value) + 4
        return size

    @staticmethod
    def _declared_body_size(request: h11.Request) -> int:
        """The Content-Length of `request` (h11 has checked it), or 0."""
        for name, value in request.headers:
            if name == b"content-length":
                return int(value)
        return 0

    def _receive_body(self, data: bytes) -> None:
        if self.rejected:
            return
        self.body_size += len(data)
        if self.body_size > self.gateway.config.max_body_bytes:
            self._refuse_large_body()
            return
        self.body.append(data)

    def _refuse_large_body(self) -> None:
        self.rejected = True
        self.body = []
        limit = self.gateway.config.max_body_bytes
        logger.warning("Request body over %d bytes refused", limit)
        # The client may still be sending: answer now and close.
        exc = PayloadTooLarge(f"Request body is larger than {limit} bytes.")
        self._respond(exc.status, exc.reason.encode(), extra=[CLOSE_HEADER])
        assert self.transport is not None
        self.transport.close()

    def _dispatch(self) -> None:
        request = self.request
        assert request is not None
        if self.rejected:
            return
        target = request.target.decode("ascii", "replace")
        path = target.partition("?")[0]
        method = request.method.decode("ascii", "replace")
        body = b"".join(self.body)
        self.body = []
        try:
            result = self._handle(method, path, body)
        except Exception as exc:  # noqa: BLE001 - _finish logs our own bugs.
            self._finish(method, target, None, exc)
            return
        if isinstance(result, routes.Response) or result is None:
            self._finish(method, target, result, None)
            return

        # The route awaits something (an RPC reply): answer when it is done,
        # then carry on with whatever the client pipelined meanwhile.
        async def complete() -> routes.Response:
            return await result

        self.pending = asyncio.ensure_future(complete())

        def on_done(task: asyncio.Task[routes.Response]) -> None:
            self.pending = None
            if task.cancelled():
                return
            self._finish(
                method,
                target,
                task.result() if not task.exception() else None,
                task.exception(),
            )
            if self.transport is not None and not self.transport.is_closing():
                self._process()

        self.pending.add_done_callback(on_done)

    def _finish(
        self,
        method: str,
        target: str,
        response: routes.Response | None,
        exc: BaseException | None,
    ) -> None:
        """Sends the response or the error of a finished route."""
        if isinstance(exc, RequestFailed):
            extra = None
            if isinstance(exc, MethodNotAllowed):
                extra = [(b"allow", ", ".join(exc.allow).encode())]
            elif isinstance(exc, Unauthorized):
                extra = [AUTHENTICATE_HEADER]
            self._respond(exc.status, exc.reason.encode(), extra=extra)
            self._log_access(method, target, exc.status)
        elif exc is not None:
            logger.error("Unexpected error on %s %s", method, target, exc_info=exc)
            self._respond(500, b"Internal server error")
            self._log_access(method, target, 500)
        elif response is not None:
            self._respond(response.status, response.body, response.content_type)
            self._log_access(method, target, response.status)
        self._next_cycle()

    def _handle(
        self, method: str, path: str, body: bytes
    ) -> routes.Response | Awaitable[routes.Response] | None:
        """Runs the route at `path`; None when the response was already sent."""
        assert self.request is not None
        origin = self._origin()
        self.cors = self.gateway.policy.cors_origin(origin)
        if not self.gateway.policy.origin_allowed(origin):
            raise Forbidden(f"Origin {origin} is not allowed.")
        if method == "OPTIONS":
            if path not in routes.REST_ROUTES and path not in routes.STREAM_ROUTES:
                raise NotFound(f"Unknown path: {path}")
            self._respond(204, b"", extra=PREFLIGHT_HEADERS)
            self._log_access(method, path, 204)
            return None
        if path in routes.STREAM_ROUTES:
            raise ClientError("This path needs a WebSocket upgrade.")
        route = routes.REST_ROUTES.get(path)
        if route is None:
            raise NotFound(f"Unknown path: {path}")
        expected, handler = route
        if method != expected and not (method == "HEAD" and expected == "GET"):
            raise MethodNotAllowed(
                f"Method {method} not allowed on {path}.", (expected, "OPTIONS")
            )
        self.gateway.policy.authorize(
            self.request.headers, self.request.target.decode("latin-1")
        )
        return handler(self.gateway.bridge, body)

    def _origin(self) -> str | None:
        assert self.request is not None
        for name, value in self.request.headers:
            if name == b"origin":
                return value.decode("latin-1")
        return None

    # WebSocket upgrade

    def _upgrade(self) -> None:
        assert self.transport is not None and self.request is not None
        request = self.request
        target = request.target.decode("ascii", "replace")
        path = target.partition("?")[0]
        opener = routes.STREAM_ROUTES.get(path)
        if opener is None:
            # Not a stream route: answer as plain HTTP and close.
            self._write_raw_response(404, f"No WebSocket route at {path}.")
            return
        if request.method != b"GET":
            method = request.method.decode("ascii", "replace")
            self._write_raw_response(405, f"Method {method} not allowed on {path}.")
            return

        origin = self._origin()
        self.cors = self.gateway.policy.cors_origin(origin)
        try:
            if not self.gateway.policy.origin_allowed(origin):
                raise Forbidden(f"Origin {origin} is not allowed.")
            self.gateway.policy.authorize(request.headers, target)
        except RequestFailed as exc:
            logger.warning("WebSocket upgrade on %s refused: %s", path, exc.reason)
            self._write_raw_response(exc.status, exc.reason)
            return

        headers = Headers(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers
        )
        trailing, _ = self.h11.trailing_data
        connection = WebSocketConnection(self.gateway, opener, path)
        self.gateway.http_connections.discard(self)
        self._stop_timer()
        connection.accept(
            self.transport, WsRequest(target, headers), trailing, self.cors
        )

    def _write_raw_response(self, status: int, text: str) -> None:
        """Answers outside h11's state machine, then closes."""
        assert self.transport is not None
        body = text.encode()
        reason = HTTPStatus(status).phrase
        extra = b": ".join(SERVER_HEADER) + b"\r\n"
        if self.cors is not None:
            extra += b"access-control-allow-origin: " + self.cors + b"\r\n"
        if status == Unauthorized.status:
            extra += b": ".join(AUTHENTICATE_HEADER) + b"\r\n"
        elif status == MethodNotAllowed.status:
            # Only stream routes are answered raw with 405: they take GET.
            extra += b"allow: GET\r\n"
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n"
        ).encode()
        self.transport.write(head + extra + b"\r\n" + body)
        self.transport.close()

    # Responses

    def _respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        assert self.transport is not None
        headers = [
            SERVER_HEADER,
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        if self.cors is not None:
            headers.append((b"access-control-allow-origin", self.cors))
            if self.cors != b"*":
                headers.append((b"vary", b"Origin"))
        if extra:
            headers.extend(extra)
        try:
            data = self.h11.send(
                h11.Response(
                    status_code=status,
                    headers=headers,
                    reason=HTTPStatus(status).phrase,
                )
            )
            assert data is not None
            if body and not (
                self.request is not None and self.request.method == b"HEAD"
            ):
                more = self.h11.send(h11.Data(data=body))
                assert more is not None
                data += more
            end = self.h11.send(h11.EndOfMessage())
            assert end is not None
            data += end
        except h11.LocalProtocolError:
            # The connection can no longer carry a response (already answered).
            self.transport.close()
            return
        self.transport.write(data)

    def _reject_malformed(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        logger.warning("Malformed HTTP request: %s", exc)
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            if status == 431:
                reason = "Request header is too large."
            else:
                reason = QUOTED_BYTES.sub("", str(exc))
            self._write_raw_response(status, reason)
        else:
            assert self.transport is not None
            self.transport.close()

    def _next_cycle(self) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.request = None
            self.served = True
            self._start_timer()
        elif (
            self.h11.our_state is h11.MUST_CLOSE
            or self.h11.their_state is h11.MUST_CLOSE
        ):
            self.transport.close()

    # Timeouts

    def _start_timer(self) -> None:
        self._stop_timer()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(
            self.gateway.config.handshake_timeout, self._on_timeout
        )

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timeout(self) -> None:
        self.timer = None
        assert self.transport is not None
        started = (
            self.h11.their_state is not h11.IDLE
            or self.h11.trailing_data[0]
            or self.fast_buffer
        )
        if not started and self.served:
            # An idle keep-alive connection: close it quietly.
            logger.debug("Closing an idle keep-alive connection")
            self.transport.close()
            return
        timeout = self.gateway.config.handshake_timeout
        logger.warning("Request not received within %g s; closing", timeout)
        exc = RequestTimeout(f"Request not received within {timeout:g} s.")
        self._write_raw_response(exc.status, exc.reason)

    def _log_access(self, method: str, target: str, status: int) -> None:
        if access_logger.isEnabledFor(logging.INFO):
            peer = self.transport.get_extra_info("peername") if self.transport else None
            client = f"{peer[0]}:{peer[1]}" if peer else "-"
            # A token in the query string stays out of the log.
            target = TOKEN_IN_QUERY.sub(r"\1token=***", target)
            access_logger.info('%s "%s %s" %d', client, method, target, status)
