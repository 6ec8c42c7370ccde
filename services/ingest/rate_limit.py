"""A records-per-second budget per service token: a token bucket (rule ``publish_rate``).

Each token's bucket holds at most ``burst`` records and refills at ``rate`` records/s. A batch
takes as many records as it holds, all or nothing. Past the budget: 429 with ``Retry-After``,
the seconds until the bucket holds enough for that batch (at least 1).

A batch larger than the burst could never pass, however long the producer waited, so it is not
a 429 (which promises that a retry later succeeds): it is a 413 (rule ``publish_burst``), the
status docs/reference/ingest.md gives to "too many records", and the message says how many fit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from logstream.shared.errors import PayloadTooLarge, RateLimited

__all__ = ["RecordRateLimiter"]


class _Bucket:
    __slots__ = ("level", "updated")

    def __init__(self, level: float, updated: float) -> None:
        self.level, self.updated = level, updated


class RecordRateLimiter:
    """``take(name, n)`` spends ``n`` records of ``name``'s budget or raises.

    One bucket per token name: the names come from the token file, so the buckets are bounded
    by it, whatever producers send."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, name: str, records: int) -> None:
        if records > self.burst:
            raise PayloadTooLarge(
                f"batch of {records} records exceeds the publish burst of {self.burst} records "
                f"per token (LOGSTREAM_PUBLISH_BURST); send at most {self.burst} per request",
                details=[{"records": records, "publish_burst": self.burst}],
                rule="publish_burst",
            )
        now = self._clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(float(self.burst), now)
        bucket.level = min(float(self.burst), bucket.level + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.level < records:
            wait = (records - bucket.level) / self.rate
            raise RateLimited(
                f"token {name!r} is over its publish rate of {self.rate:g} records/s "
                f"(burst {self.burst}); {records} record(s) fit again in {wait:.1f}s",
                retry_after=max(1, math.ceil(wait)),
                details=[{"token": name, "publish_rate": self.rate, "publish_burst": self.burst}],
                rule="publish_rate",
            )
        bucket.level -= records

    def give_back(self, name: str, records: int) -> None:
        """Return what ``take`` spent on a batch the broker did not confirm (a 503): the
        producer's retry of that batch should not find its budget spent by a failure."""
        bucket = self._buckets.get(name)
        if bucket is not None:
            bucket.level = min(float(self.burst), bucket.level + records)
