"""The hub: one ordered read of the log per gateway process, fanned out to every connection.

The hub follows the union of the subjects its connections want with a single ordered consumer,
so a record crosses from NATS to this process once however many browsers watch it, and every
connection sees records in stream order. When a connection needs subjects outside the union,
the follow is rebuilt with the larger union from a point that loses nothing for the
connections already here (``_restart_point``). Each record is encoded into its SSE frame once
and the same bytes go to every interested connection: into its bounded ``Outbox`` while it
catches up, then, with the rest of the read batch, straight to its socket
(``services.gateway.direct``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Callable

from services.gateway.direct import Coalescer
from services.gateway.subjects import covering_filters
from services.gateway.subscription import FILTER_VIEW, Subscription, encode_record
from services.gateway.source import Follow, LogSource, StoredMessage
from shared.channels import ChannelPattern, channel_of_subject, from_subject
from shared.errors import InvalidChannel

__all__ = ["Hub"]

# Give the loop to the SSE writers after at most this many records, so a flood cannot starve
# them.
YIELD_EVERY = 256
# Keep following for a while after the last connection left: reconnects are common and a
# rebuild costs a consumer creation.
IDLE_STOP_S = 10.0
# How long a rebuild waits for records the old follow already delivered to be fanned out.
DRAIN_TIMEOUT_S = 2.0

log = logging.getLogger("logstream.gateway.hub")


class Hub:
    def __init__(self, source: LogSource, *, services: frozenset[str],
                 on_read: Callable[[], None] = lambda: None,
                 on_rebuild: Callable[[], None] = lambda: None) -> None:
        self._source = source
        self._services = services
        self._on_read, self._on_rebuild = on_read, on_rebuild
        self._subs: set[Subscription] = set()
        self._exact: dict[str, set[Subscription]] = {}
        self._wild: dict[ChannelPattern, set[Subscription]] = {}
        self._wanted: Counter[str] = Counter()
        self._following: frozenset[str] = frozenset()
        self._follow: Follow | None = None
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._idle_timer: asyncio.TimerHandle | None = None
        self.last_seq = 0
        self._stream_identity: str | None = None
        self.delivered_total = 0
        self._direct = Coalescer()
        self.read_total = 0
        self.started_at = time.monotonic()

    # -- connections ---------------------------------------------------------------------

    async def subscribe(self, sub: Subscription) -> int:
        """Register ``sub`` and return its cursor: it gets every record after that seq."""
        self._add(sub)
        try:
            await self._ensure(sub.subjects)
            cursor = await self._source.last_seq()
        except BaseException:
            self.unsubscribe(sub)
            raise
        sub.outbox.set_floor(cursor)
        return cursor

    def unsubscribe(self, sub: Subscription) -> None:
        if sub not in self._subs:
            return
        self._subs.discard(sub)
        for pattern in sub.patterns:
            index = self._exact if pattern.is_exact else self._wild
            key = str(pattern) if pattern.is_exact else pattern
            members = index.get(key)
            if members is not None:
                members.discard(sub)
                if not members:
                    del index[key]
        self._wanted.subtract(sub.subjects)
        self._wanted = +self._wanted
        if not self._subs and self._idle_timer is None:
            loop = asyncio.get_running_loop()
            self._idle_timer = loop.call_later(IDLE_STOP_S, self._stop_when_idle)

    def _add(self, sub: Subscription) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._subs.add(sub)
        for pattern in sub.patterns:
            if pattern.is_exact:
                self._exact.setdefault(str(pattern), set()).add(sub)
            else:
                self._wild.setdefault(pattern, set()).add(sub)
        self._wanted.update(sub.subjects)

    # -- stats ---------------------------------------------------------------------------

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        return frozenset(self._subs)

    @property
    def following(self) -> frozenset[str]:
        return self._following

    @property
    def buffered(self) -> int:
        """Records NATS delivered to this process that the hub has not fanned out yet."""
        return self._follow.buffered() if self._follow is not None else 0

    def channel_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for sub in self._subs:
            counts.update(str(p) for p in sub.patterns)
        return dict(counts)

    # -- the follow ----------------------------------------------------------------------

    async def _ensure(self, subjects: frozenset[str]) -> None:
        if subjects <= self._following and self._task is not None:
            return
        async with self._lock:
            if subjects <= self._following and self._task is not None:
                return
            wanted = frozenset(self._wanted) | subjects
            start = await self._restart_point(wanted)
            await self._stop_follow()
            self._follow = await self._source.follow(covering_filters(wanted), start)
            # Nothing before the follow's start is its business, even if the ordered consumer,
            # recreated after a broker restart before it delivered anything, starts over at 1.
            self.last_seq = max(self.last_seq, start - 1)
            self._following = wanted
            self._task = asyncio.create_task(self._run(self._follow), name="hub-follow")
            self._on_rebuild()
            log.info("following %d subjects from seq %d", len(wanted), start)

    async def _restart_point(self, wanted: frozenset[str]) -> int:
        """The first seq of a new follow that loses nothing for the connections already here.

        Connections that stay need every record after the last one fanned out (``last_seq``).
        If the old follow has nothing pending, no such record exists up to the stream's last
        seq ``tail`` (read before asking), so the new follow may start after ``tail``: a quiet
        gateway does not re-read the stream from the last record it happened to see.
        """
        tail = await self._source.last_seq()
        continuing = self._following & frozenset(self._wanted)
        if self._follow is None or not continuing:
            return max(tail, self.last_seq) + 1
        try:
            position = await self._follow.position()
        except Exception:
            return self.last_seq + 1
        if position.pending:
            return self.last_seq + 1
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self._follow.buffered() and time.monotonic() < deadline:
            await asyncio.sleep(0.001)  # the follow task is fanning out what arrived
        if self._follow.buffered():
            return self.last_seq + 1
        return max(tail, self.last_seq) + 1

    async def _stop_follow(self) -> None:
        task, follow = self._task, self._follow
        self._task = self._follow = None
        self._following = frozenset()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if follow is not None:
            await follow.close()

    def _stop_when_idle(self) -> None:
        self._idle_timer = None
        if not self._subs:
            asyncio.get_running_loop().create_task(self._stop_idle())

    async def _stop_idle(self) -> None:
        async with self._lock:
            if not self._subs:
                await self._stop_follow()
                log.info("no connections; stopped following")

    async def _run(self, follow: Follow) -> None:
        """Fan out what the follow delivers until cancelled. Broker restarts and gaps are the
        ordered consumer's job: nats-py recreates it after the last seq it delivered."""
        while True:
            for message in await follow.next_batch(YIELD_EVERY):
                self.fan_out(message)
            self._direct.flush()  # one write per caught-up connection for the whole batch
            await asyncio.sleep(0)  # let the writers send what this batch queued

    def fan_out(self, message: StoredMessage) -> None:
        """Push one stored record to every connection that wants it, encoded once: into its
        outbox, or, for a caught-up connection, into the batch written to its socket."""
        seq = message.seq
        if seq <= self.last_seq:
            return  # a rebuilt follow may overlap the old one by design; never deliver twice
        self.last_seq = seq
        self.read_total += 1
        self._on_read()
        targets = self._targets(message.subject)
        if not targets:
            return
        frame = encode_record(message)
        view = None
        for sub in targets:
            if sub.filtered:
                view = view or FILTER_VIEW.decode(message.data)
                if not sub.accepts(view):
                    continue
            if sub.sink is not None:
                self._direct.add(sub, frame)
                self.delivered_total += 1
            elif sub.outbox.push(seq, frame):
                self.delivered_total += 1

    def _targets(self, subject: str) -> set[Subscription]:
        exact = self._exact.get(channel_of_subject(subject))
        if not self._wild:
            return exact or set()
        try:
            channel = from_subject(subject, self._services)
        except InvalidChannel:  # a service this gateway is not configured for
            return exact or set()
        targets = set(exact or ())
        for pattern, members in self._wild.items():
            if pattern.matches(channel):
                targets |= members
        return targets

    async def check_stream(self) -> bool:
        """Notice a recreated stream (e.g. a broker back with an empty store) and start over.

        Its seqs begin again at 1, so the follow, which resumes after the last seq it saw,
        would stay silent until the new stream passed that seq. Instead every connection is
        cut to resume, and the hub follows the new stream from its tail. True on a reset.
        """
        seen = self.last_seq  # before asking: records fanned out meanwhile are newer than it
        identity, last = await self._source.identity()
        known = self._stream_identity
        self._stream_identity = identity
        if known is None or (identity == known and last >= seen):
            return False
        log.warning("stream LOGS was recreated (last seq %d, had seen %d): connections resume",
                    last, seen)
        async with self._lock:
            await self._stop_follow()
            self.last_seq = 0
        for sub in list(self._subs):
            sub.cut()
        return True

    async def close(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        async with self._lock:
            await self._stop_follow()
