"""Who may do what: token, origins, read-only mode, topic globs, confinement.

Every check raises a :class:`RequestFailed` subclass carrying the status and the
reason the client sees.  Nothing here does I/O beyond resolving paths.
"""

from __future__ import annotations

import hmac
import os
import posixpath
import re
from collections.abc import Iterable
from urllib.parse import parse_qs

from a0gw import _native
from a0gw.errors import ClientError, Forbidden, Unauthorized

# Tokens the native publish path can check: printable ASCII, no spaces.
_PLAIN_TOKEN = re.compile(r"[\x21-\x7e]+")


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compiles a topic glob: `*` and `?` stay inside a folder, `**` crosses them."""
    parts = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts) + r"\Z")


class AccessPolicy:
    """The access rules a gateway enforces; the defaults allow everything."""

    def __init__(
        self,
        token: str | None = None,
        origins: Iterable[str] = ("*",),
        read_only: bool = False,
        allow_topics: Iterable[str] = (),
        deny_topics: Iterable[str] = (),
    ) -> None:
        # A bearer token every request must carry, or None.
        self.token = token
        # Origins allowed for WebSocket upgrades and CORS; "*" allows any.
        self.origins = tuple(origins)
        # Refuse everything that writes to shared memory or calls a server.
        self.read_only = read_only
        self.allow_patterns = list(allow_topics)
        self.deny_patterns = list(deny_topics)
        self.allow = [glob_to_regex(p) for p in self.allow_patterns]
        self.deny = [glob_to_regex(p) for p in self.deny_patterns]

    # Public methods

    def native_rules(self) -> _native.AccessRules | None:
        """These rules for the native publish path, or None if it cannot apply them.

        The native path answers only what these rules certainly allow and
        leaves every refusal to Python.  It cannot help in read-only mode,
        where every publish is refused, and it compares tokens byte for byte,
        which agrees with :meth:`authorize` only for printable ASCII tokens.
        """
        if self.read_only:
            return None
        if self.token is not None and not _PLAIN_TOKEN.fullmatch(self.token):
            return None
        # An Origin header matches when its latin-1 text is an allowed origin.
        origins = []
        for origin in self.origins:
            try:
                origins.append(origin.encode("latin-1"))
            except UnicodeEncodeError:
                continue
        return _native.AccessRules(
            self.token, origins, self.allow_patterns, self.deny_patterns
        )

    def authorize(self, headers: Iterable[tuple[bytes, bytes]], target: str) -> None:
        """Checks the bearer token of a request.

        The token is taken from `Authorization: Bearer <token>`, or from the
        `token` query parameter, which is all a browser's WebSocket can send.

        Raises:
            Unauthorized: a token is required and this one is missing or wrong.
        """
        if self.token is None:
            return
        # Compared as UTF-8 bytes: that is how clients send a token outside
        # ASCII in a header, and how `token=` percent-escapes decode.
        offered = None
        for name, value in headers:
            if name.lower() == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    offered = credentials.strip()
        if offered is None:
            query = target.partition("?")[2]
            values = parse_qs(query).get("token")
            offered = values[0].encode() if values else None
        if offered is None:
            raise Unauthorized("Missing bearer token.")
        if not hmac.compare_digest(offered, self.token.encode()):
            raise Unauthorized("Invalid bearer token.")

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a request from `origin` (None: not a browser) may proceed."""
        return origin is None or "*" in self.origins or origin in self.origins

    def cors_origin(self, origin: str | None) -> bytes | None:
        """The Access-Control-Allow-Origin value for a request from `origin`."""
        if "*" in self.origins:
            return b"*"
        if origin is not None and origin in self.origins:
            return origin.encode("latin-1")
        return None

    def check_writable(self, what: str) -> None:
        """Raises Forbidden in read-only mode."""
        if self.read_only:
            raise Forbidden(f"The gateway is read-only: {what} is refused.")

    def check_topic(self, topic: str) -> None:
        """Raises Forbidden when the allow/deny globs exclude `topic`.

        The globs see the name as AlephZero will use it: `a//b`, `a/./b` and
        `x/../a/b` are all `a/b`.
        """
        name = posixpath.normpath(topic) if topic else topic
        if any(p.match(name) for p in self.deny) or (
            self.allow and not any(p.match(name) for p in self.allow)
        ):
            raise Forbidden(f"Access to topic {topic!r} is not allowed.")

    def check_path(self, path: str, templates: Iterable[str]) -> None:
        """Raises Forbidden when the globs exclude file `path` or its topic.

        A path is checked as it is and, when it is the file of a topic under
        one of the protocol `templates`, as that topic.
        """
        name = posixpath.normpath(path) if path else path
        self.check_topic(name)
        for template in templates:
            prefix, _, suffix = template.partition("{topic}")
            if (
                len(name) > len(prefix) + len(suffix)
                and name.startswith(prefix)
                and name.endswith(suffix)
            ):
                self.check_topic(name[len(prefix) : len(name) - len(suffix)])


def confine(root: str, relative: str) -> str:
    """The absolute path of `relative` under `root`, refused if it escapes.

    `relative` may also be an absolute path inside the root, as discovery
    reports them.  Symbolic links are followed before the check, so a link
    pointing out of the root is refused too.  A directory is reported as
    AlephZero does, since it cannot be opened as a file either way.

    Raises:
        ClientError: the path leaves the root, or names a directory.
    """
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, relative))
    if candidate == "/" or (candidate == real_root and os.path.isdir(candidate)):
        # The reference bridge's answer for "/", kept for compatibility.
        raise ClientError("Is a directory")
    if os.path.commonpath([real_root, candidate]) != real_root:
        raise ClientError(f"Path {relative!r} is outside the AlephZero root.")
    if os.path.isdir(candidate):
        raise ClientError("Is a directory")
    return candidate


def confine_topic(root: str, template: str, topic: str) -> None:
    """Refuses a topic whose file (from the protocol's template) leaves the root.

    Raises:
        ClientError: the topic's file would be outside the root.
    """
    if topic.startswith("/"):
        # AlephZero refuses these itself, with its own text.
        return
    path = template.replace("{topic}", topic)
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, path))
    if os.path.commonpath([real_root, candidate]) != real_root:
        raise ClientError(f"Topic {topic!r} is outside the AlephZero root.")
