"""Results as JSON, a Markdown table and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from bench import targets as reftargets
from bench.scenarios import human, size_name
from bench.stats import log_histogram

# A result at or above this share of the client's ceiling may be limited by
# the client rather than by the server.
NEAR_CEILING = 0.7


# JSON


def _clean(m: dict) -> dict:
    """A metrics dict for JSON: raw latencies become a histogram, samples stay."""
    out = {}
    for key, value in m.items():
        if key == "_lat":
            out["latency_histogram"] = log_histogram(value)
        elif key == "_samples":
            out["rss_samples"] = [[t, round(r / 1e6, 3)] for t, r in value]
        elif not key.startswith("_"):
            out[key] = value
    return out


def annotate(results: dict) -> None:
    """Adds reference, target and verdict to every case that has one."""
    first = results["targets"][0]["label"]
    for scen in results["scenarios"]:
        for entry in scen["cases"]:
            ref = reftargets.lookup(scen["name"], entry["case"])
            if ref is None:
                continue
            value = entry["result"].get(first, {}).get(ref["metric"])
            entry["reference"] = ref
            entry["verdict"] = reftargets.verdict(value, ref["target"])


def to_json(results: dict) -> dict:
    out = dict(results)
    scens = []
    for scen in results["scenarios"]:
        s = dict(scen)
        cases = []
        for entry in scen["cases"]:
            e = dict(entry)
            e["runs"] = {k: [_clean(m) for m in v] for k, v in entry["runs"].items()}
            e["result"] = {k: _clean(m) for k, m in entry["result"].items()}
            if "ceiling" in entry:
                e["ceiling"] = _clean(entry["ceiling"])
            cases.append(e)
        s["cases"] = cases
        scens.append(s)
    out["scenarios"] = scens
    return out


def write_json(results: dict, path: Path) -> None:
    path.write_text(json.dumps(to_json(results), indent=1, default=str) + "\n")


# Markdown


def _f(key: str, fmt: Callable[[float], str]) -> Callable[[dict], str]:
    def get(m: dict) -> str:
        v = m.get(key)
        return "-" if v is None else fmt(v)

    return get


def _ms(v: float) -> str:
    return f"{v:.3f}"


def _drains(m: dict) -> str:
    if "drains" not in m:
        return "-"
    text = f"{m['complete_drains']}/{m['drains']}"
    if m.get("dropped"):
        text += f", {m['dropped']} dropped"
    if m.get("payload_ok") is False:
        text += ", BAD PAYLOAD"
    if m.get("errors"):
        text += f", {m['errors'][0]}"
    return text


def _received(m: dict) -> str:
    if "received" not in m:
        return m.get("error") or "-"
    return f"{m['received']}/{m['published']}"


def _delivered(m: dict) -> str:
    if "delivered" not in m:
        return m.get("error") or "-"
    return f"{m['delivered']}/{m['expected']}"


def _resume(m: dict) -> str:
    if "skipped" in m:
        return m["skipped"]
    if "messages_after_resume" not in m:
        return m.get("error") or "-"
    text = (
        f"{m['messages_after_resume']} msgs, END {'yes' if m['end_received'] else 'no'}"
    )
    if m.get("close_code"):
        text += f", closed {m['close_code']}"
    return text


def _errors(m: dict) -> str:
    return str(m.get("errors") or 0)


COLUMNS = {
    "rest_pub": [
        ("req/s", _f("rate", human)),
        ("p50 ms", _f("p50_ms", _ms)),
        ("p99 ms", _f("p99_ms", _ms)),
        ("gw µs/req", _f("gw_cpu_us_per_op", "{:.1f}".format)),
        ("errors", _errors),
    ],
    "rpc": [
        ("req/s", _f("rate", human)),
        ("p50 ms", _f("p50_ms", _ms)),
        ("p99 ms", _f("p99_ms", _ms)),
        ("gw µs/req", _f("gw_cpu_us_per_op", "{:.1f}".format)),
        ("errors", _errors),
    ],
    "ws_drain": [
        ("pkt/s", _f("pkt_rate", human)),
        ("MB/s", _f("mb_rate", "{:.1f}".format)),
        ("drains", _drains),
        ("gw µs/pkt", _f("gw_cpu_us_per_op", "{:.2f}".format)),
    ],
    "live_latency": [
        ("p50 ms", _f("p50_ms", _ms)),
        ("p99 ms", _f("p99_ms", _ms)),
        ("p99.9 ms", _f("p999_ms", _ms)),
        ("max ms", _f("max_ms", _ms)),
        ("received", _received),
    ],
    "fanout": [
        ("delivered pkt/s", _f("delivered_rate", human)),
        ("delivered", _delivered),
        ("gw µs/pkt", _f("gw_cpu_us_per_op", "{:.1f}".format)),
        ("gw CPU %", _f("gw_cpu_pct", "{:.0f}".format)),
    ],
    "slow_consumer": [
        ("RSS start MB", _f("rss_start_mb", "{:.0f}".format)),
        ("RSS peak MB", _f("rss_peak_mb", "{:.0f}".format)),
        ("RSS end MB", _f("rss_end_mb", "{:.0f}".format)),
        ("after resume", _resume),
    ],
}


def _ref_text(ref: dict) -> tuple:
    unit = {"rate": "req/s", "pkt_rate": "pkt/s", "mb_rate": "MB/s", "p99_ms": "ms"}[
        ref["metric"]
    ]
    value = "-" if ref["reference"] is None else f"{human(ref['reference'])} {unit}"
    target = "-"
    if ref["target"] is not None:
        op, bound = ref["target"]
        target = f"{'≥' if op == '>=' else '<'} {human(bound)} {unit}"
    return value, target


# Other processes using this share of the machine make the figures noisy.
BUSY_PCT = 15.0


def _busy(meta: dict) -> bool:
    load = meta.get("other_load") or {}
    return (load.get("other_load_pct") or 0) + (load.get("steal_pct") or 0) >= BUSY_PCT


def markdown(results: dict) -> str:
    labels = [t["label"] for t in results["targets"]]
    lines = ["# a0gw benchmark", ""]
    meta = results["meta"]
    lines.append(
        f"- run: {meta['started']} ({'quick' if meta['quick'] else 'full'}, "
        f"{meta['rounds']} round(s) per case)"
    )
    load = meta.get("other_load") or {}
    lines.append(
        f"- machine: {meta['cpus']} CPUs, "
        f"load average before {meta['loadavg_before']}; "
        f"other processes used {load.get('other_load_pct', '?')}% of it during the run"
        f" (steal {load.get('steal_pct', '?')}%)"
        + (
            ", counting the servers measured without --pid / --compare-pid"
            if any(
                not t["started_by_harness"] and not t["pid"] for t in results["targets"]
            )
            else ""
        )
    )
    pp = meta.get("pingpong") or {}
    if pp:
        text = ", ".join(
            f"{where.replace('_', ' ')} p50 {v['p50_us']} µs (p90 {v['p90_us']})"
            for where, v in pp.items()
        )
        lines.append(
            f"- round trip between two processes over pipes: {text}; a slow cross-CPU "
            "figure means slow wake-ups, which request/response exchanges "
            "(c=1, ON_ACK, rpc, live packets) pay when client and server "
            "run on different CPUs"
        )
    if meta.get("client_cpus") or meta.get("server_cpus"):
        lines.append(
            f"- pinned: client CPUs {meta.get('client_cpus') or 'any'}, "
            f"server CPUs {meta.get('server_cpus') or 'any'}"
        )
    if _busy(meta):
        lines.append(
            f"- **the machine was busy with other work** (≥ {BUSY_PCT:g}% of it): "
            "figures are noisy, latency tails especially"
        )
    for t in results["targets"]:
        lines.append(
            f"- server {t['label']}: {t['url']} (root {t['root']}"
            f"{', ' + t['version'] if t.get('version') else ''}"
            f"{', started by the harness' if t['started_by_harness'] else ''})"
        )
    if len(labels) == 2:
        lines.append(
            f"- `{labels[0]}/{labels[1]}` is the ratio of the scenario's main metric "
            "(median over rounds of the per-round pairs)"
        )
    if any("ceiling" in e for scen in results["scenarios"] for e in scen["cases"]):
        lines.append(
            "- `ceiling`: the same client against a trivial local sender; `vs ceiling` "
            f"≥ {int(NEAR_CEILING * 100)}% (marked !) means the client may be the "
            "limit; above 100% (marked !!) the server outran the sender, so that "
            "ceiling is the sender's: the client did at least the server's figure"
        )
    lines.append("")
    for scen in results["scenarios"]:
        name = scen["name"]
        lines.append(f"## {name}: {scen['title']}")
        lines.append("")
        cols = COLUMNS.get(name, [])
        has_ceiling = any("ceiling" in e for e in scen["cases"])
        has_ref = any("reference" in e for e in scen["cases"])
        header = ["case"]
        for label in labels:
            header += [f"{label} {c}" if len(labels) > 1 else c for c, _ in cols]
        if len(labels) == 2:
            header.append(f"{labels[0]}/{labels[1]}")
        if has_ceiling:
            header += ["ceiling", "vs ceiling"]
        if has_ref:
            header += ["reference", "target", f"{labels[0]} vs target"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for entry in scen["cases"]:
            row = [entry["name"]]
            for label in labels:
                m = entry["result"].get(label, {})
                row += [get(m) for _, get in cols]
            if len(labels) == 2:
                r = entry.get("ratio")
                row.append("-" if r is None else f"{r:.2f}")
            if has_ceiling:
                ceiling = entry.get("ceiling")
                key = scen["primary"]
                if ceiling and ceiling.get(key):
                    row.append(human(ceiling[key]))
                    a = entry["result"].get(labels[0], {}).get(key)
                    share = a / ceiling[key] if a is not None else None
                    row.append(
                        "-"
                        if share is None
                        else f"{share * 100:.0f}%"
                        + (
                            " !!"
                            if share > 1
                            else " !"
                            if share >= NEAR_CEILING
                            else ""
                        )
                    )
                else:
                    row += ["-", "-"]
            if has_ref:
                ref = entry.get("reference")
                if ref:
                    value, target = _ref_text(ref)
                    got = entry["result"].get(labels[0], {}).get(ref["metric"])
                    status = entry.get("verdict") or "-"
                    if got is not None and ref["metric"] == "p99_ms":
                        status += f" ({got:.2f} ms)"
                    elif got is not None:
                        status += f" ({human(got)})"
                    row += [value, target, status]
                else:
                    row += ["-", "-", "-"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


# Plots


def plots(results: dict, out: Path) -> list:
    """Writes the PNG plots; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    labels = [t["label"] for t in results["targets"]]
    styles = ["-", "--"]
    by_name = {s["name"]: s for s in results["scenarios"]}

    from matplotlib.ticker import FuncFormatter

    def save(fig, name: str) -> None:
        if not any(ax.has_data() for ax in fig.axes):
            # Every case of the scenario failed: no empty picture.
            plt.close(fig)
            return
        for ax in fig.axes:
            handles = ax.get_legend_handles_labels()[0]
            if handles:
                ax.legend(fontsize=7, ncol=2 if len(handles) > 8 else 1)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    def readable_log_ticks(axis) -> None:
        """Plain numbers on a log axis, minor ticks labelled at 2 and 5 only,
        so that a range within one decade still reads and labels never touch."""
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(
            FuncFormatter(lambda v, _: f"{v:g}" if f"{v:e}"[0] in "25" else "")
        )

    def size_axis(ax, sizes) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([size_name(s) for s in sizes])
        ax.set_xlabel("payload")
        ax.grid(True, which="both", alpha=0.3)

    if "rest_pub" in by_name:
        scen = by_name["rest_pub"]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sizes = sorted({e["case"]["size"] for e in scen["cases"]})
        concs = sorted({e["case"]["concurrency"] for e in scen["cases"]})
        for ci, c in enumerate(concs):
            rows = [e for e in scen["cases"] if e["case"]["concurrency"] == c]
            rows.sort(key=lambda e: e["case"]["size"])
            xs = [e["case"]["size"] for e in rows]
            for li, label in enumerate(labels):
                ys = [e["result"].get(label, {}).get("rate") for e in rows]
                ax.plot(
                    xs,
                    ys,
                    styles[li % 2],
                    marker="o",
                    color=f"C{ci}",
                    label=f"{label} c={c}",
                )
            ceil = [e.get("ceiling", {}).get("rate") for e in rows]
            if any(ceil):
                ax.plot(
                    xs, ceil, ":", color=f"C{ci}", alpha=0.6, label=f"ceiling c={c}"
                )
        size_axis(ax, sizes)
        ax.set_yscale("log")
        ax.set_ylabel("requests/s")
        ax.set_title("REST publish throughput")
        save(fig, "rest_pub.png")

    if "ws_drain" in by_name:
        scen = by_name["ws_drain"]
        fig, axes = plt.subplots(1, 2, figsize=(13, 5))
        sizes = sorted({e["case"]["size"] for e in scen["cases"]})
        combos = sorted(
            {(e["case"]["encoding"], e["case"]["scheduler"]) for e in scen["cases"]}
        )
        for ki, (metric, ylabel) in enumerate(
            (("pkt_rate", "packets/s"), ("mb_rate", "payload MB/s"))
        ):
            ax = axes[ki]
            for ci, (enc, sched) in enumerate(combos):
                rows = sorted(
                    (
                        e
                        for e in scen["cases"]
                        if e["case"]["encoding"] == enc
                        and e["case"]["scheduler"] == sched
                    ),
                    key=lambda e: e["case"]["size"],
                )
                xs = [e["case"]["size"] for e in rows]
                for li, label in enumerate(labels):
                    ys = [e["result"].get(label, {}).get(metric) for e in rows]
                    ax.plot(
                        xs,
                        ys,
                        styles[li % 2],
                        marker="o",
                        color=f"C{ci}",
                        label=f"{label} {enc} {sched}",
                    )
            for enc, mode, sched, style in (
                ("none", "stream", "IMMEDIATE", ":"),
                ("none", "ack", "ON_ACK", "-."),
                ("base64", "stream", "IMMEDIATE", ":"),
                ("base64", "ack", "ON_ACK", "-."),
            ):
                rows = sorted(
                    (
                        e
                        for e in scen["cases"]
                        if e["case"]["encoding"] == enc
                        and e["case"]["scheduler"] == sched
                        and "ceiling" in e
                    ),
                    key=lambda e: e["case"]["size"],
                )
                if rows:
                    ax.plot(
                        [e["case"]["size"] for e in rows],
                        [e["ceiling"].get(metric) for e in rows],
                        style,
                        color="gray" if enc == "none" else "black",
                        marker="x",
                        label=f"ceiling {enc} {mode}",
                    )
            size_axis(ax, sizes)
            ax.set_yscale("log")
            ax.set_ylabel(ylabel)
        axes[0].set_title("WebSocket drain: packets/s")
        axes[1].set_title("WebSocket drain: payload MB/s")
        save(fig, "ws_drain.png")

    lat_scens = [n for n in ("live_latency", "rest_pub", "rpc") if n in by_name]
    if lat_scens:
        fig, axes = plt.subplots(
            1, len(lat_scens), figsize=(6 * len(lat_scens), 4.5), squeeze=False
        )
        for ax, name in zip(axes[0], lat_scens):
            scen = by_name[name]
            for ci, entry in enumerate(scen["cases"]):
                if name == "rest_pub" and entry["case"]["size"] != 64:
                    continue
                for li, label in enumerate(labels):
                    lat = entry["result"].get(label, {}).get("_lat")
                    if not lat:
                        continue
                    values = sorted(v / 1e6 for v in lat)
                    n = len(values)
                    # Complementary CDF: the share of samples slower than x,
                    # so p99 and p99.9 show as 1e-2 and 1e-3.
                    idx = sorted(
                        set(
                            [
                                min(n - 1, int(n * (1 - 10 ** (-k / 50))))
                                for k in range(301)
                            ]
                            + list(range(max(0, n - 50), n))
                        )
                    )
                    xs = [values[i] for i in idx]
                    ys = [(n - i) / n for i in idx]
                    ax.plot(
                        xs,
                        ys,
                        styles[li % 2],
                        color=f"C{ci}",
                        drawstyle="steps-post",
                        label=f"{label} {entry['name']}",
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            readable_log_ticks(ax.xaxis)
            ax.set_xlabel("latency (ms)")
            ax.set_ylabel("share of samples slower than x")
            ax.set_title(f"{name} latency distribution")
            ax.grid(True, which="both", alpha=0.3)
        save(fig, "latency.png")

    if "fanout" in by_name:
        scen = by_name["fanout"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        xs = [e["case"]["subscribers"] for e in scen["cases"]]
        for li, label in enumerate(labels):
            axes[0].plot(
                xs,
                [
                    e["result"].get(label, {}).get("delivered_rate")
                    for e in scen["cases"]
                ],
                styles[li % 2],
                marker="o",
                label=f"{label} delivered",
            )
            axes[1].plot(
                xs,
                [
                    e["result"].get(label, {}).get("gw_cpu_us_per_op")
                    for e in scen["cases"]
                ],
                styles[li % 2],
                marker="o",
                label=label,
            )
        axes[0].plot(
            xs,
            [e["case"]["rate"] * e["case"]["subscribers"] for e in scen["cases"]],
            ":",
            color="gray",
            label="published x subscribers",
        )
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xlabel("subscribers")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_yscale("log")
        axes[0].set_ylabel("packets/s delivered (all subscribers)")
        axes[1].set_ylabel("gateway CPU µs per delivered packet")
        axes[0].set_title("Fan-out throughput")
        axes[1].set_title("Fan-out cost")
        save(fig, "fanout.png")

    if "slow_consumer" in by_name:
        scen = by_name["slow_consumer"]
        fig, ax = plt.subplots(figsize=(8, 5))
        drawn = False
        notes = 0
        for ci, entry in enumerate(scen["cases"]):
            for li, label in enumerate(labels):
                samples = entry["result"].get(label, {}).get("_samples")
                if samples:
                    ax.plot(
                        [t for t, _ in samples],
                        [r / 1e6 for _, r in samples],
                        styles[li % 2],
                        color=f"C{ci}",
                        label=f"{label} {entry['name']}",
                    )
                    events = entry["result"][label].get("events_s") or {}
                    for event, at in sorted(events.items(), key=lambda x: x[1]):
                        ax.axvline(at, color=f"C{ci}", alpha=0.35, linestyle=":")
                        # One row per note, top down, so none overlaps another.
                        ax.annotate(
                            f" {label} {entry['name']}: {event}",
                            (at, 0.95 - 0.065 * notes),
                            xycoords=("data", "axes fraction"),
                            fontsize=7,
                            color=f"C{ci}",
                            ha="left",
                            va="top",
                        )
                        notes += 1
                    drawn = True
        if drawn:
            ax.set_xlabel("seconds")
            ax.set_ylabel("gateway RSS (MB)")
            ax.set_title("Slow consumer: gateway resident memory")
            ax.grid(True, alpha=0.3)
            save(fig, "slow_consumer.png")
        else:
            plt.close(fig)

    if "rpc" in by_name:
        scen = by_name["rpc"]
        fig, ax = plt.subplots(figsize=(6, 4))
        names = [e["name"] for e in scen["cases"]]
        width = 0.8 / (len(labels) + 1)
        for li, label in enumerate(labels):
            bars = ax.bar(
                [i + li * width for i in range(len(names))],
                [e["result"].get(label, {}).get("rate") or 0 for e in scen["cases"]],
                width,
                label=label,
            )
            ax.bar_label(bars, labels=[human(b.get_height()) for b in bars], fontsize=7)
        ceil = [e.get("ceiling", {}).get("rate") or 0 for e in scen["cases"]]
        if any(ceil):
            ax.bar(
                [i + len(labels) * width for i in range(len(names))],
                ceil,
                width,
                color="lightgray",
                label="ceiling",
            )
            ax.bar_label(ax.containers[-1], labels=[human(c) for c in ceil], fontsize=7)
        ax.set_xticks([i + width * len(labels) / 2 for i in range(len(names))])
        ax.set_xticklabels(names)
        ax.set_yscale("log")
        readable_log_ticks(ax.yaxis)
        ax.set_ylabel("round trips/s")
        ax.set_title("REST RPC")
        save(fig, "rpc.png")

    return written


def best_effort_plots(results: dict, out: Path) -> tuple:
    """Plots, or the reason there are none (matplotlib missing or failing)."""
    try:
        return plots(results, out), None
    except ImportError:
        return [], "matplotlib is not installed (pip install '.[bench]')"
    except Exception as exc:  # noqa: BLE001 - a plot must not lose the measurements
        return [], f"plotting failed: {exc!r}"
