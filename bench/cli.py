"""``python -m bench``: run the scenarios and write the report."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import platform
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

from bench import report
from bench.scenarios import SCENARIOS, Ctx, Settings, run_scenario
from bench.servers import (
    Canned,
    check_external,
    external_target,
    parse_cpus,
    pingpong_us,
    start_gateway,
)
from bench.stats import OtherLoad

MIB = 1024 * 1024


def _positive(kind: type):
    """An argparse type: a finite number of `kind` above zero."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be above zero: {text!r}")
        return value

    convert.__name__ = kind.__name__
    return convert


def _cpus(text: str) -> set | None:
    try:
        return parse_cpus(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pid(text: str) -> int:
    pid = _positive(int)(text)
    if not os.path.exists(f"/proc/{pid}"):
        raise argparse.ArgumentTypeError(f"no process with pid {pid}")
    return pid


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark a0gw (started here on a temporary root) or any server "
        "with the same API at --url, optionally side by side with a second one "
        "(--compare).",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="short runs (about a minute and a half for everything); default is "
        "the full run",
    )
    p.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help=f"run only these (repeat or comma-separate): {', '.join(SCENARIOS)}",
    )
    p.add_argument(
        "--out", metavar="DIR", help="output folder (default bench/out/<timestamp>)"
    )
    g = p.add_argument_group("servers")
    g.add_argument(
        "--url",
        help="measure the server at this URL (http://HOST:PORT) instead "
        "of starting a0gw",
    )
    g.add_argument(
        "--root",
        help="AlephZero root of --url's server (default $A0_ROOT or "
        "/dev/shm/alephzero)",
    )
    g.add_argument(
        "--pid", type=_pid, help="pid of --url's server, for CPU and memory figures"
    )
    g.add_argument(
        "--label",
        help="name of the first server in the output (default a0gw, or A with --url)",
    )
    g.add_argument(
        "--compare",
        metavar="URL2",
        help="also measure this server, alternating A B A B, and print A/B",
    )
    g.add_argument(
        "--compare-root",
        metavar="DIR",
        help="AlephZero root of the --compare server (default $A0_ROOT or "
        "/dev/shm/alephzero)",
    )
    g.add_argument(
        "--compare-pid", type=_pid, metavar="PID", help="pid of the --compare server"
    )
    g.add_argument(
        "--compare-label",
        metavar="NAME",
        default="B",
        help="name of the --compare server in the output (default B)",
    )
    g.add_argument(
        "--token",
        help="bearer token the first server wants; the a0gw the harness starts "
        "is given it too",
    )
    g.add_argument(
        "--compare-token", metavar="TOKEN", help="bearer token of the --compare server"
    )
    g.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the a0gw the harness starts (repeatable), "
        "e.g. --serve-arg=--queue-limit=1048576",
    )
    g.add_argument(
        "--client-cpus",
        type=_cpus,
        metavar="LIST",
        help="pin the harness (load generators) and the AlephZero peers to these "
        "CPUs, e.g. 0 or 0-1",
    )
    g.add_argument(
        "--server-cpus",
        type=_cpus,
        metavar="LIST",
        help="pin the a0gw the harness starts, and the canned sender, to these CPUs",
    )
    t = p.add_argument_group("run length")
    t.add_argument(
        "--rounds",
        type=_positive(int),
        help="measurements per case and server (default 1 quick, 3 full)",
    )
    t.add_argument(
        "--time-scale",
        type=_positive(float),
        default=1.0,
        metavar="F",
        help="multiply every warm-up and measuring time by F",
    )
    t.add_argument(
        "--fanout-rate",
        type=_positive(float),
        metavar="PKT_S",
        help="publish rate of the fanout scenario (default 1000)",
    )
    t.add_argument(
        "--slow-mib",
        type=_positive(int),
        metavar="MIB",
        help="MiB published in slow_consumer (default 128 quick, 1024 full)",
    )
    t.add_argument(
        "--no-ceiling",
        action="store_true",
        help="skip measuring the client's own ceiling",
    )
    t.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def _scenarios(picked: list) -> list:
    if not picked:
        return list(SCENARIOS)
    names = [n.strip() for item in picked for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(
            f"unknown scenario(s): {', '.join(unknown)}; "
            f"choose from {', '.join(SCENARIOS)}"
        )
    return names


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


async def _run_all(ctx: Ctx, names: list, results: dict) -> None:
    for name in names:
        scen = SCENARIOS[name]()
        try:
            results["scenarios"].append(await run_scenario(ctx, scen))
        except Exception as exc:  # noqa: BLE001 - one failed scenario must not stop the rest
            ctx.say(f"{name} FAILED: {exc!r}")
            traceback.print_exc(file=sys.stderr)
            results["failures"].append({"scenario": name, "error": repr(exc)})


def _run(coro) -> None:
    """Runs `coro` on uvloop (asyncio without it); SIGTERM cancels it."""

    async def cancellable() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await coro
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _stop_on_sigterm)

    try:
        import uvloop
    except ImportError:
        asyncio.run(cancellable())
        return
    uvloop.run(cancellable())


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # As Ctrl-C: the finally blocks stop the gateway and peers and remove roots.
    raise KeyboardInterrupt


def main(argv: list | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    for option in ("root", "pid", "token"):
        if getattr(args, f"compare_{option}") is not None and not args.compare:
            parser.error(f"--compare-{option} needs --compare")
    names = _scenarios(args.scenario)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    settings = Settings.make(
        args.quick,
        args.time_scale,
        rounds=args.rounds,
        fanout_rate=args.fanout_rate,
        slow_bytes=args.slow_mib * MIB if args.slow_mib else None,
        ceiling=not args.no_ceiling,
    )
    started = datetime.datetime.now()
    out = (
        Path(args.out)
        if args.out
        else (
            Path(__file__).resolve().parent / "out" / started.strftime("%Y%m%d-%H%M%S")
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    run_id = f"{started.strftime('%H%M%S')}_{os.getpid()}"

    client_cpus = args.client_cpus
    server_cpus = args.server_cpus
    if client_cpus:
        # Peers started later inherit it.
        os.sched_setaffinity(0, client_cpus)
    targets = []
    canned = None
    load = None
    peer_log = open(out / "peers.log", "ab")  # noqa: SIM115 - closed in the finally below
    results: dict = {"scenarios": [], "failures": []}
    interrupted = False
    try:
        if args.url:
            targets.append(
                external_target(
                    args.label or "A", args.url, args.root, args.pid, args.token
                )
            )
        else:
            print("starting a0gw ...", file=sys.stderr, flush=True)
            serve_args = list(args.serve_arg)
            if args.token:
                serve_args += ["--token", args.token]
            target = start_gateway(args.label or "a0gw", out, serve_args, server_cpus)
            target.token = args.token
            targets.append(target)
        if args.compare:
            label = args.compare_label
            if label == targets[0].label:
                label += "2"
            targets.append(
                external_target(
                    label,
                    args.compare,
                    args.compare_root,
                    args.compare_pid,
                    args.compare_token,
                )
            )
        for t in targets:
            if t.proc is None:
                check_external(t, f"bench_{run_id}/root_check")
        if settings.ceiling:
            canned = Canned(server_cpus)
        results["meta"] = {
            "started": started.isoformat(timespec="seconds"),
            "quick": settings.quick,
            "rounds": settings.rounds,
            "settings": vars(settings),
            "scenarios": names,
            "argv": sys.argv[1:] if argv is None else argv,
            "cpus": os.cpu_count(),
            "loadavg_before": _loadavg(),
            "client_cpus": sorted(client_cpus) if client_cpus else None,
            "server_cpus": sorted(server_cpus) if server_cpus else None,
            "pingpong": pingpong_us(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
        results["targets"] = [t.describe() for t in targets]
        for t in targets:
            print(
                f"server {t.label}: {t.url} root {t.root}"
                f"{' pid ' + str(t.pid) if t.pid else ''}",
                file=sys.stderr,
                flush=True,
            )
        load = OtherLoad([t.pid for t in targets if t.proc is None and t.pid]).start()
        ctx = Ctx(settings, targets, canned, run_id, peer_log)
        t0 = time.perf_counter()
        try:
            _run(_run_all(ctx, names, results))
        except (KeyboardInterrupt, asyncio.CancelledError):
            interrupted = True
            print(
                "interrupted: stopping; the scenarios that finished are reported",
                file=sys.stderr,
                flush=True,
            )
            results["meta"]["interrupted"] = True
        results["meta"]["loadavg_after"] = _loadavg()
        results["meta"]["elapsed_s"] = round(time.perf_counter() - t0, 1)
    finally:
        if load is not None:
            load.stop_external()
        if canned is not None:
            canned.stop()
        for t in targets:
            t.stop()
            if not t.temp_root:
                # Only the folder of this run's topics, never anything else.
                shutil.rmtree(
                    os.path.join(t.root, f"bench_{run_id}"), ignore_errors=True
                )
        peer_log.close()

    if load is not None and "meta" in results:
        results["meta"]["other_load"] = load.figures()
    report.annotate(results)
    report.write_json(results, out / "results.json")
    md = report.markdown(results)
    if interrupted:
        md += "\n**Interrupted**: only the scenarios that finished are reported.\n"
    if results["failures"]:
        md += (
            "\n## Failures\n\n"
            + "\n".join(f"- {f['scenario']}: {f['error']}" for f in results["failures"])
            + "\n"
        )
    written, why = (
        ([], "disabled") if args.no_plots else report.best_effort_plots(results, out)
    )
    if written:
        md += (
            "\n## Plots\n\n"
            + "\n".join(f"![{name}]({name})" for name in written)
            + "\n"
        )
    (out / "results.md").write_text(md)
    print(md)
    print(
        f"results: {out / 'results.json'}, {out / 'results.md'}"
        f"{', ' + ', '.join(written) if written else ''}"
        f"{'' if written else f' (no plots: {why})'}",
        file=sys.stderr,
    )
    if interrupted:
        sys.exit(130)
    if results["failures"]:
        sys.exit(1)
