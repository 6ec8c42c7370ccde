"""One SSE connection's writer: the opening frames, then its outbox, heartbeats and endings.

A connection ends with a final frame that tells the client what to do: ``overflow`` (it fell
behind: resume from the last id), ``auth-expired`` (reconnect with a fresh token and the same
cursor), or a ``retry:`` hint when the gateway drains for shutdown.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import msgspec

from services.gateway.hub import Hub, Subscription
from services.gateway.replay import ReplayPlan, ReplayStalled, replay_chunks
from services.gateway.source import LogSource
from services.gateway.subjects import covering_filters
from services.gateway.ticker import tick_period
from shared.sse import HEARTBEAT, sse_frame

__all__ = ["ConnectionEnd", "StreamWriter"]

_ENCODE = msgspec.json.encode
# When the gateway drains, tell the browser to come back soon (to another instance).
DRAIN_RETRY_MS = 500


class ConnectionEnd:
    OVERFLOW = "overflow"
    AUTH_EXPIRED = "auth-expired"
    DRAINING = "draining"
    CLIENT_LEFT = "client-left"
    REPLAY_STALLED = "replay-stalled"


@dataclass
class StreamWriter:
    hub: Hub
    sub: Subscription
    cursor: int
    retry_ms: int
    heartbeat_s: float
    draining: asyncio.Event
    expires_at: float | None
    on_end: Callable[[str], None]
    source: LogSource | None = None
    replay: ReplayPlan | None = None

    def opening(self) -> bytes:
        connected = _ENCODE({
            "connection_id": self.sub.connection_id,
            "user_id": self.sub.user_id,
            "channels": [str(p) for p in self.sub.patterns],
            "cursor": self.cursor,
        })
        return sse_frame(retry=self.retry_ms, id=self.cursor, event="connected", data=connected)

    async def _replayed(self) -> AsyncIterator[bytes]:
        if self.replay.gap is not None:
            first, last = self.replay.gap
            yield sse_frame(event="gap", data=_ENCODE({"from": first, "to": last}))
        filters = covering_filters(self.sub.subjects)
        async for chunk in replay_chunks(self.source, filters, self.replay, self.sub):
            yield chunk

    async def frames(self) -> AsyncIterator[bytes]:
        """The body of the response; its ``finally`` releases the subscription."""
        outbox = self.sub.outbox
        end = ConnectionEnd.CLIENT_LEFT
        try:
            yield self.opening()
            if self.replay is not None:
                try:
                    async for chunk in self._replayed():
                        yield chunk
                except ReplayStalled:
                    end = ConnectionEnd.REPLAY_STALLED
                    yield sse_frame(retry=DRAIN_RETRY_MS, comment="replay stalled; resume")
                    return
            # Woken by the hub (records), the ticker (heartbeat or expiry due) or the drain.
            early = tick_period(self.heartbeat_s)
            expiry = math.inf
            if self.expires_at is not None:
                expiry = time.monotonic() + (self.expires_at - time.time())
            last_write = time.monotonic()
            while True:
                self.sub.wake_at = min(last_write + self.heartbeat_s - early, expiry)
                if not outbox.ready.is_set() and not self.draining.is_set():
                    await outbox.ready.wait()
                chunk, _, _ = outbox.take()
                if chunk:
                    yield chunk
                    last_write = time.monotonic()
                if outbox.overflowed:
                    end = ConnectionEnd.OVERFLOW
                    yield sse_frame(event="overflow", data=_ENCODE(
                        {"reason": "the client fell behind; reconnect with Last-Event-ID"}))
                    return
                if self.draining.is_set():
                    end = ConnectionEnd.DRAINING
                    yield sse_frame(retry=DRAIN_RETRY_MS, comment="gateway shutting down")
                    return
                now = time.monotonic()
                if now >= expiry:
                    end = ConnectionEnd.AUTH_EXPIRED
                    yield sse_frame(event="auth-expired", data=_ENCODE(
                        {"reason": "the user token expired; reconnect with a fresh token"}))
                    return
                if not chunk and now >= last_write + self.heartbeat_s - early:
                    yield HEARTBEAT
                    last_write = now
        finally:
            self.hub.unsubscribe(self.sub)
            self.on_end(end)
