"""GET /api/ls: listing the AlephZero files under the root."""

from __future__ import annotations

import os

import a0
import httpx


def test_ls_empty_root_is_empty_list(http: httpx.Client, root: str) -> None:
    # The gateway's own deadman file is not an *.a0 file.
    response = http.get("/api/ls")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == []


def test_ls_lists_files_of_a0_peers_sorted(http: httpx.Client, root: str) -> None:
    a0.File("bbb/ddd.rpc.a0")
    a0.Publisher("aaa/bbb").pub("x")
    a0.File("zzz.a0")
    a0.File("aaa/aaa/deep/er.cfg.a0")
    response = http.get("/api/ls")
    assert response.status_code == 200
    assert response.json() == [
        "aaa/aaa/deep/er.cfg.a0",
        "aaa/bbb.pubsub.a0",
        "bbb/ddd.rpc.a0",
        "zzz.a0",
    ]


def test_ls_lists_files_made_through_the_gateway(http: httpx.Client) -> None:
    assert http.post(
        "/api/pub", json={"topic": "t/u", "packet": {"payload": "x"}}
    ).is_success
    assert http.post(
        "/api/write", json={"path": "w.a0", "packet": {"payload": "x"}}
    ).is_success
    assert http.get("/api/ls").json() == ["t/u.pubsub.a0", "w.a0"]


def test_ls_ignores_other_files(http: httpx.Client, root: str) -> None:
    os.makedirs(os.path.join(root, "sub"))
    for name in ("notes.txt", "sub/x.a0.bak", "sub/a0", "sub/.a0x"):
        with open(os.path.join(root, name), "w") as f:
            f.write("x")
    os.makedirs(os.path.join(root, "empty-dir.a0"))
    a0.File("sub/real.a0")
    assert http.get("/api/ls").json() == ["sub/real.a0"]


def test_ls_sees_new_files(http: httpx.Client) -> None:
    assert http.get("/api/ls").json() == []
    a0.File("one.a0")
    assert http.get("/api/ls").json() == ["one.a0"]
    a0.File("a/two.a0")
    assert http.get("/api/ls").json() == ["a/two.a0", "one.a0"]
