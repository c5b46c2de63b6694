"""The gateway's handle on AlephZero, shared by every route."""

from __future__ import annotations

import dataclasses

from a0gw import _native


@dataclasses.dataclass(frozen=True)
class StreamLimits:
    """Per-connection bounds on frames queued between AlephZero and a socket."""

    # ON_DRAIN: the AlephZero reader waits while this many bytes are unsent.
    drain_bytes: int = 256 * 1024
    # IMMEDIATE: packets arriving while this many bytes are queued are dropped.
    immediate_bytes: int = 4 * 1024 * 1024


class Bridge:
    """What routes need to reach AlephZero: root, publishers and the hub."""

    def __init__(self, root: str, limits: StreamLimits) -> None:
        self.root = root
        self.limits = limits
        # Frames of every stream reach the event loop through this one hub.
        self.hub = _native.Hub()
        self.publishers = _native.PublisherCache()
        self._next_stream_id = 0

    def new_stream_id(self) -> int:
        """A stream id unique within this process."""
        self._next_stream_id += 1
        return self._next_stream_id
