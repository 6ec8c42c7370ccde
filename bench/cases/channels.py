"""The many-channels case. Streams on thousands of distinct channels, opened from cold,
fed a steady load spread over them, churned, and dealt over four gateways.

Per system (Logstream: one fresh gateway of a stack of its own; Nchan: one worker), in turn:
1. cold open: ``streams`` streams on as many channels ``logs:etl:ws<i % 2000>:wf<i>``, never
   seen before, opened with a bounded number in flight; the wall time until all are connected
   and each one's connect latency (GET sent to ``event: connected``; Nchan: the response head);
2. steady: ``rate`` msgs/s round-robin over the channels for ``seconds``: delivery latency, and
   per stream exactly its channel's records must arrive (short, over, lost, repeated, cut);
3. churn: the same load on all but ``churn`` streams; those close and reopen on channels never
   seen before (``logs:etl:churn<k % 2000>:x<k>``) at ``churn`` per second, each living about
   a second: the reopens' connect latency, the others' delivery and loss, the gateway's loop lag.
Then Logstream with four gateways: the streams dealt by a stable hash of their workspace, the
same load; per gateway the records it read from NATS against those its streams wanted, and CPU.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from bench.channel_pool import ChannelPool
from bench.channel_systems import (
    WORKSPACES,
    LagSummary,
    LogstreamChannels,
    NchanChannels,
    channel_of,
    lag_between,
    log_problems,
    scrape,
)
from bench.machine import cpu_seconds, load_average
from bench.publishers import pace
from bench.window import DRAIN_IDLE_S, DRAIN_MAX_S, percentile

__all__ = ["ChannelsRun", "Opened", "Phase", "channels_case"]

SPLIT_GATEWAYS = 4
CLIENT_WORKERS = 2
# Streams sent but not yet connected, per client worker: opening is paced by the server.
OPEN_IN_FLIGHT = 100
# A churned stream lives this long before it is closed (so ``churn`` x this many churn at once).
CHURN_LIFETIME_S = 1.0
_POLL_S = 0.1
QUIET_SHARE = 0.1
QUIET_MAX_S = 60.0


@dataclass
class Opened:
    streams: int
    ready: int
    seconds: float | None  # until the last one connected; None when not all did in time
    p50: float
    p99: float
    failed: dict
    timeout_s: float
    abandoned: int = 0  # churn: closed by the client (end of its life) before it connected

    @property
    def complete(self) -> bool:
        return self.ready == self.streams


@dataclass
class Phase:
    name: str
    rate: float
    duration_s: float
    sent: int = 0
    accepted: int = 0
    streams: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    repeated: int = 0
    short: int = 0
    over: int = 0
    cut: int = 0
    overflow: int = 0
    p50: float = float("nan")
    p99: float = float("nan")
    cpu_s: dict = field(default_factory=dict)  # group -> CPU seconds in the publishing window
    window_s: float = 0.0
    lag: LagSummary | None = None  # a gateway exporting loop lag, else None
    reopen: Opened | None = None
    broker: dict = field(default_factory=dict)  # the gateways' catch-ups, repairs, interests
    gateways: list = field(default_factory=list)  # (streams, read, wanted, CPU s)
    load: str = ""


@dataclass
class ChannelsRun:
    system: str
    streams: int
    cold: Opened | None = None
    steady: Phase | None = None
    churn: Phase | None = None
    problems: list[str] = field(default_factory=list)
    log_lines: int = 0
    log_examples: list[str] = field(default_factory=list)


async def _open(pool: ChannelPool, items: list, timeout_s: float) -> Opened:
    started = time.monotonic_ns()
    await asyncio.to_thread(pool.open, items)
    while True:
        status = await asyncio.to_thread(pool.status)
        done = status["ready"] + sum(status["failed"].values())
        if done >= len(items) and not status["waiting"]:
            break
        if time.monotonic_ns() - started > timeout_s * 1e9:
            break
        await asyncio.sleep(_POLL_S)
    report = await asyncio.to_thread(pool.report)
    keys = {item[0] for item in items}
    waits = [ms for key, ms in report["ready_ms"].items() if key in keys]
    seconds = (status["last_ready_ns"] - started) / 1e9 if len(waits) == len(items) else None
    return Opened(
        len(items),
        len(waits),
        seconds,
        percentile(waits, 0.5),
        percentile(waits, 0.99),
        dict(status["failed"]),
        timeout_s,
    )


def _cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}


async def _scrapes(system) -> list:
    if not isinstance(system, LogstreamChannels):
        return []
    return [await asyncio.to_thread(scrape, g.port) for g in system.gateways]


async def _window(
    name: str,
    system,
    pool: ChannelPool,
    counted: dict[int, str],
    rate: float,
    seconds: float,
    churn=None,
) -> Phase:
    """Publish ``rate`` msgs/s over the channels of ``counted`` (key -> channel) and check every
    counted stream got exactly its channel's records. ``churn``: (plan(start_ns) -> the pool's
    entries, the keys it opens)."""
    channels = sorted(set(counted.values()))
    index = {channel: i for i, channel in enumerate(channels)}
    publisher = await system.publisher(channels)
    phase = Phase(name, rate, seconds, load=load_average())
    groups = system.pids() | {"client": pool.pids}
    try:
        before = await _scrapes(system)
        await asyncio.to_thread(pool.reset)
        cpu, me = _cpu(groups), os.times()
        if churn is not None:
            await asyncio.to_thread(pool.plan, churn[0](time.monotonic_ns() + 50_000_000))
        started = time.monotonic()
        paced = await pace(publisher.publish, rate, seconds)
        phase.window_s = time.monotonic() - started
        spent, used = os.times(), _cpu(groups)
        phase.cpu_s = {n: used[n] - cpu[n] for n in groups}
        phase.cpu_s["publisher"] = (spent.user + spent.system) - (me.user + me.system)
        at_end = await _scrapes(system)
        phase.sent, phase.accepted = paced.sent, paced.accepted
        accepted = publisher.accepted
        phase.expected = sum(accepted[index[c]] for c in counted.values())
        await _drain(pool, phase.expected, churn is not None)
        after = await _scrapes(system)
    finally:
        await publisher.close()
    report = await asyncio.to_thread(pool.report)
    for key, channel in counted.items():
        got, wanted = report["counts"].get(key, 0), accepted[index[channel]]
        phase.delivered += got
        phase.lost += max(0, wanted - got)
        phase.repeated += max(0, got - wanted)
        phase.short += got < wanted
        phase.over += got > wanted
    phase.streams = len(counted)
    phase.cut = len(report["cut"] & counted.keys())
    phase.overflow = len(report["overflow"] & counted.keys())
    latency = list(report["latency_ms"])
    phase.p50, phase.p99 = percentile(latency, 0.5), percentile(latency, 0.99)
    if before and at_end:
        phase.lag = lag_between(before[0], at_end[0])
    if before and before[0].interests is not None:  # a gateway exporting the broker gauges
        phase.broker = {
            name: sum(getattr(a, name) - getattr(b, name) for a, b in zip(after, before))
            for name in ("catch_ups", "repairs")
        }
        phase.broker["interests"] = sum(a.interests for a in after)
    if isinstance(system, LogstreamChannels) and len(system.gateways) > 1:
        wanted, held = [0] * len(system.gateways), [0] * len(system.gateways)
        for channel in channels:
            wanted[system.gateway_of(channel)] += accepted[index[channel]]
        for channel in counted.values():
            held[system.gateway_of(channel)] += 1
        phase.gateways = [
            (held[i], after[i].read - before[i].read, wanted[i], phase.cpu_s[f"gateway {i + 1}"])
            for i in range(len(wanted))
        ]
    if churn is not None:  # a reopen that never connected counts as infinitely late
        waits = [report["ready_ms"].get(key, float("inf")) for key in churn[1]]
        phase.reopen = Opened(
            len(waits),
            sum(w < float("inf") for w in waits),
            None,
            percentile(waits, 0.5),
            percentile(waits, 0.99),
            dict(report["failed"]),
            seconds,
            len(report["abandoned"] & set(churn[1])),
        )
    return phase


async def _drain(pool: ChannelPool, expected: int, churned: bool) -> None:
    """Until every record arrived (and, after churn, every planned reopen was answered), or
    nothing moved for ``DRAIN_IDLE_S``, or ``DRAIN_MAX_S`` passed."""
    last, last_change = -1, time.monotonic()
    deadline = time.monotonic() + DRAIN_MAX_S
    while time.monotonic() < deadline:
        status = await asyncio.to_thread(pool.status)
        received = status["received"]
        if received >= expected and not (churned and (status["scheduled"] or status["waiting"])):
            return
        if received != last:
            last, last_change = received, time.monotonic()
        elif time.monotonic() - last_change > DRAIN_IDLE_S:
            return
        await asyncio.sleep(0.2)


def _churn_plan(system, ready: list[int], first_key: int, per_s: float, seconds: float):
    """(the keys churned away, plan(start_ns) -> pool entries, the reopened keys)."""
    slots = max(1, min(len(ready) // 2, round(per_s * CHURN_LIFETIME_S)))
    step = max(1, len(ready) // slots)
    holders = ready[::step][:slots]
    total = int(per_s * seconds)
    reopened = list(range(first_key, first_key + total))

    def plan(start_ns: int) -> list:
        entries, held = [], list(holders)
        for k, key in enumerate(reopened):
            due = start_ns + int(k / per_s * 1e9)
            slot = k % slots
            entries.append((due, "close", held[slot]))
            channel = f"logs:etl:churn{k % WORKSPACES}:x{k}"
            entries.append((due, "open", system.item(key, channel)))
            held[slot] = key
        return entries

    return set(holders), plan, reopened


async def _quiet(system) -> None:
    """Until the servers idle (under ``QUIET_SHARE`` of a core over a second; at most
    ``QUIET_MAX_S``): a gateway still answering requests of streams the client gave up on must
    not load the next system's figures."""
    pids = [pid for group in system.pids().values() for pid in group]
    deadline = time.monotonic() + QUIET_MAX_S
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(pid) for pid in pids)
        await asyncio.sleep(1.0)
        if sum(cpu_seconds(pid) for pid in pids) - before < QUIET_SHARE:
            return


async def _unsubscribed(system) -> None:
    """Until no gateway subscribes to anything (the first lets go of the one-gateway phases'
    channels 2 s after their streams closed), else a gateway would read records it no longer
    wants and the split's read/wanted would count them. Gateways without the gauge: at once."""
    deadline = time.monotonic() + QUIET_MAX_S
    while time.monotonic() < deadline:
        if not any(s.interests for s in await _scrapes(system)):
            return
        await asyncio.sleep(_POLL_S)


async def _one_system(system, pool: ChannelPool, args, *, split: bool = False) -> ChannelsRun:
    """Cold open, steady, churn; or with ``split`` (four gateways) open and one window."""
    streams = args.channels_streams
    run = ChannelsRun(system.name, streams)
    try:
        items = [system.item(i, channel_of(i)) for i in range(streams)]
        run.cold = await _open(pool, items, args.channels_open_timeout)
        _print_open(system.name, "open" if split else "cold open", run.cold)
        if not run.cold.complete:
            run.problems.append(
                f"opening did not complete in {args.channels_open_timeout:g} s "
                f"({run.cold.ready:,} of {streams:,} connected): not measured "
                "further"
            )
            return run
        counted = {i: channel_of(i) for i in range(streams)}
        run.steady = await _window(
            "4 gateways" if split else "steady",
            system,
            pool,
            counted,
            args.channels_rate,
            args.channels_s,
        )
        _print_phase(system.name, run.steady)
        if split:
            return run
        churned, plan, reopened = _churn_plan(
            system, list(range(streams)), streams, args.channels_churn, args.channels_s
        )
        stable = {k: c for k, c in counted.items() if k not in churned}
        run.churn = await _window(
            "churn", system, pool, stable, args.channels_rate, args.channels_s, (plan, reopened)
        )
        _print_phase(system.name, run.churn)
    finally:
        await asyncio.to_thread(pool.close_all)
        await _quiet(system)
        run.log_lines, run.log_examples = log_problems(system.logs())
    return run


async def channels_case(stack_class, workdir, nchan, args) -> list[ChannelsRun]:
    """``stack_class``: ``bench.stack.LogstreamStack``, started here with four fresh gateways
    (the first serves the one-gateway phases); ``nchan``: a running one-worker ``Nchan``."""
    stack = stack_class(workdir / "channels", gateways=SPLIT_GATEWAYS)
    pool = None
    runs = []
    try:
        await asyncio.to_thread(stack.start)
        pool = ChannelPool(CLIENT_WORKERS, OPEN_IN_FLIGHT)
        runs.append(await _one_system(LogstreamChannels(stack, stack.gateways[:1]), pool, args))
        if nchan is not None:
            runs.append(await _one_system(NchanChannels(nchan), pool, args))
        split = LogstreamChannels(stack, stack.gateways)
        await _unsubscribed(split)
        runs.append(await _one_system(split, pool, args, split=True))
    finally:
        if pool is not None:
            await asyncio.to_thread(pool.shutdown)
        await asyncio.to_thread(stack.stop)
    return runs


def _print_open(name: str, what: str, opened: Opened) -> None:
    took = f"{opened.seconds:.2f} s" if opened.seconds is not None else "did not complete"
    print(
        f"  {name:<20} {what}: {opened.ready:,} of {opened.streams:,} in {took}, connect "
        f"p50 {opened.p50:.1f} ms p99 {opened.p99:.1f} ms {opened.failed or ''}",
        flush=True,
    )


def _print_phase(name: str, phase: Phase) -> None:
    lag = (
        f", loop lag >10 ms {phase.lag.over_10ms} of {phase.lag.samples} (worst {phase.lag.worst})"
        if phase.lag
        else ""
    )
    reopen = (
        f", reopen p50 {phase.reopen.p50:.1f} p99 {phase.reopen.p99:.1f} ms "
        f"({phase.reopen.ready}/{phase.reopen.streams} connected, "
        f"{phase.reopen.abandoned} closed unconnected)"
        if phase.reopen
        else ""
    )
    cpu = ", ".join(f"{n} {s:.1f}" for n, s in phase.cpu_s.items())
    broker = "".join(f", {n} {v:,.0f}" for n, v in phase.broker.items())
    print(
        f"  {name:<20} {phase.name}: {phase.accepted:,} accepted, delivered "
        f"{phase.delivered:,}/{phase.expected:,}, lost {phase.lost}, repeated "
        f"{phase.repeated}, cut {phase.cut}, p50 {phase.p50:.1f} p99 {phase.p99:.1f} ms"
        f"{reopen}{lag}{broker}; CPU s: {cpu}",
        flush=True,
    )
    for number, (held, read, wanted, cpu) in enumerate(phase.gateways, 1):
        print(
            f"    gateway {number}: {held:,} streams, read {read:,.0f} wanted {wanted:,} "
            f"({read / max(wanted, 1):.2f}), CPU {cpu:.2f} s",
            flush=True,
        )
