"""A records-per-second budget per service token: a token bucket with a burst of twice the rate.

A batch larger than the burst is let through when the bucket is full and leaves the bucket in
debt, so a producer with big batches is slowed to the same average rate instead of being
refused for ever.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from shared.errors import RateLimited

__all__ = ["BURST_FACTOR", "RecordRateLimiter"]

# Two seconds' worth of records may arrive at once: log traffic is bursty (a failing job logs a
# stack of lines together) and a tight bucket would refuse ordinary bursts.
BURST_FACTOR = 2


class _Bucket:
    __slots__ = ("level", "updated")

    def __init__(self, level: float, updated: float) -> None:
        self.level, self.updated = level, updated


class RecordRateLimiter:
    """``take(name, n)`` spends ``n`` records of ``name``'s budget or raises ``RateLimited``."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(rate * BURST_FACTOR)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, name: str, records: int) -> None:
        now = self._clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(self.burst, now)
        bucket.level = min(self.burst, bucket.level + (now - bucket.updated) * self.rate)
        bucket.updated = now
        needed = min(float(records), self.burst)
        if bucket.level < needed:
            wait = (needed - bucket.level) / self.rate
            raise RateLimited(
                f"token {name!r} is over its budget of {self.rate:g} records/s "
                f"(burst {self.burst:g}); retry in {wait:.1f}s",
                retry_after=max(1, math.ceil(wait)),
            )
        bucket.level -= records
