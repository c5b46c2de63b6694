"""The scenarios, and the loop that runs their cases against each server."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import sys
import time
from typing import IO

from bench import payloads
from bench.httpload import post_request, run_load
from bench.servers import Canned, Peer, Target, run_peer
from bench.stats import ClientMeter, ProcessMeter, latency_summary
from bench.wsclient import WsClient

MIB = 1024 * 1024
# A pre-filled topic uses at most this much of its 16 MiB arena.
FILL_BYTES = 14 * MIB
# A drain with no new message for this long is over.
DRAIN_IDLE_S = 0.25
# At most this many drains per ws_drain case.
DRAIN_MAX_REPS = 50
END_MARKER = b'"END"'


@dataclasses.dataclass
class Settings:
    quick: bool
    rounds: int
    warmup_s: float  # rest_pub, rpc: unmeasured warm-up per case
    duration_s: float  # rest_pub, rpc: measured window per case
    drain_s: float  # ws_drain: measured drain time per case
    latency_s: float  # live_latency: publishing time per case
    fanout_s: float  # fanout: publishing time per case
    fanout_rate: float  # fanout: packets/s published
    slow_bytes: int  # slow_consumer: bytes published while the client stalls
    ceiling: bool

    @classmethod
    def make(cls, quick: bool, scale: float = 1.0, **over) -> Settings:
        if quick:
            base = {
                "rounds": 1,
                "warmup_s": 0.2,
                "duration_s": 1.0,
                "drain_s": 0.4,
                "latency_s": 1.5,
                "fanout_s": 1.5,
                "fanout_rate": 1000.0,
                "slow_bytes": 128 * MIB,
            }
        else:
            base = {
                "rounds": 3,
                "warmup_s": 1.0,
                "duration_s": 5.0,
                "drain_s": 3.0,
                "latency_s": 10.0,
                "fanout_s": 5.0,
                "fanout_rate": 1000.0,
                "slow_bytes": 1024 * MIB,
            }
        for key in ("warmup_s", "duration_s", "drain_s", "latency_s", "fanout_s"):
            base[key] *= scale
        base.update({k: v for k, v in over.items() if v is not None})
        base.setdefault("ceiling", True)
        return cls(quick=quick, **base)


class Ctx:
    """What every scenario needs: settings, servers, the ceiling sender, output."""

    def __init__(
        self,
        settings: Settings,
        targets: list,
        canned: Canned | None,
        run_id: str,
        peer_log: IO[bytes],
    ) -> None:
        self.s = settings
        self.targets = targets
        self.canned = canned
        self.run_id = run_id
        self.peer_log = peer_log
        self.t0 = time.perf_counter()

    def topic(self, target: Target, name: str) -> str:
        return f"bench_{self.run_id}/t{self.targets.index(target)}/{name}"

    def say(self, text: str) -> None:
        print(
            f"[{time.perf_counter() - self.t0:6.1f}s] {text}",
            file=sys.stderr,
            flush=True,
        )


# Formatting


def human(value: float | None, digits: int = 3) -> str:
    """A number with k/M/G suffixes and `digits` significant digits."""
    if value is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")):
        if abs(value) >= scale * (1 - 0.5 * 10**-digits) or scale == 1.0:
            text = f"{value / scale:.{digits}g}"
            if "e" in text:
                text = f"{value / scale:.0f}"
            return text + suffix
    return str(value)


def size_name(size: int) -> str:
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ms"


# Scenario base and the case loop


class Scenario:
    name = ""
    # Whether ceiling() measures something for this scenario.
    has_ceiling = False
    title = ""
    primary = "rate"  # the metric compared between servers
    higher_is_better = True
    unit = ""

    def cases(self, ctx: Ctx) -> list:
        raise NotImplementedError

    def case_name(self, case: dict) -> str:
        return " ".join(f"{k}={v}" for k, v in case.items())

    async def setup(self, ctx: Ctx, target: Target) -> None:
        pass

    async def teardown(self, ctx: Ctx, target: Target) -> None:
        pass

    async def run(self, ctx: Ctx, target: Target, case: dict) -> dict:
        raise NotImplementedError

    async def ceiling(self, ctx: Ctx, case: dict) -> dict | None:
        return None

    def fmt(self, m: dict) -> str:
        return f"{human(m.get(self.primary))} {self.unit}"


def _median_run(runs: list, key: str) -> dict:
    """The run whose `key` is the median (the lower middle one for an even count)."""
    valid = [r for r in runs if r.get(key) is not None]
    if not valid:
        return runs[0] if runs else {}
    valid.sort(key=lambda r: r[key])
    return valid[(len(valid) - 1) // 2]


async def run_scenario(ctx: Ctx, scen: Scenario) -> dict:
    cases = scen.cases(ctx)
    targets = ctx.targets
    with_ceiling = ctx.s.ceiling and ctx.canned is not None and scen.has_ceiling
    said_ceilings: list = []
    steps = len(cases) * ctx.s.rounds * len(targets)
    ctx.say(
        f"{scen.name}: {len(cases)} cases x {ctx.s.rounds} round(s) x "
        f"{len(targets)} server(s){' + ceiling' if with_ceiling else ''}"
    )
    entries = []
    step = 0
    ready = []
    try:
        for target in targets:
            await scen.setup(ctx, target)
            ready.append(target)
        for case in cases:
            runs: dict = {t.label: [] for t in targets}
            ratios = []
            for _ in range(ctx.s.rounds):
                pair = []
                for target in targets:
                    if not target.alive():
                        raise RuntimeError(
                            f"server {target.label} exited (see {target.log_path})"
                        )
                    m = await scen.run(ctx, target, case)
                    runs[target.label].append(m)
                    pair.append(m.get(scen.primary))
                    step += 1
                    ctx.say(
                        f"[{scen.name} {step}/{steps}] {target.label} "
                        f"{scen.case_name(case)}: {scen.fmt(m)}"
                    )
                if len(pair) == 2:
                    a, b = pair
                    ratio = a / b if a is not None and b else None
                    ratios.append(ratio)
                    ctx.say(
                        f"[{scen.name}] {scen.case_name(case)}: "
                        f"{targets[0].label}/{targets[1].label} = "
                        f"{'-' if ratio is None else f'{ratio:.2f}'} ({scen.primary})"
                    )
            entry = {
                "case": case,
                "name": scen.case_name(case),
                "runs": runs,
                "result": {
                    label: _median_run(r, scen.primary) for label, r in runs.items()
                },
            }
            if ratios:
                valid = sorted(r for r in ratios if r is not None)
                entry["ratios"] = ratios
                entry["ratio"] = valid[(len(valid) - 1) // 2] if valid else None
            if with_ceiling:
                ceiling = await scen.ceiling(ctx, case)
                if ceiling is not None:
                    entry["ceiling"] = ceiling
                    again = any(c is ceiling for c in said_ceilings)
                    said_ceilings.append(ceiling)
                    ctx.say(
                        f"[{scen.name}] ceiling {scen.case_name(case)}: "
                        + (
                            "the one above (one measurement serves both)"
                            if again
                            else scen.fmt(ceiling)
                        )
                    )
            entries.append(entry)
    finally:
        for target in ready:
            await scen.teardown(ctx, target)
    return {
        "name": scen.name,
        "title": scen.title,
        "primary": scen.primary,
        "higher_is_better": scen.higher_is_better,
        "unit": scen.unit,
        "cases": entries,
    }


# REST


async def http_case(
    ctx: Ctx,
    host: str,
    port: int,
    pid: int | None,
    path: str,
    body: bytes,
    concurrency: int,
    token: str | None = None,
) -> dict:
    meter = ProcessMeter(pid)
    r = await run_load(
        host,
        port,
        post_request(host, port, path, body, token),
        concurrency,
        ctx.s.warmup_s,
        ctx.s.duration_s,
        meter=meter,
    )
    lat = r.pop("latencies_ns")
    m = {k: v for k, v in r.items()}
    m.update(latency_summary(lat))
    m.update(meter.figures(r["requests"]))
    m["_lat"] = lat
    return m


def _fmt_http(m: dict, unit: str) -> str:
    text = (
        f"{human(m.get('rate'))} {unit}, "
        f"p50 {ms(m.get('p50_ms'))}, p99 {ms(m.get('p99_ms'))}"
    )
    if m.get("gw_cpu_us_per_op") is not None:
        text += f", gateway {m['gw_cpu_us_per_op']:.1f} µs CPU/req"
    if m.get("errors"):
        text += f", {m['errors']} errors (first: {m.get('first_error')})"
    return text


class RestPub(Scenario):
    name = "rest_pub"
    has_ceiling = True
    title = "REST publish (POST /api/pub, keep-alive)"
    unit = "req/s"

    def cases(self, ctx: Ctx) -> list:
        return [
            {"size": s, "concurrency": c} for s in (64, 64 * 1024) for c in (1, 16, 64)
        ]

    def case_name(self, case: dict) -> str:
        return f"{size_name(case['size'])} c={case['concurrency']}"

    @staticmethod
    def _body(topic: str, case: dict) -> bytes:
        return payloads.pub_body(topic, payloads.text(case["size"]))

    async def run(self, ctx: Ctx, target: Target, case: dict) -> dict:
        body = self._body(ctx.topic(target, f"pub{case['size']}"), case)
        return await http_case(
            ctx,
            target.host,
            target.port,
            target.pid,
            "/api/pub",
            body,
            case["concurrency"],
            target.token,
        )

    async def ceiling(self, ctx: Ctx, case: dict) -> dict | None:
        assert ctx.canned is not None
        body = self._body("bench/ceiling", case)
        return await http_case(
            ctx,
            ctx.canned.host,
            ctx.canned.port,
            None,
            "/api/pub",
            body,
            case["concurrency"],
        )

    def fmt(self, m: dict) -> str:
        return _fmt_http(m, self.unit)


class Rpc(Scenario):
    name = "rpc"
    has_ceiling = True
    title = "REST RPC round trips (POST /api/rpc to an AlephZero RpcServer in Python)"
    unit = "req/s"

    def __init__(self) -> None:
        self.peers: dict = {}

    def cases(self, ctx: Ctx) -> list:
        return [{"size": 64, "concurrency": c} for c in (1, 16)]

    def case_name(self, case: dict) -> str:
        return f"{size_name(case['size'])} c={case['concurrency']}"

    async def setup(self, ctx: Ctx, target: Target) -> None:
        peer = await Peer.start(
            target.root, ctx.peer_log, "rpc", ctx.topic(target, "rpc")
        )
        if await peer.line() != "READY":
            raise RuntimeError("the RPC server peer did not start")
        self.peers[target.label] = peer

    async def teardown(self, ctx: Ctx, target: Target) -> None:
        peer = self.peers.pop(target.label, None)
        if peer is not None:
            await peer.stop()

    async def run(self, ctx: Ctx, target: Target, case: dict) -> dict:
        body = payloads.pub_body(ctx.topic(target, "rpc"), payloads.text(case["size"]))
        return await http_case(
            ctx,
            target.host,
            target.port,
            target.pid,
            "/api/rpc",
            body,
            case["concurrency"],
            target.token,
        )

    async def ceiling(self, ctx: Ctx, case: dict) -> dict | None:
        assert ctx.canned is not None
        body = payloads.pub_body("bench/ceiling", payloads.text(case["size"]))
        return await http_case(
            ctx,
            ctx.canned.host,
            ctx.canned.port,
            None,
            "/api/rpc",
            body,
            case["concurrency"],
        )

    def fmt(self, m: dict) -> str:
        return _fmt_http(m, self.unit)


# WebSocket drain


async def _settle(client: WsClient) -> None:
    """Closes a client and waits briefly for the socket to go."""
    client.close()
    try:
        await asyncio.wait_for(asyncio.shield(client.lost), 2)
    except asyncio.TimeoutError:
        pass


def _check_first(message: bytes | None, size: int, encoding: str) -> bool | None:
    """Whether the first message carries the expected payload (None: not captured)."""
    if message is None:
        return None
    try:
        payload = json.loads(message)["payload"].encode("ascii")
        if encoding == "base64":
            payload = base64.b64decode(payload)
        return payload == payloads.drain_payload(size)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


async def drain(
    ctx: Ctx,
    host: str,
    port: int,
    pid: int | None,
    handshake: bytes,
    size: int,
    encoding: str,
    scheduler: str,
    expected: int,
    budget: float | None = None,
    path: str = "/wsapi/sub",
) -> dict:
    """Drains a pre-filled topic repeatedly for a time budget (default the case's)."""
    budget = budget or ctx.s.drain_s
    marker = payloads.end_marker(size, encoding)
    msgs = rx = reps = complete = dropped = 0
    spent = 0.0
    errors: list = []
    valid = None
    meter = ProcessMeter(pid).start()
    cpu = ClientMeter().start()
    # Drains that lose their end marker (IMMEDIATE drops) end by going idle;
    # this caps the wall time they may take.
    wall_end = time.perf_counter() + 3 * budget + 2
    while True:
        left = max(budget - spent, 0.05)
        client = await WsClient.connect(
            host,
            port,
            path,
            handshake,
            ack=scheduler == "ON_ACK",
            marker=marker,
            deadline=time.perf_counter() + left,
        )
        seen = -1
        while not client.done.done() and client.messages != seen:
            seen = client.messages
            await asyncio.wait([client.done], timeout=DRAIN_IDLE_S)
        await _settle(client)
        reps += 1
        if client.messages:
            msgs += client.messages
            rx += client.rx_bytes
            spent += client.t_last - client.t_open
        if client.end_seen:
            complete += 1
            dropped += expected - client.messages
        if client.close_code not in (None, 1000) or client.error:
            errors.append(
                f"{client.close_code or ''} "
                f"{client.close_reason or client.error}".strip()
            )
        if valid is None:
            valid = _check_first(client.first_message, size, encoding)
        if (
            spent >= budget
            or client.deadline_hit
            or reps >= DRAIN_MAX_REPS
            or not client.messages
            or time.perf_counter() > wall_end
        ):
            break
    meter.stop()
    m = {
        "pkt_rate": msgs / spent if spent else 0.0,
        "mb_rate": msgs * size / spent / 1e6 if spent else 0.0,
        "wire_mb_rate": rx / spent / 1e6 if spent else 0.0,
        "messages": msgs,
        "expected_per_drain": expected,
        "drains": reps,
        "complete_drains": complete,
        "dropped": dropped,
        "elapsed_s": spent,
        "payload_ok": valid,
        "client_cpu_pct": cpu.stop(),
        "errors": errors[:3],
    }
    m.update(meter.figures(msgs))
    return m


class WsDrain(Scenario):
    name = "ws_drain"
    has_ceiling = True
    title = "WebSocket drain of a pre-filled topic (/wsapi/sub, init OLDEST)"
    primary = "pkt_rate"
    unit = "pkt/s"
    SIZES = (64, 4 * 1024, 64 * 1024, MIB)

    def __init__(self) -> None:
        self.filled: dict = {}
        self.ceilings: dict = {}

    def cases(self, ctx: Ctx) -> list:
        return [
            {"size": s, "encoding": e, "scheduler": k}
            for s in self.SIZES
            for e in ("none", "base64")
            for k in ("IMMEDIATE", "ON_DRAIN", "ON_ACK")
        ]

    def case_name(self, case: dict) -> str:
        return f"{size_name(case['size'])} {case['encoding']} {case['scheduler']}"

    async def setup(self, ctx: Ctx, target: Target) -> None:
        for size in self.SIZES:
            topic = ctx.topic(target, f"drain{size}")
            out = json.loads(
                await run_peer(
                    target.root, ctx.peer_log, "fill", topic, str(size), str(FILL_BYTES)
                )
            )
            self.filled[(target.label, size)] = out
            ctx.say(
                f"[{self.name}] {target.label}: {out['count']} packets of "
                f"{size_name(size)} in {topic}"
            )

    def _handshake(self, topic: str, case: dict, **extra: object) -> bytes:
        return json.dumps(
            {
                "topic": topic,
                "init": "OLDEST",
                "scheduler": case["scheduler"],
                "response_encoding": case["encoding"],
                **extra,
            }
        ).encode()

    async def run(self, ctx: Ctx, target: Target, case: dict) -> dict:
        topic = ctx.topic(target, f"drain{case['size']}")
        expected = self.filled[(target.label, case["size"])]["count"]
        return await drain(
            ctx,
            target.host,
            target.port,
            target.pid,
            self._handshake(topic, case),
            case["size"],
            case["encoding"],
            case["scheduler"],
            expected,
            path=target.ws_path("/wsapi/sub"),
        )

    async def ceiling(self, ctx: Ctx, case: dict) -> dict | None:
        assert ctx.canned is not None
        # The canned sender has no schedulers: IMMEDIATE and ON_DRAIN are both
        # "as fast as the socket takes it", ON_ACK is one frame per ACK.
        mode = "ack" if case["scheduler"] == "ON_ACK" else "stream"
        key = (case["size"], case["encoding"], mode)
        if key not in self.ceilings:
            expected = self.filled[(ctx.targets[0].label, case["size"])]["count"]
            hs = self._handshake(
                "bench/ceiling", case, bench_count=expected, bench_size=case["size"]
            )
            # Short drains are noisy; the ceiling gets at least a second.
            self.ceilings[key] = await drain(
                ctx,
                ctx.canned.host,
                ctx.canned.port,
                None,
                hs,
                case["size"],
                case["encoding"],
                case["scheduler"],
                expected,
                budget=max(ctx.s.drain_s, 1.0),
            )
        return self.ceilings[key]

    def fmt(self, m: dict) -> str:
        text = (
            f"{human(m['pkt_rate'])} pkt/s, {m['mb_rate']:.1f} MB/s payload "
            f"({m['complete_drains']}/{m['drains']} drains complete"
        )
        if m.get("dropped"):
            text += f", {m['dropped']} dropped"
        text += ")"
        if m.get("gw_cpu_us_per_op") is not None:
            text += f", gateway {m['gw_cpu_us_per_op']:.2f} µs CPU/pkt"
        if m.get("payload_ok") is False:
            text += ", PAYLOAD MISMATCH"
        if m.get("errors"):
            text += f", errors: {m['errors']}"
        return text


# Live latency and fanout


def _stamp_reader(latencies: list, flags: dict):
    digits = payloads.STAMP_DIGITS

    def on_messages(msgs: list, now_ns: int) -> None:
        for msg in msgs:
            # The payload string follows the last "payload" key (spaces allowed).
            at = msg.find(b'"', msg.rfind(b'"payload"') + 9) + 1
            head = msg[at : at + digits]
            if head[:1].isdigit():
                latencies.append(now_ns - int(head))
            elif head.startswith(b"WARM"):
                flags["warm"] = True
            elif head.startswith(b"END"):
                flags["end"] = True

    return on_messages


async def _warm(peer: Peer, clients: list, timeout: float = 10.0) -> bool:
    """Publishes WARM packets until every client got at least one."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        peer.send("warm")
        await asyncio.sleep(0.05)
        if all(c.messages > 0 for c in clients):
            return True
    return False


class LiveLatency(Scenario):
    name = "live_latency"
    title = "Publish-to-receive latency of live packets (64 B, one subscriber)"
    primary = "p99_ms"
    higher_is_better = False
    unit = "ms (p99)"

    def cases(self, ctx: Ctx) -> list:
        return [
            {"rate": r, "scheduler": s}
            for r in (1000, 10_000)
            for s in ("ON_DRAIN", "IMMEDIATE")
        ]

    def case_name(self, case: dict) -> str:
        return f"{human(case['rate'])}/s {case['scheduler']}"

    async def run(self, ctx: Ctx, target: Target, case: dict) -> dict:
        topic = ctx.topic(target, f"live{case['rate']}{case['scheduler']}")
        seconds = ctx.s.latency_s
        peer = await Peer.start(
            target.root,
            ctx.peer_log,
            "rate",
            topic,
            str(case["rate"]),
            str(seconds),
            "64",
        )
        latencies: list = []
        flags: dict = {}
        client = None
        try:
            if await peer.line() != "READY":
                raise RuntimeError("the publisher peer did not start")
            hs = json.dumps(
                {"topic": topic, "init": "AWAIT_NEW", "scheduler": case["scheduler"]}
            ).encode()
            client = await WsClient.connect(
                target.host,
                target.port,
                target.ws_path("/wsapi/sub"),
                hs,
                marker=END_MARKER,
                on_messages=_stamp_reader(latencies, flags),
            )
            if not await _warm(peer, [client]):
                return {"error": "no packet reached the subscriber during warm-up"}
            await asyncio.sleep(0.05)
            latencies.clear()
            cpu = ClientMeter().start()
            meter = ProcessMeter(target.pid).start()
            peer.send("go")
            pub = json.loads(await peer.line(seconds * 3 + 30))
            try:
                await asyncio.wait_for(asyncio.shield(client.done), 5)
            except asyncio.TimeoutError:
                pass
            meter.stop()
            m = latency_summary(latencies)
            m.update(
                {
                    "published": pub["published"],
                    "received": len(latencies),
                    "lost": pub["published"] - len(latencies),
                    "publish_rate": pub["rate"],
                    "publisher_max_lag_ms": pub["max_lag_ms"],
                    "client_cpu_pct": cpu.stop(),
                    "error": client.error
                    if client.error and not flags.get("end")
                    else None,
                }
            )
            m.update(meter.figures(len(latencies)))
            m["_lat"] = list(latencies)
            return m
        finally:
            if client is not None:
                await _settle(client)
            await peer.stop()

    def fmt(self, m: dict) -> str:
        if m.get("error") and not m.get("samples"):
            return f"ERROR {m['error']}"
        text = (
            f"p50 {ms(m.get('p50_ms'))}, p99 {ms(m.get('p99_ms'))}, "
            f"p99.9 {ms(m.get('p999_ms'))}, max {ms(m.get('max_ms'))} "
            f"({m['received']}/{m['published']} received, "
            f"published at {human(m['publish_rate'])}/s)"
        )
        return text


class Fanout(Scenario):
    name = "fanout"
    title = "Fan-out: subscribers of one topic at a fixed publish rate (64 B)"
    primary = "delivered_rate"
    unit = "pkt/s delivered"

    def cases(self, ctx: Ctx) -> list:
        return [{"subscribers": n, "rate": ctx.s.fanout_rate} for n in (1, 10, 100)]

    def case_name(self, case: dict) -> str:
        return f"{case['subscribers']} subs @ {human(case['rate'])}/s"

    async def run(self, ctx: Ctx, target: Target, case: dict) -> dict:
        n = case["subscribers"]
        topic = ctx.topic(target, f"fanout{n}")
        seconds = ctx.s.fanout_s
        peer = await Peer.start(
            target.root,
            ctx.peer_log,
            "rate",
            topic,
            str(case["rate"]),
            str(seconds),
            "64",
        )
        clients: list = []
        try:
            if await peer.line() != "READY":
                raise RuntimeError("the publisher peer did not start")
            hs = json.dumps({"topic": topic, "init": "AWAIT_NEW"}).encode()
            clients = list(
                await asyncio.gather(
                    *(
                        WsClient.connect(
                            target.host,
                            target.port,
                            target.ws_path("/wsapi/sub"),
                            hs,
                            marker=END_MARKER,
                        )
                        for _ in range(n)
                    )
                )
            )
            if not await _warm(peer, clients):
                return {"error": "not every subscriber got a packet during warm-up"}
            await asyncio.sleep(0.2)
            base = [c.messages for c in clients]
            cpu = ClientMeter().start()
            meter = ProcessMeter(target.pid).start()
            t_go = time.perf_counter()
            peer.send("go")
            pub = json.loads(await peer.line(seconds * 3 + 30))
            pending = [asyncio.shield(c.done) for c in clients if not c.done.done()]
            if pending:
                await asyncio.wait(pending, timeout=max(5.0, seconds))
            meter.stop()
            delivered = sum(
                c.messages - b - (1 if c.end_seen else 0) for c, b in zip(clients, base)
            )
            t_end = max(c.t_last for c in clients)
            span = t_end - t_go
            m = {
                "delivered_rate": delivered / span if span > 0 else 0.0,
                "delivered": delivered,
                "expected": pub["published"] * n,
                "publish_rate": pub["rate"],
                "complete_subscribers": sum(1 for c in clients if c.end_seen),
                "span_s": span,
                "client_cpu_pct": cpu.stop(),
                "errors": sorted({c.error for c in clients if c.error})[:3],
            }
            m.update(meter.figures(delivered))
            return m
        finally:
            await asyncio.gather(*(_settle(c) for c in clients))
            await peer.stop()

    def fmt(self, m: dict) -> str:
        if "delivered_rate" not in m:
            return f"ERROR {m.get('error')}"
        text = (
            f"{human(m['delivered_rate'])} pkt/s delivered ({m['delivered']}/"
            f"{m['expected']}, {m['complete_subscribers']} subscribers complete)"
        )
        if m.get("gw_cpu_us_per_op") is not None:
            text += (
                f", gateway {m['gw_cpu_us_per_op']:.1f} µs CPU/pkt "
                f"({m['gw_cpu_pct']:.0f}% of a core)"
            )
        return text


# Slow consumer


class SlowConsumer(Scenario):
    name = "slow_consumer"
    title = (
        "Slow consumer: gateway memory while a subscriber stops reading "
        "(64 KiB packets)"
    )
    primary = "rss_peak_mb"
    higher_is_better = False
    unit = "MB peak RSS"
    SAMPLE_S = 0.02

    def cases(self, ctx: Ctx) -> list:
        return [
            {"scheduler": s, "mb": ctx.s.slow_bytes // MIB}
            for s in ("ON_DRAIN", "IMMEDIATE")
        ]

    def case_name(self, case: dict) -> str:
        return f"{case['scheduler']} {case['mb']} MiB"

    async def run(self, ctx: Ctx, target: Target, case: dict) -> dict:
        meter = ProcessMeter(target.pid)
        if meter.rss() is None:
            return {"skipped": "needs the gateway's pid (--pid) and psutil"}
        topic = ctx.topic(target, f"slow{case['scheduler']}")
        peer = await Peer.start(
            target.root,
            ctx.peer_log,
            "flood",
            topic,
            str(64 * 1024),
            str(ctx.s.slow_bytes),
        )
        client = None
        samples: list = []
        stop = asyncio.Event()
        t0 = time.perf_counter()
        events: dict = {}

        def mark(name: str) -> None:
            events[name] = round(time.perf_counter() - t0, 4)

        async def sample() -> None:
            while not stop.is_set():
                rss = meter.rss()
                if rss is not None:
                    samples.append((round(time.perf_counter() - t0, 4), rss))
                await asyncio.sleep(self.SAMPLE_S)

        sampler = None
        try:
            if await peer.line() != "READY":
                raise RuntimeError("the publisher peer did not start")
            hs = json.dumps(
                {"topic": topic, "init": "AWAIT_NEW", "scheduler": case["scheduler"]}
            ).encode()
            client = await WsClient.connect(
                target.host,
                target.port,
                target.ws_path("/wsapi/sub"),
                hs,
                marker=END_MARKER,
            )
            if not await _warm(peer, [client]):
                return {"error": "no packet reached the subscriber during warm-up"}
            client.pause()
            t0 = time.perf_counter()
            sampler = asyncio.ensure_future(sample())
            await asyncio.sleep(0.2)
            rss_start = meter.rss()
            mark("publish")
            peer.send("go")
            pub = json.loads(await peer.line(600))
            mark("published")
            await asyncio.sleep(0.5)
            rss_stalled = meter.rss()
            before = client.messages
            t_resume = time.perf_counter()
            client.resume()
            mark("resume")
            try:
                await asyncio.wait_for(asyncio.shield(client.done), 3)
            except asyncio.TimeoutError:
                pass
            resumed_s = time.perf_counter() - t_resume
            await asyncio.sleep(0.2)
            stop.set()
            await sampler
            peak = max(r for _, r in samples)
            m = {
                "rss_start_mb": rss_start / 1e6 if rss_start else None,
                "rss_peak_mb": peak / 1e6,
                "rss_stalled_mb": rss_stalled / 1e6 if rss_stalled else None,
                "rss_end_mb": samples[-1][1] / 1e6,
                "rss_growth_mb": (peak - rss_start) / 1e6 if rss_start else None,
                "published_mb": pub["bytes"] / 1e6,
                "publish_s": pub["elapsed_s"],
                "messages_after_resume": client.messages - before,
                "end_received": client.end_seen,
                "resume_s": resumed_s,
                "close_code": client.close_code,
                "error": client.error,
                "events_s": events,
                "_samples": samples,
            }
            return m
        finally:
            stop.set()
            if sampler is not None and not sampler.done():
                await sampler
            if client is not None:
                await _settle(client)
            await peer.stop()

    def fmt(self, m: dict) -> str:
        if "skipped" in m:
            return f"skipped: {m['skipped']}"
        if "rss_peak_mb" not in m:
            return f"ERROR {m.get('error')}"
        text = (
            f"RSS {m['rss_start_mb']:.0f} -> peak {m['rss_peak_mb']:.0f} MB "
            f"(+{m['rss_growth_mb']:.1f}), {m['published_mb']:.0f} MB published in "
            f"{m['publish_s']:.2f} s; after resume {m['messages_after_resume']} msgs, "
            f"END {'received' if m['end_received'] else 'not received'}"
        )
        if m.get("close_code"):
            text += f", closed {m['close_code']}"
        return text


SCENARIOS = {
    cls.name: cls for cls in (RestPub, WsDrain, LiveLatency, Fanout, SlowConsumer, Rpc)
}
