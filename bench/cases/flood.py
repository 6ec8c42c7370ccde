"""Case 5: one channel flooded at 50k msgs/s for a fixed time, counting loss.

Loss is every accepted message (Nchan: 2xx; JetStream: acknowledged) that did not reach every
stream by the end of the drain, plus streams cut short. What the publisher could not even send
is reported apart: it was offered, never accepted, so it is not the system's loss.
"""

from __future__ import annotations

import asyncio
import uuid

from bench.cases.fanout import open_streams
from bench.load import SubscriberPool
from bench.messages import bench_channel
from bench.window import Window, measure_window

__all__ = ["flood_case"]


async def flood_case(
    systems: list, subscribers: int, rate: float, duration_s: float
) -> list[Window]:
    windows = []
    for system in systems:
        pool = SubscriberPool(reactive=1, bulk=0)
        publisher = None
        try:
            channel = bench_channel("flood-" + uuid.uuid4().hex[:8])
            ready, failed = await open_streams(system, pool, channel, subscribers)
            if ready < subscribers:
                raise RuntimeError(
                    f"{system.name}: {ready} of {subscribers} streams opened ({dict(failed)})"
                )
            publisher = await system.publisher(channel)
            window = await measure_window(system, pool, publisher, rate, duration_s, ready, 0)
            windows.append(window)
            print(
                f"  {system.name:<22} offered {rate:,.0f}/s, accepted "
                f"{window.paced.achieved_rate:,.0f}/s, delivered {window.delivered:,} of "
                f"{window.expected:,} (lost {window.lost:,}, cut {window.report.closed}), "
                f"p99 {window.p99:.0f} ms",
                flush=True,
            )
        finally:
            if publisher is not None:
                await publisher.close()
            await asyncio.to_thread(pool.shutdown)
    return windows
