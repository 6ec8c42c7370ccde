"""The gateway's access to the log: the seam between the hub and the broker.

``LogSource`` is what the hub needs from JetStream: the stream's last sequence, and an ordered
follow of some subjects from a sequence on. ``NatsLogSource`` is the real one (one ordered push
consumer per follow); ``MemoryLogSource`` is the in-memory one for unit tests of hub logic. The
hub's tests run on the in-memory one (``tests/unit/test_gateway_hub.py``), and the real one is
driven against nats-server by the gateway's integration tests.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from logstream.shared.errors import BrokerUnavailable
from logstream.shared.nats_names import LIVE_SUBJECTS, STREAM_NAME

__all__ = [
    "FollowPosition",
    "LastRecord",
    "LogSource",
    "MemoryLogSource",
    "NatsLogSource",
    "StoredMessage",
]

# How long a stream-info request may take before the broker counts as unavailable.
INFO_TIMEOUT_S = 2.0
# Ordered consumers need heartbeats to notice a stalled delivery and reset themselves.
IDLE_HEARTBEAT_S = 2.0
# Records a follow holds for its reader before the broker is asked to pause (flow control).
FOLLOW_BUFFER = 1024
# How long a replay's consumer stays on the broker once nobody reads it.
FOLLOW_LINGER_S = 5.0
# What nats-py gives an ordered consumer's ack wait (it never acks).
ORDERED_ACK_WAIT_S = 22 * 3600
# Buffered deliveries per follow inside nats-py before it counts us as a slow consumer (it
# never should: flow control pauses the server long before; a drop would lose records).
PENDING_MSGS = 200_000
PENDING_BYTES = 256 * 1024 * 1024
# The broker answers a direct get of the last record of at most this many subjects at once
# (more: "413 Too Many Results"); ``last_per_subject`` asks in slices of it.
MULTI_LAST_MAX = 1024
# A direct get's replies end with a status message: 204 (end of batch) or 404 (nothing there).
_END_OF_BATCH = ("204", "404")
# JetStream's error code for "stream not found" (ingest has not created LOGS yet).
STREAM_NOT_FOUND = 10059


class _StreamState(msgspec.Struct):
    subjects: dict[str, int] | None = None


class _StreamInfo(msgspec.Struct):
    state: _StreamState = msgspec.field(default_factory=_StreamState)
    total: int | None = None
    error: dict | None = None


_STREAM_INFO = msgspec.json.Decoder(_StreamInfo)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int
    subject: str
    data: bytes
    # Live records only (``logstream.services.gateway.live``): the seq of the record before this one on
    # the same subject (0: none), which lets the hub notice a record it never got.
    previous: int | None = None


@dataclass(frozen=True, slots=True)
class FollowPosition:
    """Where a follow stands: matching records not yet delivered, and the last one delivered."""

    pending: int
    delivered_seq: int


class Follow(Protocol):
    @property
    def remaining(self) -> int | None:
        """Matching records stored after the last one handed out, as the broker last said
        (the consumer's pending count at creation, then with each delivery); None: unknown."""
        ...

    async def next_batch(self, limit: int) -> list[StoredMessage]: ...
    async def position(self) -> FollowPosition: ...
    def buffered(self) -> int: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LastRecord:
    """The newest stored record of one subject (``LogSource.last_per_subject``)."""

    subject: str
    seq: int
    data: bytes


class LogSource(Protocol):
    async def last_seq(self) -> int: ...
    async def subject_counts(self, subject_filter: str) -> tuple[dict[str, int], int]: ...
    async def last_per_subject(self, subjects: Sequence[str]) -> list[LastRecord]: ...
    async def identity(self) -> tuple[str, int]: ...
    async def bounds(self) -> tuple[int, int]: ...
    async def count_from(
        self, subjects: Sequence[str], start_seq: int, start_time: datetime | None = None
    ) -> int: ...
    async def follow(
        self, subjects: Sequence[str], start_seq: int, start_time: datetime | None = None
    ) -> Follow: ...
    async def read_page(
        self, subject_filter: str, start_seq: int, limit: int
    ) -> tuple[list[StoredMessage], int] | None: ...


def _stream_seq(reply: str) -> int:
    """The stream sequence in a JetStream delivery's reply subject (v1 or v2 ack format).

    ``msg.metadata`` would also build a datetime and a dataclass per record: on the hot path
    this is a third of the per-record cost.
    """
    tokens = reply.split(".")
    return int(tokens[5] if len(tokens) == 9 else tokens[Msg.Ack.StreamSeq])


def _seq_and_pending(reply: str) -> tuple[int, int]:
    """The stream sequence and the consumer's pending count (matching records stored after this
    one) in a JetStream delivery's reply subject (v1 or v2 ack format)."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[8])
    return int(tokens[Msg.Ack.StreamSeq]), int(tokens[Msg.Ack.NumPending])


class _NatsFollow:
    """An ordered push consumer handing records over in batches, with backpressure.

    nats-py calls ``_take`` once per record, in order. When ``FOLLOW_BUFFER`` records wait here,
    ``_take`` waits too, so nats-py stops answering the consumer's flow control and the server
    pauses: a slow reader of a replay holds this many records, not the whole replay.
    """

    def __init__(self) -> None:
        self._sub: JetStreamContext.PushSubscription | None = None  # set by follow()
        self._items: deque[tuple[StoredMessage, int]] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.remaining: int | None = None

    async def _take(self, msg) -> None:
        while len(self._items) >= FOLLOW_BUFFER:
            self._room.clear()
            await self._room.wait()
        seq, pending = _seq_and_pending(msg.reply)
        self._items.append((StoredMessage(seq, msg.subject, msg.data), pending))
        self._ready.set()

    async def next_batch(self, limit: int) -> list[StoredMessage]:
        """At least one record (waits for it), at most ``limit``, in stream order."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        items = self._items
        taken = [items.popleft() for _ in range(min(limit, len(items)))]
        if len(items) < FOLLOW_BUFFER:
            self._room.set()
        self.remaining = taken[-1][1]
        return [message for message, _ in taken]

    def _subscription(self) -> JetStreamContext.PushSubscription:
        assert self._sub is not None, "follow() subscribes before it hands the follow out"
        return self._sub

    async def position(self) -> FollowPosition:
        info = await self._subscription().consumer_info()
        assert info.delivered is not None  # the server's consumer info always has it
        return FollowPosition(info.num_pending or 0, info.delivered.stream_seq or 0)

    def buffered(self) -> int:
        """Records the broker delivered that this process has not taken yet."""
        return len(self._items) + self._subscription().pending_msgs

    async def close(self) -> None:
        self._room.set()
        try:
            await self._subscription().unsubscribe()
        except Exception:  # the link may be down; the consumer is ephemeral and will expire
            pass


class NatsLogSource:
    def __init__(self, nc: NATS, js: JetStreamContext, stream: str = STREAM_NAME) -> None:
        self._nc = nc
        self._js = js
        self.stream = stream
        # Does the stream republish its records where the gateway reads them live? (None: not
        # looked yet.) A stream an older ingest made has no republish until an ingest of this
        # version starts (logstream.shared.nats_link.ensure_stream).
        self.republishes: bool | None = None
        # The stream-info request under way for ``bounds``: callers meanwhile share its answer.
        self._bounds: asyncio.Future[tuple[int, int]] | None = None
        # The stream's replicas, as the last stream info said (0: not asked yet).
        self._replicas = 0

    async def last_seq(self) -> int:
        try:
            info = await self._js.stream_info(self.stream)
        except NotFoundError:
            raise BrokerUnavailable(
                f"stream {self.stream} does not exist yet (is ingest up?)"
            ) from None
        except Exception as exc:
            raise BrokerUnavailable(f"JetStream did not answer: {type(exc).__name__}") from None
        return info.state.last_seq

    async def subject_counts(self, subject_filter: str) -> tuple[dict[str, int], int]:
        """Records per subject under ``subject_filter`` from the stream's own per-subject
        state (nothing is read), and how many subjects match: the broker lists at most
        100,000 of them in one answer (its ``total`` says how many there were).

        Asked as a plain request: nats-py's ``stream_info`` drops that ``total``."""
        request = msgspec.json.encode({"subjects_filter": subject_filter})
        try:
            reply = await self._nc.request(
                f"$JS.API.STREAM.INFO.{self.stream}", request, timeout=INFO_TIMEOUT_S
            )
            answer = _STREAM_INFO.decode(reply.data)
        except (TimeoutError, nats.errors.Error, msgspec.DecodeError) as exc:
            raise BrokerUnavailable(f"JetStream did not answer: {type(exc).__name__}") from None
        if answer.error is not None:
            if answer.error.get("err_code") == STREAM_NOT_FOUND:
                return {}, 0
            raise BrokerUnavailable(f"JetStream refused: {answer.error.get('description')}")
        subjects = answer.state.subjects or {}
        return subjects, max(len(subjects), answer.total or 0)

    async def last_per_subject(self, subjects: Sequence[str]) -> list[LastRecord]:
        """The newest record of each subject (those with none are left out), with batched
        direct gets: one request per ``MULTI_LAST_MAX`` subjects, answered by any replica."""
        found: list[LastRecord] = []
        for start in range(0, len(subjects), MULTI_LAST_MAX):
            found.extend(await self._multi_last(subjects[start : start + MULTI_LAST_MAX]))
        return found

    async def _multi_last(self, subjects: Sequence[str]) -> list[LastRecord]:
        messages, status, _ = await self._direct_batch(
            {"multi_last": list(subjects)}, "could not read the channels' last records"
        )
        if status not in _END_OF_BATCH:
            raise BrokerUnavailable(f"the broker refused a direct get (status {status})")
        return [LastRecord(m.subject, m.seq, m.data) for m in messages]

    async def _direct_batch(
        self, request: dict, failing: str
    ) -> tuple[list[StoredMessage], str, int]:
        """One batched direct get: the records it answered, its end-of-batch status, and the
        matching records the stream holds after them (``Nats-Num-Pending``, 0 when absent)."""
        nc = self._nc
        inbox = nc.new_inbox()
        found: list[StoredMessage] = []
        ended: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

        async def take(msg: Msg) -> None:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is not None:
                if not ended.done():
                    ended.set_result((status, int(headers.get("Nats-Num-Pending") or 0)))
                return
            found.append(
                StoredMessage(int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data)
            )

        try:
            sub = await nc.subscribe(inbox, cb=take)
            try:
                await nc.publish(
                    f"$JS.API.DIRECT.GET.{self.stream}", msgspec.json.encode(request), reply=inbox
                )
                status, pending = await asyncio.wait_for(ended, INFO_TIMEOUT_S)
            finally:
                await sub.unsubscribe()
        except (TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"{failing}: {exc}") from None
        return found, status, pending

    async def identity(self) -> tuple[str, int]:
        """When the stream was created, and its last seq: a new creation time, or a last seq
        that went backwards, means the stream was recreated and its seqs started over."""
        try:
            info = await self._js.stream_info(self.stream)
        except Exception as exc:
            raise BrokerUnavailable(f"JetStream did not answer: {type(exc).__name__}") from None
        republish = info.config.republish
        self.republishes = republish is not None and republish.dest == LIVE_SUBJECTS
        return str(info.created), info.state.last_seq

    async def bounds(self) -> tuple[int, int]:
        """The first and last seq still in the stream (first > last when it is empty).

        Callers while a request is under way share its answer (one request, not one per
        connection, when a reconnect storm resumes thousands of streams at once): it is as
        fresh as the caller's own would be, give or take that request's round trip."""
        pending = self._bounds
        if pending is None:
            pending = self._bounds = asyncio.ensure_future(self._read_bounds())
            pending.add_done_callback(self._bounds_done)
        return await asyncio.shield(pending)

    def _bounds_done(self, future: asyncio.Future[tuple[int, int]]) -> None:
        if self._bounds is future:
            self._bounds = None
        if not future.cancelled():
            future.exception()  # (retrieved: every caller may have left)

    async def _read_bounds(self) -> tuple[int, int]:
        try:
            info = await self._js.stream_info(self.stream)
        except Exception as exc:
            raise BrokerUnavailable(f"JetStream did not answer: {type(exc).__name__}") from None
        self._replicas = info.config.num_replicas or 1
        return info.state.first_seq, info.state.last_seq

    async def read_page(
        self, subject_filter: str, start_seq: int, limit: int
    ) -> tuple[list[StoredMessage], int] | None:
        """Up to ``limit`` records of ``subject_filter`` from ``start_seq`` on, with one batched
        direct get (no consumer: nothing for the broker to create, track and delete), and how
        many matching records the stream holds after them. None where a direct get could miss
        records: a replicated stream (any replica answers, and a follower may be behind the
        records this gateway already saw live), or one whose replicas are not known yet."""
        if self._replicas != 1:
            return None
        request = {"seq": max(start_seq, 1), "next_by_subj": subject_filter, "batch": limit}
        found, status, pending = await self._direct_batch(request, "could not read the log")
        if status == "404":
            return [], 0
        if status != "204":
            raise BrokerUnavailable(f"the broker refused a direct get (status {status})")
        return found, pending

    async def count_from(
        self, subjects: Sequence[str], start_seq: int, start_time: datetime | None = None
    ) -> int:
        """Records of ``subjects`` from ``start_seq`` (or ``start_time``) on: a throw-away
        consumer's pending count, so nothing is read."""
        config = ConsumerConfig(
            deliver_policy=(
                DeliverPolicy.BY_START_TIME if start_time else DeliverPolicy.BY_START_SEQUENCE
            ),
            opt_start_seq=None if start_time else max(start_seq, 1),
            opt_start_time=start_time,
            ack_policy=AckPolicy.NONE,
            filter_subjects=list(subjects) if len(subjects) > 1 else None,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            inactive_threshold=5.0,
            mem_storage=True,
        )
        try:
            info = await self._js.add_consumer(self.stream, config=config)
            await self._js.delete_consumer(self.stream, info.name)
        except (TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"could not count records: {exc}") from None
        return info.num_pending or 0

    async def follow(
        self, subjects: Sequence[str], start_seq: int, start_time: datetime | None = None
    ) -> Follow:
        """An ordered push consumer from ``start_seq`` (or ``start_time``) on, made the way
        nats-py's ``subscribe(ordered_consumer=True)`` makes it, but keeping the broker's
        answer: its pending count says at once whether there is anything to read."""
        config = ConsumerConfig(
            deliver_policy=(
                DeliverPolicy.BY_START_TIME if start_time else DeliverPolicy.BY_START_SEQUENCE
            ),
            opt_start_seq=None if start_time else max(start_seq, 1),
            opt_start_time=start_time,
            filter_subjects=list(subjects) if len(subjects) > 1 else None,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            deliver_subject=self._nc.new_inbox(),
            # An ephemeral push consumer outlives its subscription by this much (nats-py does
            # not delete it): short, so replays that end do not pile up against the stream's
            # consumer limit (nats-server 2.15 gives every stream 1,000 by default).
            inactive_threshold=FOLLOW_LINGER_S,
            # ordered: one delivery at a time, no acks, in memory (as nats-py sets it)
            flow_control=True,
            ack_policy=AckPolicy.NONE,
            max_deliver=1,
            ack_wait=ORDERED_ACK_WAIT_S,
            idle_heartbeat=IDLE_HEARTBEAT_S,
            num_replicas=1,
            mem_storage=True,
        )
        follow = _NatsFollow()
        try:
            info = await self._js.add_consumer(self.stream, config=config)
            follow.remaining = info.num_pending or 0
            follow._sub = await self._js.subscribe_bind(
                stream=self.stream,
                config=config,
                consumer=info.name,
                cb=follow._take,
                ordered_consumer=True,
                pending_msgs_limit=PENDING_MSGS,
                pending_bytes_limit=PENDING_BYTES,
            )
        except (TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"could not follow the log: {exc}") from None
        return follow


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching (``*`` one token, ``>`` the rest), for the in-memory source."""
    mine, theirs = pattern.split("."), subject.split(".")
    for index, token in enumerate(mine):
        if token == ">":
            return len(theirs) > index
        if index >= len(theirs) or (token != "*" and token != theirs[index]):
            return False
    return len(mine) == len(theirs)


class _MemoryFollow:
    def __init__(self, source: MemoryLogSource, subjects: Sequence[str], start_seq: int):
        self._source, self._subjects, self._next = source, list(subjects), max(start_seq, 1)

    @property
    def remaining(self) -> int | None:
        return sum(1 for m in self._source.messages[self._next - 1 :] if self._matches(m))

    def _matches(self, message: StoredMessage) -> bool:
        return any(subject_matches(p, message.subject) for p in self._subjects)

    async def next_batch(self, limit: int) -> list[StoredMessage]:
        while True:
            batch: list[StoredMessage] = []
            for message in self._source.messages[self._next - 1 :]:
                if len(batch) == limit:
                    break
                self._next = message.seq + 1
                if self._matches(message):
                    batch.append(message)
            if batch:
                return batch
            async with self._source.changed:
                if self._next > len(self._source.messages):
                    await self._source.changed.wait()

    async def position(self) -> FollowPosition:
        remaining = self._source.messages[self._next - 1 :]
        matching = [m for m in remaining if self._matches(m)]
        delivered = [m.seq for m in self._source.messages[: self._next - 1] if self._matches(m)]
        return FollowPosition(len(matching), delivered[-1] if delivered else 0)

    def buffered(self) -> int:
        return 0

    async def close(self) -> None:
        async with self._source.changed:
            self._source.changed.notify_all()


class MemoryLogSource:
    """A stream in a list: sequence = index + 1. For unit tests of the hub's logic only."""

    def __init__(self) -> None:
        self.messages: list[StoredMessage] = []
        self.changed = asyncio.Condition()
        self.follows_started = 0
        self.pages_read = 0
        self.first_seq = 1  # records before it have "aged out"
        self.created = 1
        self.live_feeds: list = []  # MemoryLiveFeed: told of every record stored

    async def publish(self, subject: str, data: bytes) -> int:
        async with self.changed:
            message = StoredMessage(len(self.messages) + 1, subject, data)
            self.messages.append(message)
            self.changed.notify_all()
        for feed in self.live_feeds:
            feed.stored(message)
        return message.seq

    async def last_seq(self) -> int:
        return len(self.messages)

    async def subject_counts(self, subject_filter: str) -> tuple[dict[str, int], int]:
        counts: dict[str, int] = {}
        for message in self.messages[self.first_seq - 1 :]:
            if subject_matches(subject_filter, message.subject):
                counts[message.subject] = counts.get(message.subject, 0) + 1
        return counts, len(counts)

    async def last_per_subject(self, subjects: Sequence[str]) -> list[LastRecord]:
        last: dict[str, StoredMessage] = {}
        wanted = set(subjects)
        for message in self.messages[self.first_seq - 1 :]:
            if message.subject in wanted:
                last[message.subject] = message
        return [
            LastRecord(m.subject, m.seq, m.data) for m in sorted(last.values(), key=lambda m: m.seq)
        ]

    async def identity(self) -> tuple[str, int]:
        return str(self.created), len(self.messages)

    def recreate(self) -> None:
        """The stream is deleted and created again: seqs start over from 1."""
        self.messages.clear()
        self.first_seq = 1
        self.created += 1

    async def bounds(self) -> tuple[int, int]:
        return self.first_seq, len(self.messages)

    async def count_from(
        self, subjects: Sequence[str], start_seq: int, start_time: datetime | None = None
    ) -> int:
        start = max(start_seq, self.first_seq)
        return sum(
            1
            for m in self.messages[start - 1 :]
            if any(subject_matches(p, m.subject) for p in subjects)
        )

    async def read_page(
        self, subject_filter: str, start_seq: int, limit: int
    ) -> tuple[list[StoredMessage], int] | None:
        self.pages_read += 1
        matching = [
            m
            for m in self.messages[max(start_seq, self.first_seq) - 1 :]
            if subject_matches(subject_filter, m.subject)
        ]
        return matching[:limit], max(len(matching) - limit, 0)

    async def follow(
        self, subjects: Sequence[str], start_seq: int, start_time: datetime | None = None
    ) -> Follow:
        self.follows_started += 1
        return _MemoryFollow(self, subjects, max(start_seq, self.first_seq))
