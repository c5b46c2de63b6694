"""The gateway's handle on AlephZero, shared by every route."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from a0gw import _native
from a0gw.policy import AccessPolicy, confine, confine_topic


class StreamListener(Protocol):
    """Whoever sends a stream's frames on: a WebSocket or a pending RPC."""

    def on_stream_ready(self) -> None:
        """The stream has frames (or a close) to take."""


@dataclasses.dataclass(frozen=True)
class StreamLimits:
    """Per-connection bounds on frames queued between AlephZero and a socket."""

    # ON_DRAIN: the AlephZero reader waits while this many bytes are unsent.
    drain_bytes: int = 256 * 1024
    # IMMEDIATE: packets arriving while this many bytes are queued are dropped.
    immediate_bytes: int = 4 * 1024 * 1024


class Bridge:
    """What routes need to reach AlephZero: root, publishers and the hub."""

    def __init__(
        self,
        root: str,
        limits: StreamLimits,
        rpc_timeout: float,
        policy: AccessPolicy | None = None,
    ) -> None:
        self.root = root
        self.limits = limits
        self.policy = policy or AccessPolicy()
        # File-name template of each protocol, e.g. "{topic}.pubsub.a0".
        self.templates: dict[str, str] = _native.topic_templates()
        # Seconds a REST RPC waits for its reply unless the request says.
        self.rpc_timeout = rpc_timeout
        # Frames of every stream reach the event loop through this one hub.
        self.hub = _native.Hub()
        # Stream id to whoever takes that stream's frames.
        self.listeners: dict[int, StreamListener] = {}
        self.publishers = _native.PublisherCache()
        self.rpc_clients = _native.RpcClients()
        self._next_stream_id = 0

    def dispatch_ready(self) -> None:
        """Tells the listener of every stream the hub marked ready."""
        for stream_id in self.hub.take_ready():
            listener = self.listeners.get(stream_id)
            if listener is not None:
                listener.on_stream_ready()

    def checked_topic(self, protocol: str, topic: str) -> str:
        """`topic` once the policy allows it and its file stays under the root.

        Raises:
            ClientError: the topic's file would leave the root.
            Forbidden: the topic globs exclude it.
        """
        self.policy.check_topic(topic)
        confine_topic(self.root, self.templates[protocol], topic)
        return topic

    def checked_path(self, path: str) -> str:
        """The absolute path of file `path`, once allowed and confined to the root."""
        self.policy.check_path(path, self.templates.values())
        return confine(self.root, path)

    def stream_options(
        self,
        scheduler: int,
        encoding: int,
        seq_min: int | None = None,
        newest_only: bool = False,
        skips_to_newest: bool = False,
        report_gaps: bool = False,
    ) -> _native.StreamOptions:
        """Native stream options with this gateway's queue bounds.

        A reader that skips to the newest packet (ITER_NEWEST) under ON_DRAIN
        waits until each frame has been handed to the socket, so a slow client
        gets the newest packet next rather than a queue of older ones.
        """
        return _native.StreamOptions(
            scheduler=scheduler,
            encoding=encoding,
            seq_min=seq_min,
            drain_bytes=1 if skips_to_newest else self.limits.drain_bytes,
            immediate_bytes=self.limits.immediate_bytes,
            newest_only=newest_only,
            report_gaps=report_gaps,
        )

    def new_stream_id(self) -> int:
        """A stream id unique within this process."""
        self._next_stream_id += 1
        return self._next_stream_id
