"""Percentiles, compact latency histograms and process CPU/RSS sampling."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

try:
    import psutil
except ImportError:  # CPU and memory figures are then left out.
    psutil = None


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of already sorted values, nearest rank."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies_ns: Sequence[int], prefix: str = "") -> dict:
    """p50, p90, p99, p99.9 and max in milliseconds."""
    values = sorted(latencies_ns)
    out = {}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        v = percentile(values, q)
        out[f"{prefix}{name}_ms"] = None if v is None else v / 1e6
    out[f"{prefix}max_ms"] = values[-1] / 1e6 if values else None
    out[f"{prefix}samples"] = len(values)
    return out


def log_histogram(latencies_ns: Sequence[int], per_decade: int = 20) -> dict:
    """Counts in log-spaced bins (edges in ms), small enough to keep in JSON."""
    if not latencies_ns:
        return {"edges_ms": [], "counts": []}
    lo = min(latencies_ns) / 1e6
    hi = max(latencies_ns) / 1e6
    lo_exp = math.floor(math.log10(max(lo, 1e-4)) * per_decade)
    hi_exp = math.ceil(math.log10(max(hi, 1e-4)) * per_decade) + 1
    edges = [10 ** (e / per_decade) for e in range(lo_exp, hi_exp + 1)]
    counts = [0] * (len(edges) - 1)
    scale = per_decade
    for ns in latencies_ns:
        ms = max(ns / 1e6, 1e-4)
        idx = math.floor(math.log10(ms) * scale) - lo_exp
        counts[min(max(idx, 0), len(counts) - 1)] += 1
    return {"edges_ms": [round(e, 6) for e in edges], "counts": counts}


class ProcessMeter:
    """CPU time of a process (all threads) between start() and stop()."""

    def __init__(self, pid: int | None) -> None:
        self.proc = None
        if pid is not None and psutil is not None:
            try:
                self.proc = psutil.Process(pid)
            except psutil.Error:
                self.proc = None
        self.cpu0 = 0.0
        self.t0 = 0.0
        self.cpu_s: float | None = None
        self.wall_s = 0.0

    def _cpu(self) -> float:
        assert self.proc is not None
        t = self.proc.cpu_times()
        return t.user + t.system

    def start(self) -> ProcessMeter:
        self.t0 = time.perf_counter()
        if self.proc is not None:
            try:
                self.cpu0 = self._cpu()
            except psutil.Error:
                self.proc = None
        return self

    def stop(self) -> ProcessMeter:
        self.wall_s = time.perf_counter() - self.t0
        if self.proc is not None:
            try:
                self.cpu_s = self._cpu() - self.cpu0
            except psutil.Error:
                self.cpu_s = None
        return self

    def figures(self, ops: float | None = None) -> dict:
        """gw_cpu_pct (of one core) and, given an operation count, µs per op."""
        if self.cpu_s is None:
            return {}
        out = {"gw_cpu_pct": 100.0 * self.cpu_s / self.wall_s if self.wall_s else None}
        if ops:
            out["gw_cpu_us_per_op"] = 1e6 * self.cpu_s / ops
        return out

    def rss(self) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.memory_info().rss
        except psutil.Error:
            return None


class ClientMeter:
    """CPU time of this process between start() and stop(), in % of one core."""

    def start(self) -> ClientMeter:
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def stop(self) -> float:
        wall = time.perf_counter() - self.t0
        return 100.0 * (time.process_time() - self.cpu0) / wall if wall > 0 else 0.0


class OtherLoad:
    """How busy the machine was with processes other than the harness's.

    System-wide busy CPU time over the run, minus this process and its waited
    children (gateway, canned sender, peers) and any server pids given.
    Call stop() after every child has been waited for.
    """

    def __init__(self, pids: list) -> None:
        self.meters = [ProcessMeter(pid) for pid in pids]

    @staticmethod
    def _busy() -> tuple:
        t = psutil.cpu_times()
        steal = getattr(t, "steal", 0.0)
        idle = t.idle + getattr(t, "iowait", 0.0)
        return sum(t) - idle - steal - getattr(t, "guest", 0.0) - getattr(
            t, "guest_nice", 0.0
        ), steal

    @staticmethod
    def _ours() -> float:
        t = psutil.Process().cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> OtherLoad:
        self.ok = psutil is not None
        if self.ok:
            self.t0 = time.perf_counter()
            self.busy0, self.steal0 = self._busy()
            self.ours0 = self._ours()
            for m in self.meters:
                m.start()
        return self

    def stop_external(self) -> None:
        """Stops the meters of server pids (call before those servers stop)."""
        for m in self.meters:
            m.stop()

    def figures(self) -> dict:
        if not self.ok:
            return {}
        wall = time.perf_counter() - self.t0
        cpus = psutil.cpu_count() or 1
        busy, steal = self._busy()
        ours = self._ours() - self.ours0
        external = sum(m.cpu_s or 0.0 for m in self.meters)
        other = (busy - self.busy0) - ours - external
        return {
            "other_load_pct": round(max(0.0, 100.0 * other / (wall * cpus)), 1),
            "steal_pct": round(100.0 * (steal - self.steal0) / (wall * cpus), 1),
            "wall_s": round(wall, 1),
        }
