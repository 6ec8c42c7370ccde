"""Case 2: publish-to-reader latency, 100 streams x 500 msgs/s (50k deliveries/s).

Every stream is read by reactive client workers, and every message's send time is read back:
the figures are from the publisher's clock before sending to the reader's after ``recv``.
The systems take turns in short rounds (A B C A B C ...), and each figure is the median of
the rounds': a burst of other work on the shared machine spoils one round, not the result.
"""

from __future__ import annotations

import asyncio
import statistics
import uuid
from dataclasses import dataclass, field

from bench.cases.fanout import open_streams
from bench.load import SubscriberPool
from bench.messages import bench_channel
from bench.window import Window, measure_window

__all__ = ["LatencyResult", "latency_case"]

# Two reactive workers: 50 streams each, one parse per message, well under a core.
_REACTIVE_WORKERS = 2
ROUNDS = 3


@dataclass
class LatencyResult:
    system: str
    rounds: list[Window] = field(default_factory=list)

    def _median(self, value) -> float:
        return statistics.median(value(w) for w in self.rounds) if self.rounds else float("nan")

    @property
    def p50(self) -> float:
        return self._median(lambda w: w.p50)

    @property
    def p99(self) -> float:
        return self._median(lambda w: w.p99)

    @property
    def worst_p99(self) -> float:
        return max((w.p99 for w in self.rounds), default=float("nan"))

    @property
    def delivered(self) -> int:
        return sum(w.delivered for w in self.rounds)

    @property
    def lost(self) -> int:
        return sum(w.lost for w in self.rounds)

    @property
    def client_cpu(self) -> float:
        return self._median(lambda w: sum(w.client_cpu))

    @property
    def server_cpu(self) -> dict[str, float]:
        names = self.rounds[0].server_cpu if self.rounds else {}
        return {name: self._median(lambda w, name=name: w.server_cpu[name]) for name in names}

    @property
    def loads(self) -> str:
        return " / ".join(w.load.split()[0] for w in self.rounds)


async def latency_case(
    systems: list, subscribers: int, rate: float, duration_s: float, rounds: int = ROUNDS
) -> list[LatencyResult]:
    results, opened = [LatencyResult(system.name) for system in systems], []
    try:
        for system in systems:
            pool = SubscriberPool(reactive=_REACTIVE_WORKERS, bulk=0)
            opened.append([system, pool, None, 0])
            channel = bench_channel("latency-" + uuid.uuid4().hex[:8])
            ready, failed = await open_streams(system, pool, channel, subscribers)
            if ready < subscribers:
                raise RuntimeError(
                    f"{system.name}: {ready} of {subscribers} streams opened ({dict(failed)})"
                )
            opened[-1][2] = await system.publisher(channel)
        for _ in range(rounds):
            for entry, result in zip(opened, results):
                system, pool, publisher, seq = entry
                window = await measure_window(
                    system, pool, publisher, rate, duration_s / rounds, subscribers, seq
                )
                entry[3] = seq + window.paced.sent
                result.rounds.append(window)
    finally:
        for _, pool, publisher, _ in opened:
            if publisher is not None:
                await publisher.close()
            await asyncio.to_thread(pool.shutdown)
    for result in results:
        print(
            f"  {result.system:<38} p50 {result.p50:6.2f} ms, p99 {result.p99:7.2f} ms "
            f"(worst round {result.worst_p99:.1f}), lost {result.lost}, loads "
            f"{result.loads}",
            flush=True,
        )
    return results
