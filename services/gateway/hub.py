"""The hub: a gateway process reads the records its connections watch, once, and fans them out.

Interest lives on the broker. For every subject pattern some connection wants (a channel, or a
workspace wildcard) the hub holds one core-NATS subscription to the records the stream
republishes on it (``logstream.services.gateway.interest``, ``logstream.services.gateway.live``), so NATS sends this
process only those records, once, however many connections watch them. A connection whose
patterns the hub already follows costs no broker round trip: its cursor is where the hub's
reading stands.

Records arrive in stream order and the hub takes each once (``last_seq``), so every connection
sees increasing seqs. Nothing is lost on the way:
- the link dropped, or the live buffer filled (``MISSED``): the hub reads what it may have
  missed from the stream with an ordered consumer, from ``last_seq`` on, then goes on live
  (``_catch_up``);
- a record says the one before it on its subject (``previous``) is one the hub never took: the
  hub reads the missing ones from the stream before it (``_repair``). A connection that was
  already sent a later record of another subject ends with ``overflow`` and an ``id`` before
  the missing record, and resumes from there.

Each record is encoded into its SSE frame once and the same bytes go to every interested
connection: into its bounded ``Outbox`` while it catches up, then, with the rest of the read
batch, straight to its socket (``logstream.services.gateway.direct``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from logstream.services.gateway.direct import Coalescer
from logstream.services.gateway.interest import InterestTable
from logstream.services.gateway.live import MISSED, LiveFeed
from logstream.services.gateway.shared_replay import ReplayReads
from logstream.services.gateway.source import LogSource, StoredMessage
from logstream.services.gateway.subjects import MAX_FILTERS, covering_filters
from logstream.services.gateway.subscription import FILTER_VIEW, Subscription, encode_record
from logstream.shared.errors import BrokerUnavailable
from logstream.shared.nats_names import LOGS_SUBJECTS

__all__ = ["Hub"]

# Give the loop to the SSE writers after at most this many records, so a flood cannot starve
# them.
YIELD_EVERY = 256
# A catch-up with nothing to read for this long asks the broker whether it is done.
CATCH_UP_IDLE_S = 0.1
# After a failed catch-up (the broker is away) try again this often.
CATCH_UP_RETRY_S = 0.5
# A repair that gets nothing for this long gives up: its connections resume instead.
REPAIR_TIMEOUT_S = 5.0

log = logging.getLogger("logstream.gateway.hub")


class Hub:
    def __init__(
        self,
        source: LogSource,
        live: LiveFeed,
        *,
        on_read: Callable[[int], None] = lambda count: None,
    ) -> None:
        self._source = source
        self._live = live
        self._on_read = on_read
        self._subs: set[Subscription] = set()
        self._interests = InterestTable(source, live)
        self._task: asyncio.Task | None = None
        self.last_seq = 0
        self._stream_identity: str | None = None
        self._direct = Coalescer()
        # Replays by seq, read in groups that share one read of the stream.
        self.replays = ReplayReads(source, on_read=self.count_read)
        self.delivered_total = 0
        self.read_total = 0
        # What the broker was asked besides subscriptions (``subscribes``, ``settles``):
        # catch-ups after a loss, repairs of a missed record.
        self.catch_ups = 0
        self.repairs = 0
        self.started_at = time.monotonic()

    # -- connections ---------------------------------------------------------------------

    async def subscribe(self, sub: Subscription) -> int:
        """Register ``sub`` and return its cursor: it gets every record after that seq."""
        self._subs.add(sub)
        try:
            interests = await self._interests.add(sub)
        except BaseException:
            self._subs.discard(sub)
            raise
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hub-live")
        # (``add`` returns once every interest has its start)
        starts = [interest.since for interest in interests if interest.since is not None]
        cursor = max(self.last_seq, *starts)
        sub.start_after(cursor)
        return cursor

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            self._interests.drop(sub)

    # -- stats ---------------------------------------------------------------------------

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        return frozenset(self._subs)

    @property
    def interests(self) -> int:
        """Subject patterns this gateway subscribes to (lingering ones included)."""
        return len(self._interests)

    @property
    def subscribes(self) -> int:
        return self._interests.subscribes

    @property
    def settles(self) -> int:
        return self._interests.settles

    @property
    def buffered(self) -> int:
        """Live records the broker sent that the hub has not fanned out yet."""
        return self._live.buffered()

    def channel_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for sub in self._subs:
            counts.update(str(p) for p in sub.patterns)
        return dict(counts)

    # -- reading -------------------------------------------------------------------------

    async def _run(self) -> None:
        """Fan out live records until cancelled; catch up or repair where some were missed."""
        while True:
            try:
                await self._take(await self._live.next_batch(YIELD_EVERY))
            except Exception:  # a bug must not silence every stream: read back what it skipped
                log.exception("live fan-out failed; catching up from the stream")
                self._live.missed()
            self._direct.flush()  # one write per caught-up connection for the whole batch
            await asyncio.sleep(0)  # let the writers send what this batch queued

    async def _take(self, batch: list[StoredMessage | None]) -> None:
        for message in batch:
            if message is MISSED:
                self._direct.flush()
                await self._catch_up()
                continue
            missing_after = self._note(message)
            if missing_after is not None and message.previous is not None:
                # (``_note`` finds a gap only in a record that names its previous one)
                self._direct.flush()
                await self._repair(message.subject, missing_after, message.previous)
            self.fan_out(message)

    def _note(self, message: StoredMessage) -> int | None:
        """None, or the seq after which records of ``message``'s subject never came."""
        if message.seq <= self.last_seq:
            return None
        return self._interests.note(message)

    def count_read(self, count: int) -> None:
        """Records taken from NATS outside the live path (a connection's replay): the read
        cost operators see counts every record, live or replayed."""
        self.read_total += count
        self._on_read(count)

    def fan_out(self, message: StoredMessage) -> None:
        """Push one stored record to every connection that wants it, encoded once: into its
        outbox, or, for a caught-up connection, into the batch written to its socket."""
        seq = message.seq
        if seq <= self.last_seq:
            return  # a second matching pattern, or a catch-up overlapping live: never twice
        self.last_seq = seq
        self.read_total += 1
        self._on_read(1)
        targets = self._interests.targets(message.subject)
        if targets:
            self._deliver(message, targets, late=False)

    def _deliver(
        self, message: StoredMessage, targets: Iterable[Subscription], *, late: bool
    ) -> None:
        seq = message.seq
        frame = encode_record(message)
        direct = self._direct
        view = None
        for sub in targets:
            if seq <= sub.last_sent:
                if late:
                    sub.missed(seq)  # it has later records already: resume from before this
                continue  # live: at or before its cursor, still in flight when it connected
            if sub.filtered:
                view = view or FILTER_VIEW.decode(message.data)
                if not sub.accepts(view):
                    continue
            if sub.deliver(seq, frame, direct):
                self.delivered_total += 1

    async def _catch_up(self) -> None:
        """Records may have been missed after ``last_seq`` (the link dropped, or the live buffer
        filled): read them from the stream in order, then go on live where its buffer starts."""
        self.catch_ups += 1
        while True:
            patterns = self._interests.patterns()
            if not patterns:
                return
            start = max(self.last_seq, self._interests.owed_after(self.last_seq)) + 1
            filters = (
                covering_filters(patterns) if len(patterns) <= MAX_FILTERS else [LOGS_SUBJECTS]
            )
            log.warning("live records may have been missed after seq %d: catching up", start - 1)
            try:
                follow = await self._source.follow(filters, start)
            except BrokerUnavailable:
                await asyncio.sleep(CATCH_UP_RETRY_S)
                continue
            try:
                await self._read_until_live(follow)
                return
            except Exception as exc:  # the broker went away mid-way: start again from here
                log.warning("catch-up interrupted: %s", exc)
                await asyncio.sleep(CATCH_UP_RETRY_S)
            finally:
                await follow.close()

    async def _read_until_live(self, follow) -> None:
        while True:
            try:
                async with asyncio.timeout(CATCH_UP_IDLE_S):
                    batch = await follow.next_batch(YIELD_EVERY)
            except TimeoutError:
                position = await follow.position()
                if not position.pending and not follow.buffered():
                    return  # all stored so far is read; what comes next comes live
                continue
            for message in batch:
                self._note(message)
                self.fan_out(message)
            self._direct.flush()
            first_live = self._live.first_seq()
            if first_live is not None and self.last_seq >= first_live - 1:
                return  # the live buffer carries on from here
            await asyncio.sleep(0)

    async def _repair(self, subject: str, after: int, upto: int) -> None:
        """Records of ``subject`` in (after, upto] never came live: read them from the stream
        and give them to the connections that still can take them in order."""
        self.repairs += 1
        log.warning("records of %s after seq %d never came live: reading them", subject, after)
        try:
            follow = await self._source.follow([subject], after + 1)
        except BrokerUnavailable:
            self._cut(subject)
            return
        try:
            async with asyncio.timeout(REPAIR_TIMEOUT_S):
                while True:
                    for message in await follow.next_batch(YIELD_EVERY):
                        self.count_read(1)
                        if message.seq > upto:
                            return
                        targets = self._interests.targets(subject)
                        if targets:
                            self._deliver(message, targets, late=True)
                        if message.seq == upto:
                            return
        except TimeoutError:
            self._cut(subject)  # they resume, and the replay says what aged out
        finally:
            self._direct.flush()
            await follow.close()

    def _cut(self, subject: str) -> None:
        for sub in self._interests.targets(subject):
            sub.cut()

    async def check_stream(self) -> None:
        """Notice a recreated stream (e.g. a broker back with an empty store) and start over.

        Its seqs begin again at 1, so records would be taken for ones already fanned out.
        Instead every connection is cut to resume, and the hub goes on from the new stream's
        last seq.
        """
        seen = self.last_seq  # before asking: records fanned out meanwhile are newer than it
        identity, last = await self._source.identity()
        known = self._stream_identity
        self._stream_identity = identity
        if known is None or (identity == known and last >= seen):
            return
        log.warning(
            "stream LOGS was recreated (last seq %d, had seen %d): connections resume", last, seen
        )
        self.last_seq = last
        self._interests.restart(last)
        for sub in list(self._subs):
            sub.cut()

    async def close(self) -> None:
        await self.replays.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._interests.close()
