"""Logstream's benchmark, side by side with nginx + Nchan in the same run.

    python bench/run.py            # every case, ~7 min; writes bench/RESULTS.md + fanout.png
    python bench/run.py --quick    # a smoke run, written to a temp dir
    python bench/run.py --cases fanout,profile --rates 20,50,100
    python bench/run.py --cases channels --out /tmp/channels

Starts its own systems on free loopback ports: an embedded nats-server, ingest and two
gateways (dev mode, separate processes), and nginx + Nchan with one and with two workers, each
with its own config in a temp dir; the channels case starts a stack of its own with four
gateways, the history case one with one gateway, the storm case one whose gateway it restarts.
See bench/README.md for what each case measures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cases.channels import channels_case
from bench.cases.fanout import fanout_ramp
from bench.cases.flood import flood_case
from bench.cases.history import history_case
from bench.cases.ingest import fsync_floor, ingest_case
from bench.cases.latency import latency_case
from bench.cases.memory import memory_case
from bench.cases.replay import replay_case
from bench.cases.storm import storm_case
from bench.machine import load_average, machine_summary, raise_open_files, versions
from bench.nchan import APT_COMMAND, Nchan, NchanSystem, find_nginx_nchan, install_nginx_nchan
from bench.plot import plot_fanout
from bench.profile import find_py_spy, profile_fanout
from bench.report import Results, render
from bench.stack import LogstreamStack, LogstreamSystem
from logstream.shared.embedded_nats import find_nats_server
from tests.support.nats_source import free_port

CASES = (
    "fanout",
    "latency",
    "memory",
    "ingest",
    "flood",
    "replay",
    "profile",
    "channels",
    "history",
    "storm",
)
BENCH_DIR = Path(__file__).resolve().parent
FULL = dict(
    subscribers=1000,
    rates="1,2,5,10,20,50,100,150,200,300,400,600,800,1200,1600",
    step_s=5.0,
    latency_s=10.0,
    memory_connections=5000,
    ingest_s=8.0,
    flood_rate=50_000.0,
    flood_s=5.0,
    flood_subscribers=1,
    replay_records=100_000,
    profile_s=10.0,
    channels_streams=10_000,
    channels_rate=5_000.0,
    channels_churn=100.0,
    channels_s=10.0,
    channels_open_timeout=120.0,
    history_records=1_000_000,
    history_channels=1_000,
    history_requests=30,
    storm_streams=5_000,
    storm_channels=500,
    storm_rate=1_000.0,
    storm_s=5.0,
)
# Below this rate a 1,000-stream gateway idles too much for py-spy to say where time goes.
PROFILE_MIN_RATE = 10.0
QUICK = dict(
    subscribers=200,
    rates="50,150",
    step_s=1.0,
    latency_s=1.0,
    memory_connections=300,
    ingest_s=0.75,
    flood_rate=5_000.0,
    flood_s=1.0,
    flood_subscribers=1,
    replay_records=3_000,
    profile_s=2.0,
    channels_streams=1_000,
    channels_rate=500.0,
    channels_churn=20.0,
    channels_s=3.0,
    channels_open_timeout=60.0,
    history_records=50_000,
    history_channels=1_000,
    history_requests=10,
    storm_streams=500,
    storm_channels=50,
    storm_rate=200.0,
    storm_s=2.0,
)


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (~1 min)")
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}"
    )
    parser.add_argument("--no-nchan", action="store_true", help="Logstream only (no ratios)")
    parser.add_argument(
        "--install-nchan",
        action="store_true",
        help="as root: apt-get install nginx libnginx-mod-nchan if missing",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where RESULTS.md and fanout.png go (default: bench/, or a temp dir with --quick)",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=2,
        help="bulk subscriber processes per system in the fan-out case",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness increment for the bench and all it starts (negative: "
        "root only; on a shared machine it takes CPU from other work)",
    )
    parser.add_argument(
        "--profile-rate",
        type=float,
        default=None,
        help="msgs/s of the profiled fan-out window (default: where Logstream "
        f"1 gateway first failed, at least {PROFILE_MIN_RATE:g})",
    )
    parser.add_argument(
        "--no-fsync-case",
        action="store_true",
        help="skip ingest against a broker with sync_interval: always",
    )
    for name, default in FULL.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=type(default),
            default=None,
            help=f"default {default} ({QUICK[name]} with --quick)",
        )
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for name, default in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    args.rate_list = [float(rate) for rate in args.rates.split(",")]
    return args


def nchan_tools(args) -> tuple[str, str] | None:
    if args.no_nchan:
        return None
    nginx, module, missing = find_nginx_nchan()
    if missing and args.install_nchan:
        install_nginx_nchan()
        nginx, module, missing = find_nginx_nchan()
    if missing:
        raise SystemExit(
            f"{missing} not found. Install them (Debian/Ubuntu):\n    sudo "
            f"{' '.join(APT_COMMAND)}\nor run with --install-nchan as root, or "
            "--no-nchan for Logstream alone."
        )
    assert nginx is not None and module is not None  # else `missing` named them
    return nginx, module


async def run_cases(args, results: Results, workdir: Path, tools: tuple[str, str] | None) -> None:
    stack = LogstreamStack(workdir / "logstream", gateways=2)
    nchans: list[Nchan] = []
    try:
        stack.start()
        if tools:
            nchans = [Nchan(*tools, workdir, free_port(), workers).start() for workers in (1, 2)]
        one, two = LogstreamSystem(stack, 1), LogstreamSystem(stack, 2)
        n1, n2 = ([NchanSystem(n) for n in nchans] + [None, None])[:2]
        pick = lambda *systems: [s for s in systems if s is not None]  # noqa: E731
        steps = {
            "fanout": lambda: _fanout(args, results, pick(one, two, n1, n2)),
            "latency": lambda: _set(
                results,
                "latency",
                latency_case(
                    pick(
                        LogstreamSystem(stack, 1, via_ingest=True),
                        one,
                        LogstreamSystem(stack, 1, via_ingest=True, via_proxy=True),
                        n1,
                    ),
                    100,
                    500.0,
                    args.latency_s,
                ),
            ),
            "memory": lambda: _set(
                results,
                "memory",
                memory_case(pick(one, n1), args.memory_connections, 0.5 if args.quick else 2.0),
            ),
            "ingest": lambda: _ingest(args, results, stack, workdir),
            "flood": lambda: _set(
                results,
                "flood",
                flood_case(pick(one, n1), args.flood_subscribers, args.flood_rate, args.flood_s),
            ),
            "replay": lambda: _set(results, "replay", replay_case(one, args.replay_records)),
            "profile": lambda: _profile(args, results, one, workdir),
            # A stack of its own: four fresh gateways, no channel seen before.
            "channels": lambda: _set(
                results,
                "channels",
                channels_case(LogstreamStack, workdir, nchans[0] if nchans else None, args),
            ),
            # A stack of its own too: a stream of exactly the records it writes.
            "history": lambda: _history(args, results, workdir),
            # A stack of its own: its one gateway is restarted.
            "storm": lambda: _storm(args, results, workdir),
        }
        for case in args.cases:
            print(f"== {case} (load average {load_average()})", flush=True)
            began = time.monotonic()
            try:
                await steps[case]()
            except Exception as exc:  # one broken case must not lose the others' figures
                results.errors[case] = f"{type(exc).__name__}: {exc}"
                print(f"   {case} failed: {exc!r}", flush=True)
            print(f"   ({case}: {time.monotonic() - began:.0f} s)", flush=True)
    finally:
        for nchan in nchans:
            nchan.stop()
        stack.stop()


async def _set(results: Results, name: str, case) -> None:
    setattr(results, name, await case)


async def _fanout(args, results: Results, systems) -> None:
    results.fanout = await fanout_ramp(
        systems, args.subscribers, args.rate_list, args.step_s, args.client_processes
    )


async def _ingest(args, results: Results, stack, workdir: Path) -> None:
    synced = None
    if not (args.quick or args.no_fsync_case):
        # The floor first, on the disk the durable broker's store is on, with nothing else
        # of the bench running.
        results.fsync_floor = fsync_floor(workdir / "synced")
        floor = results.fsync_floor
        print(
            f"   fsync floor: p50 {floor.p50_ms:.3f} ms, p99 {floor.p99_ms:.3f} ms "
            f"({floor.per_second:,.0f} fsyncs/s)",
            flush=True,
        )
        synced = LogstreamStack(workdir / "synced", gateways=0, sync_always=True).start()
    try:
        results.ingest = await ingest_case(stack, args.ingest_s, synced_stack=synced)
    finally:
        if synced is not None:
            synced.stop()


async def _history(args, results: Results, workdir: Path) -> None:
    results.history = await history_case(LogstreamStack, workdir, args)
    if results.history.problems:  # the figures stay in RESULTS.md; the case failed
        raise RuntimeError("; ".join(results.history.problems))


async def _storm(args, results: Results, workdir: Path) -> None:
    results.storm = await storm_case(LogstreamStack, workdir, args)
    if results.storm.problems:  # the figures stay in RESULTS.md; the case failed
        raise RuntimeError("; ".join(results.storm.problems))


async def _profile(args, results: Results, system, workdir: Path) -> None:
    py_spy = find_py_spy()
    if py_spy is None:
        raise RuntimeError("py-spy not found (pip install py-spy)")
    # Where the gateway first fell short, where it is busiest; but busy enough for a table.
    run = next((r for r in results.fanout if r.system == system.name), None)
    if args.profile_rate:
        rate = args.profile_rate
    elif run and run.failure and run.steps:
        rate = max(run.steps[-1].rate, PROFILE_MIN_RATE)
    else:
        rate = run.best.rate if run and run.best else args.rate_list[0]
    results.profile = await profile_fanout(
        system,
        py_spy,
        args.subscribers,
        rate,
        args.profile_s,
        args.client_processes,
        results.settings["out"] / "gateway-profile.txt",
    )
    print(f"   profiled at {rate:,.0f} msgs/s: {results.profile.samples} samples", flush=True)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tools = nchan_tools(args)
    out = args.out or (
        Path(tempfile.mkdtemp(prefix="logstream-bench-quick-")) if args.quick else BENCH_DIR
    )
    out.mkdir(parents=True, exist_ok=True)
    raise_open_files()
    if args.nice:
        os.nice(args.nice)  # inherited by every process the bench starts
    command = "python bench/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    settings = {key: getattr(args, key) for key in FULL} | {"out": out, "nice": args.nice}
    results = Results(
        command.strip(),
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        machine_summary(),
        versions(find_nats_server(), tools and tools[0]),
        settings,
    )
    started = time.monotonic()
    print(f"starting Logstream and Nchan (load average {load_average()})", flush=True)
    with tempfile.TemporaryDirectory(prefix="logstream-bench-") as workdir:
        asyncio.run(run_cases(args, results, Path(workdir), tools))
    results.duration_s = time.monotonic() - started
    if results.fanout and plot_fanout(results.fanout, args.subscribers, out / "fanout.png"):
        results.plot = "fanout.png"
    (out / "RESULTS.md").write_text(render(results))
    print(f"wrote {out / 'RESULTS.md'} in {results.duration_s:.0f} s", flush=True)
    return 1 if results.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
