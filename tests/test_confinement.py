"""Confinement: no `path` or `topic` reaches outside the AlephZero root.

Also: files in the root that are not AlephZero files are refused, and the
gateway keeps serving afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import a0
import httpx
import pytest
from helpers import (
    TIMEOUT,
    Gateway,
    assert_serving,
    expect_close,
    handshake,
    read_file,
    recv_packet,
    ws_connect,
)
from websockets.exceptions import ConnectionClosed

OUTSIDE = "outside the AlephZero root"
NOT_A0 = "Not an AlephZero file"
PACKET = {"payload": "x"}


@pytest.fixture
def scratch() -> Iterator[str]:
    """A unique name for files outside the root: /tmp/t5-<hex> and the like."""
    name = f"t5-{uuid.uuid4().hex[:12]}"
    yield name
    for pattern in (f"/tmp/{name}*", f"/dev/shm/{name}*"):
        for path in glob.glob(pattern):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)


def contents_of(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def created_outside(name: str) -> list[str]:
    """Files or folders named after `name` in /tmp and /dev/shm (there must be none)."""
    return sorted(glob.glob(f"/tmp/{name}*") + glob.glob(f"/dev/shm/{name}*"))


def rest(gateway: Gateway, route: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT, trust_env=False) as client:
        return client.post(route, json=body)


def ws_refusal(gateway: Gateway, route: str, fields: dict[str, Any]) -> str:
    """The reason of the 4000 close that answers this handshake."""
    with ws_connect(gateway, route) as ws:
        handshake(ws, **fields)
        return expect_close(ws, 4000)


def rest_body(route: str, name_field: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = {name_field: name, "packet": PACKET}
    if route == "/api/rpc":
        body["timeout"] = 1
    return body


REST_PATH = ["/api/write"]
WS_PATH = ["/wsapi/read"]
REST_TOPIC = ["/api/pub", "/api/rpc"]
WS_TOPIC = ["/wsapi/sub", "/wsapi/prpc", "/wsapi/log"]


# --- `..` and absolute paths ---------------------------------------------------

ESCAPING_PATHS = [
    pytest.param("../{name}.a0", id="dotdot"),
    pytest.param("a/b/../../../{name}.a0", id="dotdot-nested"),
    pytest.param("./../{name}.pubsub.a0", id="dot-dotdot"),
    pytest.param("/tmp/{name}.a0", id="absolute-tmp"),
    pytest.param("/dev/shm/{name}.a0", id="absolute-shm"),
]


@pytest.mark.parametrize("template", ESCAPING_PATHS)
@pytest.mark.parametrize("route", REST_PATH + WS_PATH)
def test_path_outside_root_is_refused(
    gateway: Gateway, root: str, scratch: str, route: str, template: str
) -> None:
    path = template.format(name=scratch)
    if route.startswith("/api/"):
        response = rest(gateway, route, {"path": path, "packet": PACKET})
        assert response.status_code == 400
        reason = response.text
    else:
        reason = ws_refusal(gateway, route, {"path": path, "init": "OLDEST"})
    assert OUTSIDE in reason, reason
    assert created_outside(scratch) == []
    assert os.listdir(root) == ["api.deadman"]


ESCAPING_TOPICS = [
    pytest.param("../{name}", id="dotdot"),
    pytest.param("a/b/../../../{name}", id="dotdot-nested"),
    pytest.param("../../tmp/{name}", id="dotdot-to-tmp"),
]


@pytest.mark.parametrize("template", ESCAPING_TOPICS)
@pytest.mark.parametrize("route", REST_TOPIC + WS_TOPIC)
def test_topic_outside_root_is_refused(
    gateway: Gateway, root: str, scratch: str, route: str, template: str
) -> None:
    topic = template.format(name=scratch)
    if route.startswith("/api/"):
        response = rest(gateway, route, rest_body(route, "topic", topic))
        assert response.status_code == 400
        reason = response.text
    else:
        reason = ws_refusal(gateway, route, {"topic": topic})
    assert OUTSIDE in reason, reason
    assert created_outside(scratch) == []
    assert os.listdir(root) == ["api.deadman"]


@pytest.mark.parametrize("route", REST_TOPIC + WS_TOPIC)
def test_absolute_topic_is_refused(
    gateway: Gateway, root: str, scratch: str, route: str
) -> None:
    # AlephZero itself refuses topics that start with "/", with its own text.
    topic = f"/tmp/{scratch}"
    if route.startswith("/api/"):
        response = rest(gateway, route, rest_body(route, "topic", topic))
        assert response.status_code == 400
        reason = response.text
    else:
        reason = ws_refusal(gateway, route, {"topic": topic})
    assert reason == "Invalid topic name" or OUTSIDE in reason, reason
    assert created_outside(scratch) == []
    assert os.listdir(root) == ["api.deadman"]


# --- Directories ---------------------------------------------------------------


def test_write_to_root_dir_is_a_directory(gateway: Gateway, root: str) -> None:
    response = rest(gateway, "/api/write", {"path": "/", "packet": PACKET})
    assert response.status_code == 400
    assert response.text == "Is a directory"
    reason = ws_refusal(gateway, "/wsapi/read", {"path": "/"})
    assert reason == "Is a directory"
    assert os.listdir(root) == ["api.deadman"]


@pytest.mark.parametrize("path", ["..", "../..", "/tmp", "/etc"])
def test_directory_outside_root_is_refused_as_outside(
    gateway: Gateway, path: str
) -> None:
    response = rest(gateway, "/api/write", {"path": path, "packet": PACKET})
    assert response.status_code == 400
    assert OUTSIDE in response.text, response.text


# --- Symbolic links ------------------------------------------------------------


@pytest.fixture
def outside_dir(scratch: str) -> str:
    path = f"/tmp/{scratch}-dir"
    os.makedirs(path)
    return path


@pytest.mark.parametrize("route", REST_PATH + WS_PATH + REST_TOPIC + WS_TOPIC)
def test_symlinked_folder_pointing_out_is_refused(
    gateway: Gateway, root: str, outside_dir: str, route: str
) -> None:
    os.symlink(outside_dir, os.path.join(root, "out"))
    if route in REST_PATH:
        response = rest(gateway, route, {"path": "out/x.a0", "packet": PACKET})
        assert response.status_code == 400
        reason = response.text
    elif route in WS_PATH:
        reason = ws_refusal(gateway, route, {"path": "out/x.a0"})
    elif route in REST_TOPIC:
        response = rest(gateway, route, rest_body(route, "topic", "out/x"))
        assert response.status_code == 400
        reason = response.text
    else:
        reason = ws_refusal(gateway, route, {"topic": "out/x"})
    assert OUTSIDE in reason, reason
    assert os.listdir(outside_dir) == []


@pytest.mark.parametrize("route", REST_PATH + WS_PATH)
def test_symlinked_file_pointing_out_is_refused(
    gateway: Gateway, root: str, scratch: str, route: str
) -> None:
    # The target does not exist: following the link would create it.
    target = f"/tmp/{scratch}.a0"
    os.symlink(target, os.path.join(root, "link.a0"))
    if route in REST_PATH:
        response = rest(gateway, route, {"path": "link.a0", "packet": PACKET})
        assert response.status_code == 400
        reason = response.text
    else:
        reason = ws_refusal(gateway, route, {"path": "link.a0", "init": "OLDEST"})
    assert OUTSIDE in reason, reason
    assert not os.path.exists(target)


@pytest.mark.parametrize("route", ["/api/pub", "/wsapi/sub"])
def test_symlinked_topic_file_pointing_out_is_refused(
    gateway: Gateway, root: str, scratch: str, route: str
) -> None:
    target = f"/tmp/{scratch}.pubsub.a0"
    os.symlink(target, os.path.join(root, "lnk.pubsub.a0"))
    if route == "/api/pub":
        response = rest(gateway, route, {"topic": "lnk", "packet": PACKET})
        assert response.status_code == 400
        reason = response.text
    else:
        reason = ws_refusal(gateway, route, {"topic": "lnk"})
    assert OUTSIDE in reason, reason
    assert not os.path.exists(target)


def test_symlink_to_existing_file_outside_is_not_read_or_written(
    gateway: Gateway, root: str, scratch: str
) -> None:
    # A real AlephZero file outside the root, holding a secret.
    target = f"/tmp/{scratch}.a0"
    a0.Writer(a0.File(target)).write(a0.Packet([], "secret"))
    before = contents_of(target)
    os.symlink(target, os.path.join(root, "leak.pubsub.a0"))
    os.symlink(target, os.path.join(root, "leak.a0"))

    response = rest(gateway, "/api/write", {"path": "leak.a0", "packet": PACKET})
    assert response.status_code == 400 and OUTSIDE in response.text
    response = rest(gateway, "/api/pub", {"topic": "leak", "packet": PACKET})
    assert response.status_code == 400 and OUTSIDE in response.text
    for route, fields in [
        ("/wsapi/read", {"path": "leak.a0", "init": "OLDEST"}),
        ("/wsapi/sub", {"topic": "leak", "init": "OLDEST"}),
    ]:
        assert OUTSIDE in ws_refusal(gateway, route, fields)
    assert contents_of(target) == before
    assert [p.payload for p in read_file(target)] == [b"secret"]


def test_refused_dangling_symlink_leaves_gateway_usable(
    gateway: Gateway, root: str, scratch: str
) -> None:
    os.symlink(f"/tmp/{scratch}.pubsub.a0", os.path.join(root, "lnk.pubsub.a0"))
    response = rest(gateway, "/api/pub", {"topic": "lnk", "packet": PACKET})
    assert response.status_code == 400 and OUTSIDE in response.text
    response = rest(gateway, "/api/pub", {"topic": "fresh", "packet": PACKET})
    assert response.status_code == 200, response.text


# --- Files that are not AlephZero files ----------------------------------------


def foreign_contents(kind: str) -> bytes:
    if kind == "random":
        return os.urandom(8192)
    if kind == "text":
        return b"hello, this is not shared memory\n" * 100
    if kind == "short-header":
        return b"ALEPHZERO\x00" + b"\x00" * 50
    return b""  # empty


FOREIGN = ["random", "text", "short-header", "empty"]


@pytest.mark.parametrize("kind", FOREIGN)
@pytest.mark.parametrize("route", ["/api/write", "/wsapi/read"])
def test_foreign_file_at_path_is_refused(
    gateway: Gateway, root: str, route: str, kind: str
) -> None:
    contents = foreign_contents(kind)
    path = os.path.join(root, "foreign.a0")
    with open(path, "wb") as f:
        f.write(contents)
    if route == "/api/write":
        response = rest(gateway, route, {"path": "foreign.a0", "packet": PACKET})
        assert response.status_code == 400
        reason = response.text
    else:
        reason = ws_refusal(gateway, route, {"path": "foreign.a0", "init": "OLDEST"})
    assert reason.startswith(NOT_A0), reason
    assert contents_of(path) == contents
    assert_serving(gateway)


@pytest.mark.parametrize("kind", FOREIGN)
@pytest.mark.parametrize("route", ["/api/pub", "/wsapi/sub"])
def test_foreign_file_of_topic_is_refused(
    gateway: Gateway, root: str, route: str, kind: str
) -> None:
    contents = foreign_contents(kind)
    path = os.path.join(root, "t.pubsub.a0")
    with open(path, "wb") as f:
        f.write(contents)
    if route == "/api/pub":
        response = rest(gateway, route, {"topic": "t", "packet": PACKET})
        assert response.status_code == 400
        reason = response.text
    else:
        reason = ws_refusal(gateway, route, {"topic": "t", "init": "OLDEST"})
    assert reason.startswith(NOT_A0), reason
    assert contents_of(path) == contents
    assert_serving(gateway)


SPECIAL_FILE_OF_ROUTE = {
    "/api/write": "special.a0",
    "/wsapi/read": "special.a0",
    "/api/pub": "special.pubsub.a0",
    "/wsapi/sub": "special.pubsub.a0",
    "/api/rpc": "special.rpc.a0",
    "/wsapi/prpc": "special.prpc.a0",
    "/wsapi/log": "special.log.a0",
}


def make_special(path: str, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    else:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path)


@pytest.mark.parametrize("kind", ["fifo", "socket"])
@pytest.mark.parametrize("route", REST_PATH + WS_PATH + REST_TOPIC + WS_TOPIC)
def test_special_file_is_refused_without_stalling(
    gateway: Gateway, root: str, route: str, kind: str
) -> None:
    # Opening a FIFO for reading waits for a writer: the gateway must refuse
    # it without opening it, and keep serving everyone else.
    make_special(os.path.join(root, SPECIAL_FILE_OF_ROUTE[route]), kind)
    name_field = "path" if route in REST_PATH + WS_PATH else "topic"
    name = "special.a0" if name_field == "path" else "special"
    if route.startswith("/api/"):
        response = rest(gateway, route, rest_body(route, name_field, name))
        assert response.status_code == 400
        reason = response.text
    else:
        reason = ws_refusal(gateway, route, {name_field: name})
    assert reason.startswith(NOT_A0 + " (not a regular file)"), reason
    assert_serving(gateway)


def truncate_real_file(root: str, size: int) -> str:
    """A pubsub file AlephZero wrote, holding packets, then cut to `size` bytes."""
    publisher = a0.Publisher("cut")
    for _ in range(50):
        publisher.pub("y" * 1000)
    del publisher
    path = os.path.join(root, "cut.pubsub.a0")
    os.truncate(path, size)
    return path


@pytest.mark.parametrize("route", ["/api/pub", "/api/write"])
@pytest.mark.parametrize("size", [200, 4096])
def test_truncated_alephzero_file_is_refused_on_write(
    gateway: Gateway, root: str, route: str, size: int
) -> None:
    truncate_real_file(root, size)
    if route == "/api/pub":
        body: dict[str, Any] = {"topic": "cut", "packet": PACKET}
    else:
        body = {"path": "cut.pubsub.a0", "packet": PACKET}
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT, trust_env=False) as client:
        try:
            response = client.post(route, json=body)
        except httpx.TransportError as exc:
            pytest.fail(f"gateway died ({gateway.proc.wait(TIMEOUT)}): {exc!r}")
    assert response.status_code == 400
    assert response.text.startswith(NOT_A0), response.text
    assert_serving(gateway)


@pytest.mark.parametrize("route", ["/wsapi/sub", "/wsapi/read"])
def test_truncated_alephzero_file_is_refused_on_read(
    gateway: Gateway, root: str, route: str
) -> None:
    truncate_real_file(root, 4096)
    if route == "/wsapi/sub":
        fields: dict[str, Any] = {"topic": "cut"}
    else:
        fields = {"path": "cut.pubsub.a0"}
    # Short close timeout: the gateway does not answer the close of such a stream.
    with ws_connect(gateway, route, close_timeout=0.5) as ws:
        handshake(ws, init="OLDEST", response_encoding="base64", **fields)
        try:
            packet = recv_packet(ws)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 4000
            assert exc.rcvd.reason.startswith(NOT_A0), exc.rcvd.reason
        else:
            pytest.fail(f"streamed a packet of a truncated file: {packet['headers']}")
    assert_serving(gateway)
