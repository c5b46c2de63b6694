"""WebSocket /wsapi/discover: announcing AlephZero files, existing and new."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from typing import Any

import a0
import pytest
from helpers import (
    TIMEOUT,
    Gateway,
    assert_no_message,
    expect_close,
    handshake,
    ws_connect,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

SUFFIXES = {
    "pubsub": ".pubsub.a0",
    "rpc": ".rpc.a0",
    "prpc": ".prpc.a0",
    "log": ".log.a0",
    "cfg": ".cfg.a0",
}


def make(root: str, *relpaths: str) -> None:
    """Creates AlephZero files (relative to the root) as a peer would."""
    for relpath in relpaths:
        a0.File(relpath)
        assert os.path.isfile(os.path.join(root, relpath))


def recv_found(
    ws: ClientConnection, root: str, timeout: float = TIMEOUT
) -> dict[str, str]:
    """The next discovery message, checked for shape."""
    message = ws.recv(timeout=timeout)
    assert isinstance(message, str), "discoveries must come as text messages"
    found = json.loads(message)
    assert isinstance(found, dict)
    assert set(found) == {"abspath", "relpath", "topic"}
    assert all(isinstance(v, str) for v in found.values())
    assert found["abspath"] == os.path.join(root, found["relpath"])
    return found


def recv_exactly(ws: ClientConnection, root: str, count: int) -> list[dict[str, str]]:
    """The next `count` discovery messages, and then no more for a while."""
    found = [recv_found(ws, root) for _ in range(count)]
    assert_no_message(ws)
    return found


def recv_quiet(ws: ClientConnection, root: str) -> list[dict[str, str]]:
    """Every discovery message until none comes for a while."""
    out = []
    while True:
        try:
            out.append(recv_found(ws, root, timeout=0.3))
        except TimeoutError:
            return out


def recv_topics(ws: ClientConnection, root: str, count: int) -> Counter[str]:
    return Counter(f["topic"] for f in recv_exactly(ws, root, count))


def discover(ws: ClientConnection, **fields: Any) -> None:
    handshake(ws, **fields)


# --- Existing and new files ----------------------------------------------------


def test_discover_reports_existing_topics_at_each_depth(
    gateway: Gateway, root: str
) -> None:
    make(root, "a.pubsub.a0", "a/b.pubsub.a0", "a/b/c.pubsub.a0")
    with ws_connect(gateway, "/wsapi/discover") as ws:
        discover(ws, protocol="pubsub")
        found = recv_exactly(ws, root, 3)
    assert sorted((f["topic"], f["relpath"]) for f in found) == [
        ("a", "a.pubsub.a0"),
        ("a/b", "a/b.pubsub.a0"),
        ("a/b/c", "a/b/c.pubsub.a0"),
    ]


def test_discover_reports_topics_created_later(gateway: Gateway, root: str) -> None:
    make(root, "old.pubsub.a0")
    with ws_connect(gateway, "/wsapi/discover") as ws:
        discover(ws, protocol="pubsub", topic="**/*")
        assert recv_found(ws, root)["topic"] == "old"
        assert_no_message(ws)
        make(root, "x.pubsub.a0")
        assert recv_found(ws, root)["topic"] == "x"
        # New folders, one and two levels deep.
        make(root, "x/y.pubsub.a0")
        assert recv_found(ws, root)["topic"] == "x/y"
        make(root, "p/q/r.pubsub.a0")
        found = recv_found(ws, root)
        assert (found["topic"], found["relpath"]) == ("p/q/r", "p/q/r.pubsub.a0")
        assert found["abspath"] == os.path.join(root, "p", "q", "r.pubsub.a0")
        # Each file once, and nothing that is not a pubsub file.
        make(root, "p/q/r.rpc.a0", "x/other.a0")
        assert_no_message(ws)


def test_discover_reports_files_of_live_peers(gateway: Gateway, root: str) -> None:
    with ws_connect(gateway, "/wsapi/discover") as ws:
        discover(ws, protocol="rpc")
        assert_no_message(ws)
        server = a0.RpcServer(
            "robot/planner", lambda req: req.reply("x"), lambda _id: None
        )
        found = recv_found(ws, root)
        assert (found["topic"], found["relpath"]) == (
            "robot/planner",
            "robot/planner.rpc.a0",
        )
        a0.Publisher("robot/state").pub("x")
        a0.Logger("robot").info("x")
        assert_no_message(ws)
    del server


def test_discover_default_topic_is_every_depth(gateway: Gateway, root: str) -> None:
    make(root, "a.log.a0", "a/b.log.a0", "a/b/c.log.a0")
    with ws_connect(gateway, "/wsapi/discover") as ws:
        discover(ws, protocol="log")
        assert recv_topics(ws, root, 3) == Counter(["a", "a/b", "a/b/c"])
        make(root, "d/e/f/g.log.a0")
        assert recv_found(ws, root)["topic"] == "d/e/f/g"
        assert_no_message(ws)


# --- Globs ---------------------------------------------------------------------

EXISTING = ["a", "a/b", "a/b/c", "a/d", "e/b", "e/f/b"]


@pytest.mark.parametrize(
    "glob, expected",
    [
        pytest.param("**/*", EXISTING, id="everything"),
        pytest.param("*", ["a"], id="star-top-folder"),
        pytest.param("a/*", ["a/b", "a/d"], id="star-one-folder"),
        pytest.param("a/b/*", ["a/b/c"], id="star-deeper"),
        pytest.param("*/b", ["a/b", "e/b"], id="star-folder-name"),
        pytest.param("a/**/*", ["a/b", "a/b/c", "a/d"], id="double-star-under-a"),
        pytest.param("**/b", ["a/b", "e/b", "e/f/b"], id="double-star-name"),
        pytest.param("a/b", ["a/b"], id="exact"),
        pytest.param("zzz/*", [], id="no-match"),
    ],
)
def test_discover_filters_existing_by_glob(
    gateway: Gateway, root: str, glob: str, expected: list[str]
) -> None:
    make(root, *(f"{topic}.pubsub.a0" for topic in EXISTING))
    with ws_connect(gateway, "/wsapi/discover") as ws:
        discover(ws, protocol="pubsub", topic=glob)
        found = recv_topics(ws, root, len(expected))
    assert found == Counter(expected)


def test_discover_filters_new_files_by_glob(gateway: Gateway, root: str) -> None:
    make(root, "a/old.pubsub.a0")
    with ws_connect(gateway, "/wsapi/discover") as ws:
        discover(ws, protocol="pubsub", topic="a/*")
        assert recv_found(ws, root)["topic"] == "a/old"
        # Neither deeper, nor elsewhere, nor at the top.
        make(root, "a/b/c.pubsub.a0", "b/new.pubsub.a0", "a.pubsub.a0")
        make(root, "a/new.pubsub.a0")
        assert recv_found(ws, root)["topic"] == "a/new"
        assert_no_message(ws)


# --- Protocols -----------------------------------------------------------------


@pytest.mark.parametrize("protocol", sorted(SUFFIXES))
def test_discover_reports_only_files_of_its_protocol(
    gateway: Gateway, root: str, protocol: str
) -> None:
    make(root, *(f"p/x{suffix}" for suffix in SUFFIXES.values()), "p/x.a0")
    suffix = SUFFIXES[protocol]
    with ws_connect(gateway, "/wsapi/discover") as ws:
        discover(ws, protocol=protocol)
        found = recv_exactly(ws, root, 1)
        assert [(f["topic"], f["relpath"]) for f in found] == [("p/x", f"p/x{suffix}")]
        # New files too.
        make(root, *(f"q/y{s}" for s in SUFFIXES.values()))
        found = recv_found(ws, root)
        assert (found["topic"], found["relpath"]) == ("q/y", f"q/y{suffix}")
        assert_no_message(ws)


def test_discover_file_protocol_topic_is_relpath(gateway: Gateway, root: str) -> None:
    make(root, "notes/today.a0", "a/b.pubsub.a0", "a/b/c.rpc.a0")
    with ws_connect(gateway, "/wsapi/discover") as ws:
        discover(ws, protocol="file")
        # Other files (the gateway's deadman) may be reported too.
        expected = {"notes/today.a0", "a/b.pubsub.a0", "a/b/c.rpc.a0"}
        found = []
        while not expected <= {f["relpath"] for f in found}:
            found.append(recv_found(ws, root))
        found += recv_quiet(ws, root)
        for f in found:
            assert f["topic"] == f["relpath"]
        relpaths = Counter(f["relpath"] for f in found)
        assert all(relpaths[relpath] == 1 for relpath in expected), relpaths
        make(root, "n/e/w.cfg.a0")
        found_new = recv_found(ws, root)
        assert found_new["topic"] == found_new["relpath"] == "n/e/w.cfg.a0"


def test_discover_file_protocol_glob(gateway: Gateway, root: str) -> None:
    make(root, "notes/today.a0", "notes/deep/er.a0", "other/x.a0")
    with ws_connect(gateway, "/wsapi/discover") as ws:
        discover(ws, protocol="file", topic="notes/*")
        found = recv_exactly(ws, root, 1)
    assert [f["topic"] for f in found] == ["notes/today.a0"]


def test_discover_two_streams_are_independent(gateway: Gateway, root: str) -> None:
    make(root, "a.pubsub.a0", "a.rpc.a0")
    with (
        ws_connect(gateway, "/wsapi/discover") as pubsub,
        ws_connect(gateway, "/wsapi/discover") as rpc,
    ):
        discover(pubsub, protocol="pubsub")
        discover(rpc, protocol="rpc")
        assert recv_found(pubsub, root)["relpath"] == "a.pubsub.a0"
        assert recv_found(rpc, root)["relpath"] == "a.rpc.a0"
        make(root, "b.rpc.a0")
        assert recv_found(rpc, root)["relpath"] == "b.rpc.a0"
        assert_no_message(pubsub)


# --- Handshake errors ----------------------------------------------------------

HANDSHAKE_ERRORS = [
    pytest.param("not json", "Request must be json.", id="not-json"),
    pytest.param('["pubsub"]', "Request must be a json object.", id="array"),
    pytest.param(
        "{}", "Request missing required field: protocol", id="missing-protocol"
    ),
    pytest.param(
        {"topic": "**/*"},
        "Request missing required field: protocol",
        id="topic-without-protocol",
    ),
    pytest.param(
        {"protocol": "x"},
        "Request has unknown value for field: protocol  value: x",
        id="unknown-protocol",
    ),
    pytest.param(
        {"protocol": "PUBSUB"},
        "Request has unknown value for field: protocol  value: PUBSUB",
        id="uppercase-protocol",
    ),
    pytest.param(
        {"protocol": "pubsub", "scheduler": "LATER"},
        "Request has unknown value for field: scheduler  value: LATER",
        id="unknown-scheduler",
    ),
    pytest.param(
        {"protocol": 1},
        "Request field has incorrect format. field: protocol  error: type must be"
        " string, but is number",
        id="protocol-number",
    ),
]


@pytest.mark.parametrize("message, reason", HANDSHAKE_ERRORS)
def test_discover_bad_handshake_closes_4000(
    gateway: Gateway, message: object, reason: str
) -> None:
    with ws_connect(gateway, "/wsapi/discover") as ws:
        ws.send(message if isinstance(message, str) else json.dumps(message))
        expect_close(ws, 4000, reason)


def test_discover_second_handshake_closes_4000(gateway: Gateway, root: str) -> None:
    make(root, "a.pubsub.a0")
    with ws_connect(gateway, "/wsapi/discover") as ws:
        discover(ws, protocol="pubsub")
        assert recv_found(ws, root)["topic"] == "a"
        discover(ws, protocol="pubsub")
        expect_close(ws, 4000, "Handshake only allowed once per websocket.")


# --- Confinement ---------------------------------------------------------------


@pytest.fixture
def outside(root: str) -> Iterator[str]:
    """A folder next to the root, outside it, holding one pubsub file."""
    path = f"{root}-outside"
    os.makedirs(path)
    a0.File(os.path.join(path, "secret.pubsub.a0"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("glob", ["../{name}/*", "a/../../{name}/*"])
def test_discover_glob_does_not_reach_outside_root(
    gateway: Gateway, root: str, outside: str, glob: str
) -> None:
    make(root, "a/b.pubsub.a0")
    leaked = []
    topic = glob.format(name=os.path.basename(outside))
    with ws_connect(gateway, "/wsapi/discover") as ws:
        discover(ws, protocol="pubsub", topic=topic)
        try:
            while True:
                leaked.append(json.loads(ws.recv(timeout=0.5)))
        except TimeoutError:
            pass
        except ConnectionClosed as exc:
            # Refusing the glob is fine too.
            assert exc.rcvd is not None and exc.rcvd.code == 4000
    assert leaked == []
