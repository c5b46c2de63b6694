"""Native core of a0gw: AlephZero access, frame building and encodings."""

INIT_OLDEST: int
INIT_MOST_RECENT: int
INIT_AWAIT_NEW: int
ITER_NEXT: int
ITER_NEWEST: int
SCHEDULER_IMMEDIATE: int
SCHEDULER_ON_ACK: int
SCHEDULER_ON_DRAIN: int
ENCODING_NONE: int
ENCODING_BASE64: int

class AlephZeroError(RuntimeError): ...
class InvalidBase64(ValueError): ...
class PacketTooLarge(ValueError): ...
class NoSpace(OSError): ...

def b64encode(data: bytes) -> bytes: ...
def b64decode(text: str | bytes) -> bytes: ...

class Hub:
    def __init__(self) -> None: ...
    @property
    def fd(self) -> int: ...
    def take_ready(self) -> list[int]: ...

class StreamOptions:
    def __init__(
        self,
        scheduler: int,
        encoding: int,
        seq_min: int | None = None,
        drain_bytes: int = ...,
        immediate_bytes: int = ...,
        newest_only: bool = False,
        report_gaps: bool = False,
    ) -> None: ...

class Stream:
    @property
    def id(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def delivered(self) -> int: ...
    def take(self) -> tuple[bytes | memoryview, int, str]: ...
    def flush(self, socket_idle: bool) -> tuple[bytes | memoryview, int, str]: ...
    def attach_socket(self, fd: int) -> None: ...
    def hold(self) -> bytes | memoryview: ...
    def ack(self) -> None: ...
    def close(self) -> None: ...

def open_subscriber(
    hub: Hub, id: int, topic: str, init: int, iter: int, options: StreamOptions
) -> Stream: ...
def open_reader(
    hub: Hub, id: int, path: str, init: int, iter: int, options: StreamOptions
) -> Stream: ...
def open_log_listener(
    hub: Hub,
    id: int,
    topic: str,
    level: int,
    init: int,
    iter: int,
    options: StreamOptions,
) -> Stream: ...
def open_prpc(
    hub: Hub,
    id: int,
    topic: str,
    headers: list[tuple[str, str]],
    payload: bytes,
    base64: bool,
    options: StreamOptions,
) -> Stream: ...
def open_discovery(
    hub: Hub, id: int, root: str, template: str, topic: str, options: StreamOptions
) -> Stream: ...
def topic_templates() -> dict[str, str]: ...

class RpcClients:
    def __init__(self, capacity: int = 256) -> None: ...
    def call(
        self,
        hub: Hub,
        id: int,
        topic: str,
        headers: list[tuple[str, str]],
        payload: bytes,
        base64: bool,
        encoding: int,
    ) -> tuple[Stream, str]: ...
    def cancel(self, topic: str, request_id: str) -> None: ...

class PublisherCache:
    def __init__(self, capacity: int = 256) -> None: ...
    def publish(
        self, topic: str, headers: list[tuple[str, str]], payload: bytes, base64: bool
    ) -> None: ...

class AccessRules:
    def __init__(
        self,
        token: str | None,
        origins: list[bytes],
        allow_topics: list[str],
        deny_topics: list[str],
    ) -> None: ...

class FastPub:
    def __init__(
        self,
        publishers: PublisherCache,
        rules: AccessRules,
        max_body_bytes: int,
        max_header_bytes: int,
    ) -> None: ...
    def handle(self, data: bytes) -> tuple[int, int, bytes, int]: ...

def write_file(
    path: str,
    headers: list[tuple[str, str]],
    payload: bytes,
    base64: bool,
    standard_headers: bool,
) -> None: ...

class Deadman:
    def __init__(self, topic: str) -> None: ...
    def take(self) -> None: ...
    def try_take(self) -> bool: ...
    def release(self) -> None: ...
