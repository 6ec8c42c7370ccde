"""Replays that share their reads: one read of the stream serves every connection resuming on
the same channels at about the same time.

When a gateway restarts, its browsers come back at once, each with ``Last-Event-ID``; on a busy
channel each needs a few records from before it reconnected. Read one by one, that is a count
and an ordered consumer per connection: thousands of JetStream requests and consumers at once,
while the streams already back wait behind them. Here a connection's replay joins a *group* of
replays on the same channels (the same covering filters); the group reads the range from the
earliest start its members want to the latest end once, and hands each member the frames of
its own ``(start, end]`` (with its own level, ``q`` and ``where`` filters). Each frame is
encoded once for the whole group.

A group on one channel (or one wildcard) reads with batched direct gets, a request per page and
no consumer; a group on several reads with one short-lived ordered consumer
(``logstream.services.gateway.replay.read_pages``, ``read_range``).

Reads are paced by how many run at once (``MAX_READS``): a group waits for a slot,
and every replay on its channels that arrives meanwhile joins it, so the busier the gateway,
the more each read serves; the hub's live fan-out keeps its turns on the loop. A group that
has started takes no one more (its read may already be past what a newcomer needs): the
newcomer starts the next group.

Replays by time (``since``) read by start time, not seq, and keep a read of their own
(``logstream.services.gateway.replay.replay_chunks``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing

from logstream.services.gateway.replay import (
    CHUNK_FRAMES,
    ReplayPlan,
    ReplayStalled,
    read_pages,
    read_range,
)
from logstream.services.gateway.source import LogSource, StoredMessage
from logstream.services.gateway.subscription import FILTER_VIEW, Subscription, encode_record
from logstream.shared.errors import BrokerUnavailable

__all__ = ["ReplayReads"]

# Group reads running at once: each is one ordered consumer on the broker.
MAX_READS = 32
# Frames a member may have waiting (its client reads slower than the group reads): past this
# the group waits for it, at most ``ReplayStalled``'s timeout, then goes on without it.
MEMBER_BYTES = 4 * 1024 * 1024
MEMBER_WAIT_S = 10.0

log = logging.getLogger("logstream.gateway.replay")


class _Member:
    """One connection's share of a group read: its range, its filters, its frames to write."""

    __slots__ = ("chunks", "done", "drained", "end", "error", "left", "queued", "ready", "start")

    def __init__(self, start: int, end: int, sub: Subscription) -> None:
        self.start, self.end = start, end
        self.chunks: deque[bytes] = deque()
        self.queued = 0
        self.ready = asyncio.Event()  # frames, the end or an error to take
        self.drained = asyncio.Event()  # its writer took what was queued (or left)
        self.drained.set()
        self.done = False
        self.error: tuple[type[ReplayStalled] | type[BrokerUnavailable], str] | None = None
        self.left = False

    def put(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.queued += len(chunk)
        if self.queued > MEMBER_BYTES:
            self.drained.clear()
        self.ready.set()

    def finish(self, error: BaseException | None = None) -> None:
        """No more frames; with ``error``, its writer raises one like it. (Its kind and words
        are kept, not the exception: one caught in a read holds the read's frames in its
        traceback, and those hold every member, a cycle that the gateway's collector policy,
        ``logstream.services.gateway.gc_policy``, would keep for an hour with their frames.)"""
        self.done = True
        if error is not None:
            kind = type(error) if isinstance(error, ReplayStalled | BrokerUnavailable) else None
            self.error = (kind or ReplayStalled, str(error) or type(error).__name__)
        self.ready.set()

    async def frames(self) -> AsyncIterator[bytes]:
        try:
            while True:
                if self.chunks:
                    chunk = self.chunks.popleft()
                    self.queued -= len(chunk)
                    if self.queued <= MEMBER_BYTES:
                        self.drained.set()
                    yield chunk
                    continue
                if self.done:
                    if self.error is not None:
                        kind, words = self.error
                        raise kind(words)
                    return
                self.ready.clear()
                await self.ready.wait()
        finally:
            self.left = True
            self.drained.set()


class _Group:
    """Replays on the same channels gathered while their read waits for a slot."""

    def __init__(self, filters: tuple[str, ...]) -> None:
        self.filters = filters
        self.members: list[tuple[_Member, Subscription]] = []


class ReplayReads:
    """Every replay by seq of one gateway process, read in groups (see the module docstring)."""

    def __init__(
        self,
        source: LogSource,
        *,
        on_read: Callable[[int], None] = lambda count: None,
        max_reads: int = MAX_READS,
    ) -> None:
        self._source = source
        self._on_read = on_read
        self._slots = asyncio.Semaphore(max_reads)
        self._gathering: dict[tuple[str, ...], _Group] = {}
        self._tasks: set[asyncio.Task] = set()
        # What the broker was asked, for the stats: group reads, and replays they served.
        self.reads = 0
        self.replays = 0

    def frames(
        self, filters: Sequence[str], plan: ReplayPlan, sub: Subscription
    ) -> AsyncIterator[bytes]:
        """``plan``'s frames for ``sub`` (``start_seq`` to ``end_seq``, its filters applied),
        from the group read it joins. Raises ``ReplayStalled`` as a read of its own would."""
        assert plan.start_time is None, "a replay by time reads on its own"
        key = tuple(sorted(filters))
        group = self._gathering.get(key)
        if group is None:
            group = self._gathering[key] = _Group(key)
            task = asyncio.create_task(self._read(group), name="replay-group")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        member = _Member(plan.start_seq, plan.end_seq, sub)
        group.members.append((member, sub))
        self.replays += 1
        return member.frames()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def _read(self, group: _Group) -> None:
        members = group.members
        try:
            async with self._slots:
                # Started: later replays on these channels make the next group.
                if self._gathering.get(group.filters) is group:
                    del self._gathering[group.filters]
                self.reads += 1
                await self._read_range(group)
        except BaseException as exc:
            for member, _ in members:
                if not member.done:
                    member.finish(
                        exc if isinstance(exc, Exception) else ReplayStalled("the gateway stopped")
                    )
            if not isinstance(exc, Exception):
                raise
        else:
            for member, _ in members:
                if not member.done:
                    member.finish()
        finally:
            if self._gathering.get(group.filters) is group:
                del self._gathering[group.filters]

    async def _read_range(self, group: _Group) -> None:
        source, filters, members = self._source, group.filters, group.members
        start = min(member.start for member, _ in members)
        end = max(member.end for member, _ in members)
        if len(filters) == 1:
            batches = read_pages(source, filters[0], start, end, on_read=self._on_read)
        else:
            # (not counted first: the consumer's pending count says when nothing is left)
            batches = read_range(
                source, filters, start, end, None, chunk=CHUNK_FRAMES, on_read=self._on_read
            )
        async with aclosing(batches):
            async for batch in batches:
                live = [(m, s) for m, s in members if not m.left and not m.done]
                if not live:
                    return  # every client left: nothing more to read for
                self._hand_out(batch, live)
                for member, _ in live:
                    if member.end <= batch[-1].seq and not member.done:
                        member.finish()  # its range is read: its writer goes on to live
                await self._wait_for_slow(live)

    @staticmethod
    def _hand_out(batch: list[StoredMessage], members: list[tuple[_Member, Subscription]]) -> None:
        frames = [encode_record(message) for message in batch]
        views = None
        if any(sub.filtered for _, sub in members):
            views = [FILTER_VIEW.decode(message.data) for message in batch]
        for member, sub in members:
            low, high = member.start, member.end
            if views is not None and sub.filtered:
                mine = [
                    frame
                    for message, frame, view in zip(batch, frames, views, strict=True)
                    if low <= message.seq <= high and sub.accepts(view)
                ]
            else:
                mine = [
                    frame
                    for message, frame in zip(batch, frames, strict=True)
                    if low <= message.seq <= high
                ]
            if mine:
                member.put(b"".join(mine))

    @staticmethod
    async def _wait_for_slow(members: list[tuple[_Member, Subscription]]) -> None:
        for member, _ in members:
            if member.drained.is_set():
                continue
            try:
                async with asyncio.timeout(MEMBER_WAIT_S):
                    await member.drained.wait()
            except TimeoutError:
                member.finish(ReplayStalled("the client read its replay too slowly"))
