"""One SSE connection's writer: the opening frames, then its outbox, heartbeats and endings.

A connection ends with a final frame that tells the client what to do: ``overflow`` (it fell
behind: resume from the last id), ``auth-expired`` (its token expired, or the key that signed it
was withdrawn from the JWKS: reconnect with a fresh token and the same cursor), or a ``retry:``
hint when the gateway drains for shutdown.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

import msgspec

from logstream.services.gateway.callout import Renewal
from logstream.services.gateway.hub import Hub
from logstream.services.gateway.replay import (
    ReplayPlan,
    ReplayStalled,
    replay_chunks,
    resolve_gap,
)
from logstream.services.gateway.source import LogSource
from logstream.services.gateway.subjects import covering_filters
from logstream.services.gateway.subscription import Subscription
from logstream.services.gateway.ticker import tick_period
from logstream.shared.errors import AuthUnavailable, BrokerUnavailable, LogstreamError
from logstream.shared.sse import HEARTBEAT, sse_frame
from logstream.shared.user_tokens import KeyWatch, UserIdentity
from logstream.shared.uvicorn_adapter import HttpConnection

__all__ = ["ConnectionEnd", "StreamWriter"]

_ENCODE = msgspec.json.encode
# When the gateway drains, tell the browser to come back soon (to another instance).
DRAIN_RETRY_MS = 500
# When the broker refuses a replay's reads, come back a little later (as a 503's Retry-After).
BROKER_RETRY_MS = 2000
_EXPIRED = _ENCODE({"reason": "the user token expired; reconnect with a fresh token"})
_SESSION_EXPIRED = _ENCODE(
    {"reason": "the session's expires_in has passed; reconnect to have it confirmed again"}
)
_KEY_WITHDRAWN = _ENCODE(
    {"reason": "the key that signed the user token was withdrawn; reconnect with a fresh token"}
)


def _monotonic(expires_at: float | None) -> float:
    """A wall-clock expiry on the monotonic clock the stream waits with."""
    return math.inf if expires_at is None else time.monotonic() + (expires_at - time.time())


def _not_renewed(renewed: UserIdentity | LogstreamError) -> bytes:
    if isinstance(renewed, AuthUnavailable):
        why = "the product's auth backend could not confirm the session; reconnect shortly"
    elif isinstance(renewed, LogstreamError):
        why = f"the product no longer vouches for the session ({renewed.message}); sign in again"
    else:
        why = "the session no longer covers this stream's channels; sign in again"
    return _ENCODE({"reason": why})


class ConnectionEnd:
    OVERFLOW = "overflow"
    AUTH_EXPIRED = "auth-expired"
    DRAINING = "draining"
    CLIENT_LEFT = "client-left"
    REPLAY_STALLED = "replay-stalled"
    BROKER_UNAVAILABLE = "broker-unavailable"


@dataclass(slots=True)
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
    # The response's connection (``logstream.shared.uvicorn_adapter``): lets a caught-up stream
    # take records straight to its socket. None: every record goes through the outbox.
    connection: HttpConnection | None = None
    # Whether the key that verified the token is still held, checked where the expiry is (at
    # every wake); None: a key that never changes. The gateway wakes every stream when a key
    # is withdrawn, so the check comes at once, not at the next heartbeat.
    key_watch: KeyWatch | None = None
    # An identity from the auth callout: asked again at ``recheck_at`` (and each renewal's);
    # the stream goes on while the product's backend still vouches for it and its channels,
    # until ``expires_at`` (its expires_in) at the latest.
    renew: Renewal | None = None
    recheck_at: float | None = None

    def opening(self) -> bytes:
        connected = _ENCODE(
            {
                "connection_id": self.sub.connection_id,
                "user_id": self.sub.user_id,
                "channels": [str(p) for p in self.sub.patterns],
                "cursor": self.cursor,
            }
        )
        return sse_frame(retry=self.retry_ms, id=self.cursor, event="connected", data=connected)

    async def _replayed(self, source: LogSource, replay: ReplayPlan) -> AsyncIterator[bytes]:
        replay = await resolve_gap(source, replay)
        if replay.gap is not None:
            first, last = replay.gap
            yield sse_frame(event="gap", data=_ENCODE({"from": first, "to": last}))
        filters = covering_filters(self.sub.subjects)
        if replay.start_time is None:  # by seq: shared with other replays on these channels
            chunks = self.hub.replays.frames(filters, replay, self.sub)
        else:
            chunks = replay_chunks(source, filters, replay, self.sub, self.hub.count_read)
        async with aclosing(chunks):  # type: ignore[type-var]
            async for chunk in chunks:
                yield chunk

    def _go_direct(self) -> None:
        """Caught up (the outbox is empty and every frame before it written): from now on the
        hub writes this connection's records to its socket (``logstream.services.gateway.direct``)."""
        outbox = self.sub.outbox
        if outbox.overflowed or self.draining.is_set():
            return
        if outbox.floor is None:
            return  # still subscribing
        # Records the hub still fans out at or before the cursor are dropped on either path
        # (the outbox's floor, ``Subscription.last_sent``).
        if self.connection is None:
            return
        sink = self.connection.direct_sink(outbox.limit)
        if sink is None:
            self.connection = None  # not this response (not chunked, closing): keep the outbox
        else:
            self.sub.go_direct(sink)

    async def _live(self) -> AsyncIterator[bytes | str]:
        """After the opening and any replay: records (through the outbox until the hub writes
        them directly), heartbeats, and the final frame. Yields the end's reason last, a str."""
        sub, outbox = self.sub, self.sub.outbox
        # Woken by the hub (outbox records), the ticker (heartbeat or expiry due), the drain,
        # or a refused direct write.
        early = tick_period(self.heartbeat_s)
        expiry = _monotonic(self.expires_at)
        recheck = _monotonic(self.recheck_at)
        # What an expiry says: a token's exp, or (auth callout) the answer's expires_in.
        expired_why = _EXPIRED if self.renew is None else _SESSION_EXPIRED
        last_write = time.monotonic()
        while True:
            if sub.sink is None and self.connection is not None and not outbox.size:
                self._go_direct()
            last_write = max(last_write, sub.written_at)
            sub.wake_by(min(last_write + self.heartbeat_s - early, expiry, recheck))
            if not outbox.ready.is_set() and not self.draining.is_set():
                await outbox.ready.wait()
            if sub.gone:
                yield ConnectionEnd.CLIENT_LEFT
                return
            chunk = outbox.take()
            if chunk:
                yield chunk
                last_write = time.monotonic()
            now = time.monotonic()
            last_write = max(last_write, sub.written_at)
            withdrawn = self.key_watch is not None and not self.key_watch.held()
            ended_why = expired_why
            if (
                now >= recheck
                and now < expiry
                and self.renew is not None
                and not (outbox.overflowed or self.draining.is_set())
            ):
                renewed = await self.renew()
                if isinstance(renewed, UserIdentity) and self._still_covers(renewed):
                    recheck = _monotonic(renewed.recheck_at)
                    continue
                ended_why = _not_renewed(renewed)
                now = expiry = time.monotonic()
            if outbox.overflowed or self.draining.is_set() or now >= expiry or withdrawn:
                sub.take_back_sink()  # the final frame must be the last thing written
            if outbox.overflowed:
                # ``rewind``: the hub found a record this connection missed, older than what
                # it was sent since; its id takes the client back to just before it.
                yield sse_frame(
                    id=sub.rewind,
                    event="overflow",
                    data=_ENCODE(
                        {"reason": "the client fell behind; reconnect with Last-Event-ID"}
                    ),
                )
                yield ConnectionEnd.OVERFLOW
                return
            if self.draining.is_set():
                yield sse_frame(retry=DRAIN_RETRY_MS, comment="gateway shutting down")
                yield ConnectionEnd.DRAINING
                return
            if now >= expiry or withdrawn:
                # The client's cursor is the last id it got: it resumes from there, with a new
                # token, losing nothing.
                yield sse_frame(
                    event="auth-expired", data=_KEY_WITHDRAWN if now < expiry else ended_why
                )
                yield ConnectionEnd.AUTH_EXPIRED
                return
            if not chunk and now >= last_write + self.heartbeat_s - early:
                yield HEARTBEAT
                last_write = now

    def _still_covers(self, user: UserIdentity) -> bool:
        return user.user_id == self.sub.user_id and all(
            user.may_read(pattern) for pattern in self.sub.patterns
        )

    async def frames(self) -> AsyncGenerator[bytes, None]:
        """The body of the response; its ``finally`` releases the subscription."""
        end = ConnectionEnd.CLIENT_LEFT
        try:
            yield self.opening()
            if self.replay is not None:
                assert self.source is not None, "a replay plan comes with its source"
                try:
                    async for chunk in self._replayed(self.source, self.replay):
                        yield chunk
                except ReplayStalled:
                    end = ConnectionEnd.REPLAY_STALLED
                    yield sse_frame(retry=DRAIN_RETRY_MS, comment="replay stalled; resume")
                    return
                except BrokerUnavailable:
                    # (the response has begun: a status can no longer say it) The client
                    # resumes from the last id it got, on this gateway or another.
                    end = ConnectionEnd.BROKER_UNAVAILABLE
                    yield sse_frame(retry=BROKER_RETRY_MS, comment="broker unavailable; resume")
                    return
            async for piece in self._live():
                if isinstance(piece, str):
                    end = piece
                    return
                yield piece
        finally:
            self.sub.take_back_sink()  # before the closing chunk: nothing may follow it
            self.hub.unsubscribe(self.sub)
            self.on_end(end)
