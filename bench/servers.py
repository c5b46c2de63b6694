"""Processes the harness runs or measures: gateways, the canned sender, peers."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlsplit

# The folder that holds the `bench` package: helper processes run from it so
# `python -m bench.xxx` resolves, and import nothing else from it.
PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
DEFAULT_ROOT = "/dev/shm/alephzero"


def parse_cpus(text: str | None) -> set | None:
    """'0', '0,1' or '0-3' as a set of CPU numbers; None stays None.

    Raises ValueError for anything else, or for CPUs this process may not use.
    """
    if not text:
        return None
    cpus: set = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"not a CPU list: {text!r} (e.g. 0, 0,1 or 0-3)") from None
        cpus.update(range(first, last + 1))
    usable = os.sched_getaffinity(0)
    if not cpus or not cpus <= usable:
        raise ValueError(
            f"CPUs {text!r} are not all available here "
            f"(usable: {', '.join(map(str, sorted(usable)))})"
        )
    return cpus


def die_with_parent() -> None:
    """In a child about to exec: have the kernel send it SIGTERM when the
    harness dies, however it dies, so no gateway or peer outlives a run."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def pin(pid: int, cpus: set | None) -> None:
    """Pins a child that was just started to `cpus`.

    Popen returns once the child has exec'd, before a new Python process has
    started any thread, so every thread it starts later inherits the mask.
    """
    if cpus:
        os.sched_setaffinity(pid, cpus)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen | None = None
) -> None:
    end = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"server exited with status {proc.returncode} before listening"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > end:
                raise RuntimeError(
                    f"nothing listens on {host}:{port} after {timeout:g} s"
                ) from None
            time.sleep(0.05)


@dataclasses.dataclass
class Target:
    """A server under test."""

    label: str
    host: str
    port: int
    root: str
    pid: int | None = None
    proc: subprocess.Popen | None = None
    log_path: str | None = None
    temp_root: bool = False
    version: str | None = None
    # Bearer token the server wants, sent with every request.
    token: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_path(self, path: str) -> str:
        """`path` for a WebSocket upgrade, with the token as browsers send it."""
        return f"{path}?token={quote(self.token)}" if self.token else path

    def describe(self) -> dict:
        return {
            "label": self.label,
            "url": self.url,
            "root": self.root,
            "pid": self.pid,
            "started_by_harness": self.proc is not None,
            "version": self.version,
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.temp_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None


def check_external(target: Target, topic: str, timeout: float = 5.0) -> None:
    """Publishes one packet on `topic` through `target` and checks that it
    lands under the root the harness was told, so a wrong --root, an
    unreachable server or a wrong token fails here, with the reason, and not
    as a run of zeros.

    Raises SystemExit with what is wrong.
    """
    name = f"server {target.label} ({target.url})"
    body = json.dumps({"topic": topic, "packet": {"payload": "root check"}})
    headers = {"Content-Type": "application/json"}
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        conn.request("POST", "/api/pub", body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode(errors="replace")
    except OSError as exc:
        raise SystemExit(f"{name}: cannot reach it: {exc}") from None
    finally:
        conn.close()
    if response.status != 200:
        hint = " (give its token with --token or --compare-token)"
        raise SystemExit(
            f"{name}: POST /api/pub answered {response.status} {text!r}"
            f"{hint if response.status == 401 else ''}"
        )
    template = os.environ.get("A0_TOPIC_TMPL_PUBSUB", "{topic}.pubsub.a0")
    path = os.path.join(target.root, template.replace("{topic}", topic))
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise SystemExit(
                f"{name}: a packet it published is not under {target.root} "
                f"(no {path}): is that its AlephZero root? Pass the server's "
                "A0_ROOT with --root (or --compare-root)."
            )
        time.sleep(0.05)


def parse_url(url: str) -> tuple:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "ws"):
        raise ValueError(f"unsupported URL scheme in {url!r} (use http://HOST:PORT)")
    return parts.hostname or "127.0.0.1", parts.port or 80


def external_target(
    label: str, url: str, root: str | None, pid: int | None, token: str | None = None
) -> Target:
    host, port = parse_url(url)
    return Target(
        label,
        host,
        port,
        root or os.environ.get("A0_ROOT") or DEFAULT_ROOT,
        pid=pid,
        token=token,
    )


def start_gateway(
    label: str, out_dir: Path, serve_args: list, cpus: set | None = None
) -> Target:
    """Starts `a0gw serve` on a free port with a fresh root under /dev/shm."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = tempfile.mkdtemp(prefix="a0gw-bench-", dir=shm)
    port = free_port()
    log_path = out_dir / f"gateway-{label}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - the gateway writes to it while it runs
    env = dict(os.environ, A0_ROOT=root)
    env.pop("A0_TOPIC", None)
    version = None
    try:
        out = subprocess.run(
            [sys.executable, "-m", "a0gw", "--version"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        version = out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        pass
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "a0gw",
            "serve",
            "--port",
            str(port),
            "--root",
            root,
            *serve_args,
        ],
        # Run outside any source tree, so the installed a0gw is the one imported.
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    target = Target(
        label,
        "127.0.0.1",
        port,
        root,
        pid=proc.pid,
        proc=proc,
        log_path=str(log_path),
        temp_root=True,
        version=version,
    )
    try:
        pin(proc.pid, cpus)
        wait_for_port("127.0.0.1", port, 60, proc)
    except RuntimeError as exc:
        target.stop()
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"a0gw did not start: {exc}\n{tail}") from None
    except BaseException:
        # Interrupted while it starts: nobody else knows of it yet.
        target.stop()
        raise
    return target


class Canned:
    """The trivial local sender (bench.canned) in its own process."""

    def __init__(self, cpus: set | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.canned", "--port", "0"],
            cwd=PACKAGE_PARENT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        pin(self.proc.pid, cpus)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError("the canned sender did not start")
        self.host = "127.0.0.1"
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Peer:
    """An AlephZero peer process (bench.peers) driven line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, what: str) -> None:
        self.proc = proc
        self.what = what

    @classmethod
    async def start(cls, root: str, log: IO[bytes], *args: str) -> Peer:
        env = dict(os.environ, A0_ROOT=root)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.peers",
            *args,
            cwd=PACKAGE_PARENT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            preexec_fn=die_with_parent,
        )
        return cls(proc, " ".join(args[:2]))

    async def line(self, timeout: float = 60) -> str:
        assert self.proc.stdout is not None
        data = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not data:
            code = await self.proc.wait()
            raise RuntimeError(
                f"AlephZero peer '{self.what}' exited with status {code}"
            )
        return data.decode().strip()

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def _pingpong(cpus: tuple | None, rounds: int) -> dict:
    code = (
        "import os\nwhile True:\n    b = os.read(0, 1)\n    if not b: break\n"
        "    os.write(1, b)\n"
    )
    saved = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, {cpus[0]})
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        if cpus:
            pin(proc.pid, {cpus[1]})
        assert proc.stdin is not None and proc.stdout is not None
        w, r = proc.stdin.fileno(), proc.stdout.fileno()
        times = []
        try:
            for _ in range(rounds):
                t0 = time.perf_counter()
                os.write(w, b"x")
                os.read(r, 1)
                times.append(time.perf_counter() - t0)
        finally:
            proc.stdin.close()
            proc.wait()
    finally:
        os.sched_setaffinity(0, saved)
    times.sort()
    return {
        "p10_us": round(times[len(times) // 10] * 1e6, 1),
        "p50_us": round(times[len(times) // 2] * 1e6, 1),
        "p90_us": round(times[len(times) * 9 // 10] * 1e6, 1),
    }


def pingpong_us(rounds: int = 2000) -> dict:
    """Round trips of one byte between this process and a child over pipes.

    Measured with both on one CPU and on two different CPUs.  It characterises
    the machine: where waking a process on another, idle CPU is slow (virtual
    machines), request/response exchanges between processes pay it twice.
    """
    out = {"same_cpu": _pingpong((0, 0), rounds)}
    if (os.cpu_count() or 1) > 1:
        out["cross_cpu"] = _pingpong((0, 1), rounds)
    return out


async def run_peer(root: str, log: IO[bytes], *args: str) -> str:
    """Runs a one-shot peer command and returns its single output line."""
    peer = await Peer.start(root, log, *args)
    try:
        return await peer.line(120)
    finally:
        await peer.stop()
