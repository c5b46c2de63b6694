"""AlephZero peers of the harness, each run in its own process.

``python -m bench.peers COMMAND ...`` with ``A0_ROOT`` set to the root of the
server under test.  The harness drives them over stdin/stdout, one line each:

* ``fill TOPIC SIZE BYTES``: publish packets of SIZE bytes until about BYTES
  of the topic's arena are used, the last one ending with the drain end
  marker; print ``{"count", "first_seq", "last_seq"}`` and exit.
* ``rate TOPIC RATE SECONDS SIZE``: on ``warm``, publish one ``WARM`` packet;
  on ``go``, publish RATE packets a second for SECONDS, each stamped with
  ``time.monotonic_ns()`` just before it is published, then one ``END``
  packet, and print what was done.
* ``flood TOPIC SIZE BYTES``: on ``warm`` as above; on ``go``, publish BYTES
  in packets of SIZE as fast as possible, then one ``END`` packet.
* ``rpc TOPIC``: serve an AlephZero RPC server that echoes each request's
  payload; print ``READY``; exit when stdin closes.

Nothing here imports a0gw; ``a0`` is the ``alephzero`` package.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time

from bench import payloads

# Arena bytes AlephZero uses for one packet beyond its payload (headers,
# packet id, transport bookkeeping), rounded up.
PACKET_OVERHEAD = 512


def _say(obj: object) -> None:
    print(obj if isinstance(obj, str) else json.dumps(obj), flush=True)


def _fine_sleep() -> None:
    """Asks Linux for 1 µs timer slack so short sleeps end on time."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, ns
    except (OSError, AttributeError):
        pass


def _seq(pkt) -> int:
    return int(dict(pkt.headers)["a0_transport_seq"])


def fill(topic: str, size: int, budget: int) -> None:
    import a0

    count = max(1, budget // (size + PACKET_OVERHEAD))
    pub = a0.Publisher(topic)
    body = payloads.drain_payload(size)
    for _ in range(count - 1):
        pub.pub(body)
    pub.pub(payloads.drain_payload(size, last=True))
    first = a0.SubscriberSync(topic, a0.INIT_OLDEST, a0.ITER_NEXT).read()
    last = a0.SubscriberSync(topic, a0.INIT_MOST_RECENT, a0.ITER_NEXT).read()
    first_seq, last_seq = _seq(first), _seq(last)
    if bytes(last.payload) != payloads.drain_payload(size, last=True):
        raise SystemExit("the newest packet of the topic is not the end marker")
    _say(
        {
            "count": last_seq - first_seq + 1,
            "published": count,
            "first_seq": first_seq,
            "last_seq": last_seq,
        }
    )


def _commands(pub, on_go) -> None:
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "warm":
            pub.pub(b"WARM")
        elif cmd == "go":
            _say(on_go())
        elif cmd == "quit":
            return


def rate(topic: str, per_s: float, seconds: float, size: int) -> None:
    import a0

    _fine_sleep()
    pub = a0.Publisher(topic)

    def go() -> dict:
        total = max(1, int(per_s * seconds))
        interval = 1.0 / per_s
        mono = time.monotonic_ns
        clock = time.perf_counter
        stamped = payloads.stamped
        max_lag = 0.0
        i = 0
        t0 = clock()
        while i < total:
            now = clock()
            due = min(total, int((now - t0) * per_s) + 1)
            lag = now - (t0 + i * interval)
            max_lag = max(max_lag, lag)
            while i < due:
                pub.pub(stamped(mono(), size))
                i += 1
            wait = t0 + i * interval - clock()
            if wait > 0:
                time.sleep(wait)
        elapsed = clock() - t0
        pub.pub(b"END")
        return {
            "published": i,
            "elapsed_s": elapsed,
            "rate": i / elapsed,
            "max_lag_ms": max_lag * 1e3,
        }

    _say("READY")
    _commands(pub, go)


def flood(topic: str, size: int, total: int) -> None:
    import a0

    pub = a0.Publisher(topic)
    body = payloads.text(size, b"f")

    def go() -> dict:
        count = max(1, total // size)
        t0 = time.perf_counter()
        for _ in range(count):
            pub.pub(body)
        elapsed = time.perf_counter() - t0
        pub.pub(b"END")
        return {"published": count, "bytes": count * size, "elapsed_s": elapsed}

    _say("READY")
    _commands(pub, go)


def rpc(topic: str) -> None:
    import a0

    def on_request(req) -> None:
        req.reply(req.pkt.payload)

    server = a0.RpcServer(topic, on_request, lambda _id: None)
    _say("READY")
    # stdin closing is the signal to exit.
    sys.stdin.read()
    del server


def main() -> None:
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    cmd, rest = args[0], args[1:]
    if cmd == "fill":
        fill(rest[0], int(rest[1]), int(rest[2]))
    elif cmd == "rate":
        rate(rest[0], float(rest[1]), float(rest[2]), int(rest[3]))
    elif cmd == "flood":
        flood(rest[0], int(rest[1]), int(rest[2]))
    elif cmd == "rpc":
        rpc(rest[0])
    else:
        raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
