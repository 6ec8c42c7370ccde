"""Case 6: resume replay speed (Logstream): a stream reconnecting with ``Last-Event-ID`` over
N stored records, timed from the request to the last record read."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from bench.load import SubscriberPool
from bench.machine import CpuClock, load_average
from bench.messages import bench_channel

__all__ = ["ReplayResult", "replay_case"]

_FILL_BATCH = 2000
REPLAY_TIMEOUT_S = 300.0


@dataclass
class ReplayResult:
    records: int
    received: int
    seconds: float
    gateway_cpu: float
    nats_cpu: float
    client_cpu: float
    load: str

    @property
    def rate(self) -> float:
        return self.received / self.seconds


async def replay_case(system, records: int) -> ReplayResult:
    channel = bench_channel("replay-" + uuid.uuid4().hex[:8])
    publisher = await system.publisher(channel)
    try:
        for first in range(0, records, _FILL_BATCH):
            await publisher.publish(first, min(_FILL_BATCH, records - first))
    finally:
        await publisher.close()
    pool = SubscriberPool(reactive=0, bulk=1, coalesce_s=0.001)
    try:
        load = load_average()
        groups = system.server_pids()
        gateway, nats = CpuClock(groups["gateway"][:1]), CpuClock(groups["nats-server"])
        await asyncio.to_thread(pool.reset)
        started = time.monotonic()
        targets = system.targets(channel, last_event_id=publisher.first_seq - 1)[:1]
        await asyncio.to_thread(pool.open, targets, 1)
        report = await asyncio.to_thread(pool.report, False)
        while report.received < records and time.monotonic() - started < REPLAY_TIMEOUT_S:
            await asyncio.sleep(0.02)
            report = await asyncio.to_thread(pool.report, False)
        elapsed = time.monotonic() - started
        result = ReplayResult(
            records,
            report.received,
            elapsed,
            gateway.total(),
            nats.total(),
            sum(report.cpu_shares),
            load,
        )
    finally:
        await asyncio.to_thread(pool.shutdown)
    print(
        f"  replay of {records:,} records: {result.rate:,.0f} records/s "
        f"({result.received:,} in {result.seconds:.2f} s, gateway CPU "
        f"{result.gateway_cpu:.2f})",
        flush=True,
    )
    return result
