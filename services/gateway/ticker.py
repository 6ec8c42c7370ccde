"""One clock for every connection's heartbeat and token expiry.

A connection's writer sleeps on its outbox until the hub pushes a record. Arming a timer on
every wake (``asyncio.timeout``) to bound that sleep for heartbeats cost about a fifth of the
gateway's CPU under fan-out (bench/gateway-profile.txt): a timer created, scheduled and
cancelled per record per connection. Instead each writer notes when it next needs waking
(``Subscription.wake_at``: its next heartbeat, or its token's expiry), and this one task looks
over all connections a few times per heartbeat period and wakes those that are due.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from logstream.services.gateway.subscription import Subscription

__all__ = ["Ticker", "tick_period"]

# Often enough that the heartbeats falling due are woken a few at a time: a tick a second woke
# a fifteenth of all quiet streams in one loop turn, which every other stream waited for; a
# scan of 10,000 connections costs under a millisecond.
MAX_TICK_S = 0.25


def tick_period(heartbeat_s: float) -> float:
    """How often the ticker looks: a quarter of the heartbeat, at most ``MAX_TICK_S``. A writer
    asks to be woken one period early, so a heartbeat never comes later than ``heartbeat_s``."""
    return min(MAX_TICK_S, heartbeat_s / 4)


class Ticker:
    def __init__(
        self, heartbeat_s: float, subscriptions: Callable[[], Iterable[Subscription]]
    ) -> None:
        self.period = tick_period(heartbeat_s)
        self._subscriptions = subscriptions

    def wake_due(self, now: float | None = None) -> None:
        """Wake every connection whose ``wake_at`` has come, or whose client has left."""
        now = time.monotonic() if now is None else now
        for sub in self._subscriptions():
            if sub.wake_at <= now:
                sub.outbox.ready.set()
            elif sub.client_gone is not None and not sub.gone and sub.client_gone():
                # A quiet connection's client left: nothing else would tell its writer.
                sub.lost_sink(gone=True)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            self.wake_due()
