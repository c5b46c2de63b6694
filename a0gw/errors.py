"""Exceptions of a0gw.

Every exception the gateway raises on purpose derives from :class:`GatewayError`.
:class:`RequestFailed` ends a request with a reason for the client; each kind
knows the HTTP status and WebSocket close code that report it at the edge.
:class:`ClientError` and its subclasses are the client's mistakes.  Anything
else reaching a connection handler is our own bug: it is logged with its
traceback and answered with 500 or close code 1011, without details.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of the exceptions a0gw raises."""


class RequestFailed(GatewayError):
    """A request that ends with a status and a reason shown to the client."""

    status = 400
    close_code = 4000

    def __init__(self, reason: str) -> None:
        # A reason may quote client input that is not valid unicode (a lone
        # surrogate); escape it so the reason can always be sent.
        reason = reason.encode("utf-8", "backslashreplace").decode()
        super().__init__(reason)
        self.reason = reason


class ClientError(RequestFailed):
    """A request the client got wrong."""


class Unauthorized(ClientError):
    """A bearer token is required and was missing or wrong."""

    status = 401
    close_code = 4001


class Forbidden(ClientError):
    """The gateway's policy refuses this (read-only mode, topic globs, origin)."""

    status = 403
    close_code = 4003


class RequestTimeout(ClientError):
    """The client took too long to send its request or handshake."""

    status = 408


class UpstreamTimeout(RequestFailed):
    """An AlephZero server did not answer in time."""

    status = 504


class NotFound(ClientError):
    """No route at this path."""

    status = 404


class MethodNotAllowed(ClientError):
    """The route exists but not for this method."""

    status = 405

    def __init__(self, reason: str, allow: tuple[str, ...]) -> None:
        super().__init__(reason)
        self.allow = allow


class PayloadTooLarge(ClientError):
    """A body or message above the configured limit."""

    status = 413
    close_code = 1009


class InsufficientStorage(RequestFailed):
    """The AlephZero root's file system has no room for a write (full /dev/shm)."""

    status = 507
    close_code = 1011


class ConfigError(GatewayError):
    """A command-line option or environment variable with an unusable value."""
