"""Case 3: memory per idle connection: server RSS before and after opening N streams.

A first batch of streams warms the server up (the gateway's follow, nginx's channel); the
figure is the RSS growth over the remaining streams, divided by their number.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from bench.cases.fanout import open_streams
from bench.load import SubscriberPool
from bench.machine import load_average, rss_bytes
from bench.messages import bench_channel

__all__ = ["MemoryResult", "memory_case"]

WARM_STREAMS = 100
# Idle streams need no attention: the client polls them rarely.
_IDLE_POLL_S = 0.2
# Let allocators and the kernel settle before reading RSS.
SETTLE_S = 2.0


@dataclass
class MemoryResult:
    system: str
    connections: int
    rss_before: int
    rss_after: int
    opened: int
    failures: dict
    load: str

    @property
    def per_connection(self) -> float:
        return (self.rss_after - self.rss_before) / max(1, self.opened - WARM_STREAMS)


async def memory_case(
    systems: list, connections: int, settle_s: float = SETTLE_S
) -> list[MemoryResult]:
    results = []
    for system in systems:
        load = load_average()
        pool = SubscriberPool(reactive=0, bulk=2, coalesce_s=_IDLE_POLL_S)
        try:
            channel = bench_channel("idle-" + uuid.uuid4().hex[:8])
            await open_streams(system, pool, channel, WARM_STREAMS)
            await asyncio.sleep(settle_s)
            groups = system.server_pids()  # the gateway's, not the broker's memory
            pids = groups.get("gateway") or [pid for group in groups.values() for pid in group]
            before = sum(rss_bytes(pid) for pid in pids)
            more, failed = await open_streams(system, pool, channel, connections - WARM_STREAMS)
            await asyncio.sleep(settle_s)
            after = sum(rss_bytes(pid) for pid in pids)
            # ``open`` answers with every stream the pool holds: ``more`` includes ``warm``
            result = MemoryResult(system.name, connections, before, after, more, dict(failed), load)
            results.append(result)
            print(
                f"  {system.name:<22} {result.opened} streams: "
                f"{result.per_connection / 1024:.1f} KiB per connection "
                f"(RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB)",
                flush=True,
            )
        finally:
            await asyncio.to_thread(pool.shutdown)
    return results
