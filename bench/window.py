"""One measured window: streams open, messages offered at a rate, everything counted.

The building block of the fan-out ramp, the latency case and the flood case: publish at
``rate`` for ``duration_s``, then wait for the stragglers, and report what arrived, how late,
and what every process involved spent in CPU meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from bench.load import PoolReport, SubscriberPool
from bench.machine import CpuClock, load_average
from bench.publishers import Paced, pace

__all__ = ["Window", "measure_window", "percentile"]

# After the last publish, how long delivery may keep making progress before we stop waiting.
DRAIN_IDLE_S = 5.0
DRAIN_MAX_S = 15.0
_POLL_S = 0.2


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class Window:
    system: str
    rate: float
    subscribers: int
    paced: Paced
    delivered_in_window: int
    delivered: int
    report: PoolReport
    client_cpu: list[float]
    server_cpu: dict[str, float]
    publisher_cpu: float
    load: str
    latency_ms: list[float] = field(repr=False, default_factory=list)

    @property
    def expected(self) -> int:
        return self.paced.accepted * self.subscribers

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.delivered)

    @property
    def p50(self) -> float:
        return percentile(self.latency_ms, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.latency_ms, 0.99)

    @property
    def window_rate(self) -> float:
        """Deliveries per second while publishing (what the plot shows)."""
        return self.delivered_in_window / self.paced.elapsed_s

    @property
    def sustained_rate(self) -> float:
        return self.expected / self.paced.duration_s


async def measure_window(
    system,
    pool: SubscriberPool,
    publisher,
    rate: float,
    duration_s: float,
    subscribers: int,
    first_seq: int,
) -> Window:
    load = load_average()
    groups = system.server_pids()
    server = {name: CpuClock(pids) for name, pids in groups.items()}
    await asyncio.to_thread(pool.reset)
    me = os.times()
    paced = await pace(publisher.publish, rate, duration_s, first_seq)
    spent = os.times()
    at_end = await asyncio.to_thread(pool.report, False)
    server_cpu = {name: clock.total() for name, clock in server.items()}
    publisher_cpu = ((spent.user + spent.system) - (me.user + me.system)) / paced.elapsed_s
    final = await _drain(pool, paced.accepted * subscribers)
    return Window(
        system.name,
        rate,
        subscribers,
        paced,
        at_end.received,
        final.received,
        final,
        at_end.cpu_shares,
        server_cpu,
        publisher_cpu,
        load,
        final.latency_ms,
    )


async def _drain(pool: SubscriberPool, expected: int) -> PoolReport:
    last, last_change = -1, time.monotonic()
    deadline = time.monotonic() + DRAIN_MAX_S
    while time.monotonic() < deadline:
        report = await asyncio.to_thread(pool.report, False)
        if report.received >= expected:
            break
        if report.received != last:
            last, last_change = report.received, time.monotonic()
        elif time.monotonic() - last_change > DRAIN_IDLE_S:
            break
        await asyncio.sleep(_POLL_S)
    return await asyncio.to_thread(pool.report, True)
