"""Parsing and validating client requests.

REST bodies and WebSocket handshakes share one format: a JSON object whose
fields name a topic or path, an optional packet and options.  This module turns
the raw bytes into checked values or raises :class:`ClientError` with the
reference bridge's texts.  It does no I/O and touches no shared memory.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from a0gw import _native
from a0gw.errors import ClientError

T = TypeVar("T")

INIT_OPTIONS = {
    "OLDEST": _native.INIT_OLDEST,
    "MOST_RECENT": _native.INIT_MOST_RECENT,
    "AWAIT_NEW": _native.INIT_AWAIT_NEW,
}
ITER_OPTIONS = {"NEXT": _native.ITER_NEXT, "NEWEST": _native.ITER_NEWEST}
SCHEDULER_OPTIONS = {
    "IMMEDIATE": _native.SCHEDULER_IMMEDIATE,
    "ON_ACK": _native.SCHEDULER_ON_ACK,
    "ON_DRAIN": _native.SCHEDULER_ON_DRAIN,
}
ENCODING_OPTIONS = {"none": _native.ENCODING_NONE, "base64": _native.ENCODING_BASE64}

PAYLOAD_FIELD = "/packet/payload"

# Bounds on topic and path names: enough for any real tree, and they keep a
# client from making the gateway resolve or create absurdly deep folders.
MAX_NAME_BYTES = 1024
MAX_NAME_DEPTH = 64
HEADERS_FIELD = "/packet/headers"


def _reject_constant(name: str) -> Any:
    # JSON has no NaN or Infinity (RFC 8259 §6); Python's parser accepts them.
    raise ValueError(name)


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, as clients know them."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def bad_format(field: str, error: str) -> ClientError:
    """The error for a field that is present but unusable."""
    return ClientError(
        f"Request field has incorrect format. field: {field}  error: {error}"
    )


@dataclasses.dataclass
class Packet:
    """A packet as the client sent it; the payload is decoded natively."""

    headers: list[tuple[str, str]]
    payload: str | None
    # True when `payload` is base64 text to decode before publishing.
    base64: bool


class RequestMessage:
    """A parsed request: a JSON object with typed accessors for its fields."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    @classmethod
    def parse(cls, body: bytes | str) -> RequestMessage:
        """Parses a request body or handshake.

        Raises:
            ClientError: the body is not JSON or not a JSON object.
        """
        try:
            raw = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            # ValueError covers bad JSON and bad UTF-8; RecursionError covers
            # nesting deeper than the parser's stack.
            raise ClientError("Request must be json.") from None
        if not isinstance(raw, dict):
            raise ClientError("Request must be a json object.")
        return cls(raw)

    # Public methods

    def has(self, field: str) -> bool:
        """Whether `field` (a name or a /-separated JSON pointer) is present."""
        return self.lookup(field)[0]

    def require(self, field: str) -> None:
        """Raises ClientError when `field` is absent."""
        if not self.has(field):
            raise ClientError(f"Request missing required field: {field}")

    def string(self, field: str, default: str | None = None) -> str | None:
        """The string at `field`, or `default` when absent."""
        present, value = self.lookup(field)
        if not present:
            return default
        if not isinstance(value, str):
            raise bad_format(field, f"type must be string, but is {_json_type(value)}")
        return value

    def name(self, field: str, default: str | None = None) -> str | None:
        """The topic, path or glob at `field`: a string usable as a file name."""
        value = self.string(field, default)
        if value is not None:
            if "\x00" in value:
                raise bad_format(field, "must not contain NUL characters")
            try:
                encoded = value.encode()
            except UnicodeEncodeError:
                raise bad_format(field, "must be valid unicode") from None
            if len(encoded) > MAX_NAME_BYTES or value.count("/") >= MAX_NAME_DEPTH:
                raise bad_format(
                    field,
                    f"must be at most {MAX_NAME_BYTES} bytes "
                    f"and {MAX_NAME_DEPTH} folders deep",
                )
        return value

    def required_name(self, field: str) -> str:
        """The name at `field`, which must be present."""
        self.require(field)
        value = self.name(field)
        assert value is not None
        return value

    def boolean(self, field: str, default: bool) -> bool:
        """The boolean at `field`, or `default` when absent."""
        present, value = self.lookup(field)
        if not present:
            return default
        if not isinstance(value, bool):
            raise bad_format(field, f"type must be boolean, but is {_json_type(value)}")
        return value

    def option(self, field: str, options: Mapping[str, T], default: T) -> T:
        """The value `options` maps the string at `field` to.

        An absent field or an empty string gives `default`, as in the
        reference bridge.
        """
        name = self.string(field)
        if not name:
            return default
        if name not in options:
            raise ClientError(
                f"Request has unknown value for field: {field}  value: {name}"
            )
        return options[name]

    def packet(self, base64_default: bool = False) -> Packet:
        """The `packet` field with its headers and payload checked."""
        present, packet = self.lookup("packet")
        if present and not isinstance(packet, dict):
            raise bad_format(
                "/packet", f"type must be object, but is {_json_type(packet)}"
            )
        encoding = self.option(
            "request_encoding",
            ENCODING_OPTIONS,
            _native.ENCODING_BASE64 if base64_default else _native.ENCODING_NONE,
        )
        return Packet(
            headers=self._headers(),
            payload=self.string(PAYLOAD_FIELD),
            base64=encoding == _native.ENCODING_BASE64,
        )

    def response_encoding(self) -> int:
        """The encoding asked for payloads sent back to the client."""
        return self.option("response_encoding", ENCODING_OPTIONS, _native.ENCODING_NONE)

    def lookup(self, field: str) -> tuple[bool, Any]:
        """(present, value) of `field`, a name or a /-separated JSON pointer."""
        node: Any = self.raw
        for part in field.strip("/").split("/"):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node

    # Private methods

    def _headers(self) -> list[tuple[str, str]]:
        present, headers = self.lookup(HEADERS_FIELD)
        if not present:
            return []
        expected = "type must be array of [string, string] pairs"
        if not isinstance(headers, list):
            raise bad_format(HEADERS_FIELD, f"{expected}, but is {_json_type(headers)}")
        out = []
        for index, pair in enumerate(headers):
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not isinstance(pair[0], str)
                or not isinstance(pair[1], str)
            ):
                raise bad_format(HEADERS_FIELD, f"{expected}; entry {index} is not")
            out.append((pair[0], pair[1]))
        return out


@dataclasses.dataclass
class StreamRequest:
    """A checked handshake for a packet stream (sub, read, log)."""

    name: str  # The topic, or the path for /wsapi/read.
    init: int
    iter: int
    # Integer init: the first a0_transport_seq to deliver.
    seq_min: int | None
    scheduler: int
    encoding: int


def parse_stream_request(message: RequestMessage, name_field: str) -> StreamRequest:
    """Reads the options shared by every packet stream from a handshake.

    `name_field` is "topic" or "path", whichever the route needs.
    """
    encoding = message.response_encoding()
    name = message.required_name(name_field)
    iter_ = message.option("iter", ITER_OPTIONS, _native.ITER_NEXT)

    # `init` is a name, or the a0_transport_seq to resume from.
    seq_min = None
    present, init_value = message.lookup("init")
    if (
        present
        and isinstance(init_value, (int, float))
        and not isinstance(init_value, bool)
    ):
        if not isinstance(init_value, int) or not 0 <= init_value < 2**64:
            raise bad_format(
                "init", "a sequence number must be an integer from 0 to 2**64-1"
            )
        seq_min = init_value
        # Read from the start and skip what is older than seq_min; with NEWEST,
        # start at the most recent packet instead.
        init = (
            _native.INIT_OLDEST
            if iter_ == _native.ITER_NEXT
            else _native.INIT_MOST_RECENT
        )
    else:
        init = message.option("init", INIT_OPTIONS, _native.INIT_AWAIT_NEW)

    scheduler = message.option(
        "scheduler", SCHEDULER_OPTIONS, _native.SCHEDULER_ON_DRAIN
    )
    return StreamRequest(
        name=name,
        init=init,
        iter=iter_,
        seq_min=seq_min,
        scheduler=scheduler,
        encoding=encoding,
    )
