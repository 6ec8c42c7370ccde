"""What a gateway asks the broker for: one subscription per subject pattern its streams watch.

Each pattern (a channel's subject, or a wildcard such as ``logs.etl.ws1.*``) that some stream
wants has one ``Interest``: the streams that want it, the live subscription
(``logstream.services.gateway.live``), and ``since``, the stream's last seq once the broker surely had the
subscription (every later record of the pattern comes live). The ``InterestTable`` keeps them:

- adding a stream whose patterns are all followed already asks the broker nothing; a new
  pattern costs one subscription line and one stream-info request, and every new pattern of the
  moment shares that request (``settle``): the work of a connect does not grow with the
  patterns already open;
- a pattern nobody watches any more is let go after ``RELEASE_AFTER_S``, so a reload finds it;
- per subject, the last seq taken (``note``): a record whose ``previous`` is later than that
  was preceded by one this gateway never got.
"""

from __future__ import annotations

import asyncio

from logstream.services.gateway.live import LiveFeed
from logstream.services.gateway.source import LogSource, StoredMessage
from logstream.services.gateway.subjects import generalisations
from logstream.services.gateway.subscription import Subscription

__all__ = ["RELEASE_AFTER_S", "Interest", "InterestTable"]

# A pattern nobody watches any more keeps its subscription this long: a reload or a reconnect
# comes back to it without a broker round trip, and a short linger reads little extra.
RELEASE_AFTER_S = 2.0
_NO_ONE: frozenset[Subscription] = frozenset()


class Interest:
    """One subject pattern this gateway subscribes to, and the connections that want it."""

    __slots__ = ("known", "pattern", "release", "since", "subs", "subscribed", "wild")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.wild = "*" in pattern.split(".")
        self.subs: set[Subscription] = set()
        # The stream's last seq once the broker surely had the subscription: every later record
        # of the pattern comes live. None until then.
        self.since: int | None = None
        # Per subject, the last seq taken of it (one entry for a channel; one per channel seen
        # for a wildcard, dropped with the interest).
        self.known: dict[str, int] = {}
        self.subscribed = False
        self.release: asyncio.TimerHandle | None = None


class InterestTable:
    def __init__(self, source: LogSource, live: LiveFeed) -> None:
        self._source = source
        self._live = live
        self._by_pattern: dict[str, Interest] = {}
        self._wild = 0  # interests with a wildcard: only then look for them per record
        self._unsettled: list[Interest] = []
        self._settling: asyncio.Future | None = None
        self._chores: set[asyncio.Task] = set()
        # What the broker was asked: subscription lines, and stream-info rounds for new ones.
        self.subscribes = 0
        self.settles = 0

    def __len__(self) -> int:
        return len(self._by_pattern)

    def __iter__(self):
        return iter(self._by_pattern.values())

    def patterns(self) -> list[str]:
        return list(self._by_pattern)

    # -- streams come and go -------------------------------------------------------------

    async def add(self, sub: Subscription) -> list[Interest]:
        """Register ``sub`` under each of its patterns; returns once every one is settled."""
        interests = []
        for pattern in sub.subjects:
            interest = self._by_pattern.get(pattern)
            if interest is None:
                interest = self._by_pattern[pattern] = Interest(pattern)
                self._wild += interest.wild
            elif interest.release is not None:
                interest.release.cancel()
                interest.release = None
            interest.subs.add(sub)
            interests.append(interest)
        try:
            for interest in interests:
                if not interest.subscribed:
                    await self._subscribe(interest)
            await self._settle(interests)
        except BaseException:
            self.drop(sub)
            raise
        return interests

    def drop(self, sub: Subscription) -> None:
        loop = asyncio.get_running_loop()
        for pattern in sub.subjects:
            interest = self._by_pattern.get(pattern)
            if interest is None or sub not in interest.subs:
                continue
            interest.subs.discard(sub)
            if not interest.subs and interest.release is None:
                interest.release = loop.call_later(RELEASE_AFTER_S, self._release, interest)

    async def _subscribe(self, interest: Interest) -> None:
        interest.subscribed = True
        try:
            await self._live.add(interest.pattern)
        except BaseException:
            interest.subscribed = False
            raise
        self.subscribes += 1
        self._unsettled.append(interest)

    def _release(self, interest: Interest) -> None:
        interest.release = None
        if interest.subs or self._by_pattern.get(interest.pattern) is not interest:
            return
        del self._by_pattern[interest.pattern]
        self._wild -= interest.wild
        if interest in self._unsettled:
            self._unsettled.remove(interest)
        if interest.subscribed:
            task = asyncio.get_running_loop().create_task(self._live.remove(interest.pattern))
            self._chores.add(task)
            task.add_done_callback(self._chores.discard)

    async def _settle(self, interests: list[Interest]) -> None:
        """Wait until each of ``interests`` knows from which seq on the broker sends it all.

        One stream-info request, sent after the subscriptions were written, settles every
        pattern added before it: the broker handles one connection's lines in order, so a
        record stored after it answered matches the subscription."""
        while any(interest.since is None for interest in interests):
            if self._settling is None:
                self._settling = asyncio.ensure_future(self._settle_round())
            await asyncio.shield(self._settling)

    async def _settle_round(self) -> None:
        batch, self._unsettled = self._unsettled, []
        try:
            if not batch:
                await asyncio.sleep(0)  # a subscription line still being written
                return
            last = await self._source.last_seq()
        except BaseException:
            self._unsettled[:0] = batch
            raise
        finally:
            self._settling = None
        self.settles += 1
        for interest in batch:
            interest.since = last

    # -- records ---------------------------------------------------------------------------

    def of(self, subject: str) -> list[Interest]:
        """The interests ``subject`` falls under: its own, and any wildcard's."""
        found = []
        interest = self._by_pattern.get(subject)
        if interest is not None:
            found.append(interest)
        if self._wild:
            for pattern in generalisations(subject):
                interest = self._by_pattern.get(pattern)
                if interest is not None:
                    found.append(interest)
        return found

    def targets(self, subject: str) -> set[Subscription] | frozenset[Subscription]:
        """The connections that want records of ``subject`` (do not change the answer)."""
        interest = self._by_pattern.get(subject)
        targets = interest.subs if interest is not None else _NO_ONE
        if self._wild:
            extra = [
                found.subs
                for pattern in generalisations(subject)
                if (found := self._by_pattern.get(pattern)) is not None and found.subs
            ]
            if extra:
                targets = set(targets).union(*extra)
        return targets

    def note(self, message: StoredMessage) -> int | None:
        """Track the last seq taken per subject; if ``message`` says one before it was never
        taken (its ``previous`` is later), the seq after which records are missing."""
        missing_after = None
        subject, previous = message.subject, message.previous
        for interest in self.of(subject):
            known = interest.known
            if previous is not None and interest.since is not None:
                floor = max(known.get(subject, 0), interest.since)
                if previous > floor:
                    missing_after = floor if missing_after is None else min(missing_after, floor)
            known[subject] = message.seq
        return missing_after

    def owed_after(self, default: int) -> int:
        """The lowest seq after which some interest is owed every record (``default`` if
        none is settled)."""
        return min(
            (i.since for i in self._by_pattern.values() if i.since is not None), default=default
        )

    def restart(self, last: int) -> None:
        """The stream was recreated: every pattern is owed what comes after ``last``."""
        for interest in self._by_pattern.values():
            interest.known.clear()
            if interest.since is not None:
                interest.since = last

    async def close(self) -> None:
        for interest in self._by_pattern.values():
            if interest.release is not None:
                interest.release.cancel()
        for task in list(self._chores):
            task.cancel()
        await asyncio.gather(*self._chores, return_exceptions=True)
