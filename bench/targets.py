"""Reference figures and targets shown next to the results.

The reference figures were measured on the reference bridge (AlephZero's own
REST/WebSocket API server) elsewhere; they are not re-measured here.  Use
``--compare URL`` to measure a reference server side by side on this machine.
A target applies to the first server measured (A).
"""

from __future__ import annotations

MIB = 1024 * 1024

# scenario, case fields that must match, metric, reference value or None,
# target as (operator, value) or None, a note.
REFERENCES = [
    ("rest_pub", {"size": 64, "concurrency": 1}, "rate", 9_800, None, ""),
    (
        "rest_pub",
        {"size": 64, "concurrency": 16},
        "rate",
        23_000,
        (">=", 1.5 * 23_000),
        ">= 1.5x reference",
    ),
    (
        "ws_drain",
        {"size": 64, "encoding": "none", "scheduler": "IMMEDIATE"},
        "pkt_rate",
        270_000,
        (">=", 1.5 * 270_000),
        ">= 1.5x reference",
    ),
    (
        "ws_drain",
        {"size": 64, "encoding": "none", "scheduler": "ON_DRAIN"},
        "pkt_rate",
        12_000,
        (">=", 20 * 12_000),
        ">= 20x reference",
    ),
    (
        "ws_drain",
        {"size": MIB, "encoding": "none", "scheduler": "IMMEDIATE"},
        "mb_rate",
        210,
        (">=", 1000),
        ">= 1 GB/s",
    ),
    (
        "ws_drain",
        {"size": MIB, "encoding": "none", "scheduler": "ON_DRAIN"},
        "mb_rate",
        210,
        (">=", 1000),
        ">= 1 GB/s",
    ),
    (
        "ws_drain",
        {"size": MIB, "encoding": "base64", "scheduler": "IMMEDIATE"},
        "mb_rate",
        180,
        (">=", 600),
        ">= 600 MB/s",
    ),
    (
        "ws_drain",
        {"size": MIB, "encoding": "base64", "scheduler": "ON_DRAIN"},
        "mb_rate",
        180,
        (">=", 600),
        ">= 600 MB/s",
    ),
    ("live_latency", {"rate": 10_000}, "p99_ms", None, ("<", 1.0), "p99 < 1 ms"),
]


def lookup(scenario: str, case: dict) -> dict | None:
    """The reference and target of a case, if it has one."""
    for name, match, metric, reference, target, note in REFERENCES:
        if name == scenario and all(case.get(k) == v for k, v in match.items()):
            return {
                "metric": metric,
                "reference": reference,
                "target": target,
                "note": note,
            }
    return None


def verdict(value: float | None, target: tuple | None) -> str | None:
    """'meets' or 'misses' the target; None without a value or a target."""
    if value is None or target is None:
        return None
    op, bound = target
    ok = value >= bound if op == ">=" else value < bound
    return "meets" if ok else "misses"
