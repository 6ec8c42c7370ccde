"""Records from before a connection opened: resume after a cursor, or history on connect.

A connection that asks for the past is registered with the hub first, so live records after
the stream's last seq ``end`` queue in its outbox while this module reads ``(start, end]``
from the stream with a short-lived ordered consumer of its own. The writer sends the replay,
then the outbox: no gap and no duplicate at the seam, on any gateway instance (docs/reference/stream.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime

from logstream.services.gateway.source import LogSource, StoredMessage
from logstream.services.gateway.stream_request import StreamRequest
from logstream.services.gateway.subscription import FILTER_VIEW, Subscription, encode_record

__all__ = [
    "ReplayPlan",
    "ReplayStalled",
    "plan_replay",
    "read_pages",
    "read_range",
    "replay_chunks",
    "resolve_gap",
    "start_after_client",
    "tail_range",
    "tail_start",
]

# Frames written per chunk: big enough to amortise a socket write, small enough to interleave.
CHUNK_FRAMES = 256
# Replay gives up if the broker delivers nothing for this long (it is gone, or the plan was
# wrong); the client then resumes from the last id it got.
STALL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    start_seq: int  # first seq to read (ignored when start_time is set)
    end_seq: int  # last seq to read; the hub's live records start after it
    start_time: datetime | None = None
    gap: tuple[int, int] | None = None  # seqs that aged out of retention before start_seq
    # A resume: whether records before ``start_seq`` aged out is asked when the replay begins
    # (``resolve_gap``), after the response has started, not while the stream is opening.
    gap_unknown: bool = False


async def resolve_gap(source: LogSource, plan: ReplayPlan) -> ReplayPlan:
    """``plan`` with its gap known: the seqs from ``start_seq`` that aged out of the stream."""
    if not plan.gap_unknown:
        return plan
    first, _ = await source.bounds()
    gap = (plan.start_seq, first - 1) if plan.start_seq < first else None
    return ReplayPlan(max(plan.start_seq, first), plan.end_seq, gap=gap)


async def plan_replay(
    source: LogSource, request: StreamRequest, filters: Sequence[str], end_seq: int
) -> ReplayPlan | None:
    """What to replay for ``request`` given live delivery starts after ``end_seq``.

    A plain live connection asks the broker nothing more here, and a resume nothing yet (its
    gap is looked for when its replay begins): opening stays cheap when thousands of browsers
    come back at once.
    """
    if request.last_event_id is not None:
        start = request.last_event_id + 1
        if start > end_seq:
            return None
        return ReplayPlan(start, end_seq, gap_unknown=True)
    if request.tail is None and request.since is None:
        return None
    if request.since is not None and request.since > datetime.now(UTC):
        return None  # JetStream would start a future start time at its last record
    first, _ = await source.bounds()
    start = first
    if request.tail is not None:
        start = await tail_start(source, filters, request.tail, first, end_seq)
        if start > end_seq:
            return None
    if request.since is not None:
        return ReplayPlan(start, end_seq, start_time=request.since)
    return ReplayPlan(start, end_seq)


async def start_after_client(
    source: LogSource, sub: Subscription, last_event_id: int | None, cursor: int
) -> int:
    """Where a resumed connection starts: after ``cursor`` (where this gateway's reading
    stands), or after the client's own cursor when that is further on.

    A client can be ahead of the gateway it reconnects to: that gateway's hub may still be
    catching up (its broker link dropped, or it is busy), and the records it reads up to the
    client's cursor the client already has. The client's cursor counts only as far as the
    stream's last record, so a cursor from a recreated stream cannot silence the connection;
    the broker is asked only in this rare case.
    """
    if last_event_id is None or last_event_id <= cursor:
        return cursor
    _, last = await source.bounds()
    ahead = min(last_event_id, last)
    if ahead <= cursor:
        return cursor
    sub.start_after(ahead)
    return ahead


async def tail_start(
    source: LogSource, filters: Sequence[str], tail: int, first: int, end: int
) -> int:
    """The largest seq from which ``filters`` still have ``tail`` records up to ``end``."""
    start, _ = await tail_range(source, filters, tail, first, end)
    return start


async def tail_range(
    source: LogSource, filters: Sequence[str], tail: int, first: int, end: int
) -> tuple[int, int]:
    """The largest seq from which ``filters`` still have ``tail`` records up to ``end``, and
    how many they have from there (fewer than ``tail`` only when the search reached ``first``).

    A binary search over counts (each a throw-away consumer): log2(stream length) requests,
    however many records the channels hold.
    """
    if tail == 0:
        return end + 1, 0
    after = await source.count_from(filters, end + 1)
    held = await source.count_from(filters, first) - after
    if held <= tail:
        return first, held
    low, high, found = first, end, held
    while low < high:
        mid = (low + high + 1) // 2
        count = await source.count_from(filters, mid) - after
        if count >= tail:
            low, found = mid, count
        else:
            high = mid - 1
    return low, found


class ReplayStalled(Exception):
    """The broker stopped delivering mid-replay; the client should resume from its last id."""


async def replay_chunks(
    source: LogSource,
    filters: Sequence[str],
    plan: ReplayPlan,
    sub: Subscription,
    on_read: Callable[[int], None] = lambda count: None,
) -> AsyncIterator[bytes]:
    """Encoded frames for ``plan`` (with ``sub``'s filters applied), a chunk at a time.

    The number of records to read is counted first (records after ``end_seq`` counted before
    the total, so records arriving meanwhile can only make it larger, never cut the replay
    short); reading stops at that count or at the first record past ``end_seq``.
    """
    after = await source.count_from(filters, plan.end_seq + 1)
    remaining = await source.count_from(filters, plan.start_seq, plan.start_time) - after
    batches = read_range(
        source,
        filters,
        plan.start_seq,
        plan.end_seq,
        remaining,
        start_time=plan.start_time,
        chunk=CHUNK_FRAMES,
        on_read=on_read,
    )
    async with aclosing(batches):
        async for batch in batches:
            frames = [
                encode_record(message)
                for message in batch
                if not sub.filtered or sub.accepts(FILTER_VIEW.decode(message.data))
            ]
            if frames:
                yield b"".join(frames)


async def read_range(
    source: LogSource,
    filters: Sequence[str],
    start_seq: int,
    end_seq: int,
    count: int | None,
    *,
    start_time: datetime | None = None,
    chunk: int,
    on_read: Callable[[int], None] = lambda count: None,
) -> AsyncGenerator[list[StoredMessage], None]:
    """The records of ``filters`` from ``start_seq`` (or ``start_time``) up to ``end_seq``, in
    order, at most ``chunk`` at a time, read with a short-lived ordered consumer.

    Reading stops at the first record past ``end_seq``, at ``count`` records when the caller
    counted them beforehand, and, with ``count`` None, when the broker says no matching record
    is left (the consumer's pending count: at creation, then with each delivery), so an empty
    range costs one request and no wait. A broker that delivers nothing for
    ``STALL_TIMEOUT_S`` raises ``ReplayStalled``. ``on_read`` counts every record taken."""
    if count is not None and count <= 0:
        return
    remaining = count
    follow = await source.follow(filters, start_seq, start_time)
    try:
        while remaining is None or remaining > 0:
            if remaining is None and follow.remaining == 0:
                return
            try:
                async with asyncio.timeout(STALL_TIMEOUT_S):
                    wanted = chunk if remaining is None else min(chunk, remaining)
                    batch = await follow.next_batch(wanted)
            except TimeoutError:
                raise ReplayStalled(
                    f"replay stalled with {remaining or follow.remaining} records to go"
                ) from None
            on_read(len(batch))
            kept = [message for message in batch if message.seq <= end_seq]  # (in seq order)
            if kept:
                yield kept
            if len(kept) < len(batch):
                return  # past the end
            if remaining is not None:
                remaining -= len(kept)
    finally:
        await follow.close()


async def read_pages(
    source: LogSource,
    subject_filter: str,
    start_seq: int,
    end_seq: int,
    *,
    on_read: Callable[[int], None] = lambda count: None,
) -> AsyncGenerator[list[StoredMessage], None]:
    """The records of one subject filter from ``start_seq`` up to ``end_seq``, in order, a page
    (``CHUNK_FRAMES``) per direct get: no consumer, one request per page (a resume of a few
    records is one request). Where the source cannot read pages (a replicated stream), the
    same with a short-lived ordered consumer (``read_range``)."""
    seq = start_seq
    while seq <= end_seq:
        page = await source.read_page(subject_filter, seq, CHUNK_FRAMES)
        if page is None:
            async with aclosing(
                read_range(
                    source,
                    [subject_filter],
                    seq,
                    end_seq,
                    None,
                    chunk=CHUNK_FRAMES,
                    on_read=on_read,
                )
            ) as batches:
                async for batch in batches:
                    yield batch
            return
        messages, pending = page
        on_read(len(messages))
        kept = [message for message in messages if message.seq <= end_seq]
        if kept:
            yield kept
        if len(kept) < len(messages) or not pending or not messages:
            return
        seq = messages[-1].seq + 1
