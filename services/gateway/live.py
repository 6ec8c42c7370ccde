"""Live records by interest: the broker sends a gateway the records of the subjects it asks for.

The LOGS stream republishes every record it stores on core NATS (``logstream.shared.nats_names.LIVE_PREFIX``
+ its subject, JetStream ``RePublish``) with headers naming its stream sequence and the previous
sequence on the same subject. A gateway subscribes to exactly the subjects (or workspace
wildcards) its connections want, so NATS routes it only those records, and subscribing or
unsubscribing a subject is one protocol line: no consumer to rebuild, whatever else is open.

``LiveFeed`` is what the hub needs: ``add``/``remove`` a subject pattern, and the records in the
order they arrive, which is the stream's order (one stream leader republishes in sequence, and
one connection keeps it). A record that matches two patterns arrives twice (the hub keeps the
first). Records can be missed only when the link drops or the feed's buffer fills; the feed then
puts ``MISSED`` in the batch where the loss happened, and the hub catches up from the stream.

``NatsLiveFeed`` is the real one. nats-py gives every subscription with a callback its own task
and queue, so records of different subjects would be handed over out of order, and 10,000
subscriptions would be 10,000 tasks. Instead each subscription is made without a callback and its
pending queue is this feed's one buffer (``_Inbox``): one queue, one reader, arrival order. That
is a nats-py internal (``logstream.shared.nats_internals.share_pending_queue``, checked when the
feed is made); ``tests/integration/test_gateway_live.py`` checks it against a real server.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from logstream.services.gateway.source import StoredMessage, subject_matches
from logstream.shared import fast_paths, nats_internals
from logstream.shared.nats_names import LIVE_PREFIX

__all__ = ["LIVE_BUFFER", "MISSED", "LiveFeed", "MemoryLiveFeed", "NatsLiveFeed"]

# Records held for the hub before the feed gives up on them and says MISSED (the hub then reads
# them from the stream, flow-controlled): bounds a gateway's memory when it falls behind.
LIVE_BUFFER = 50_000
# Marks where records may have been missed: the hub catches up from the stream there.
MISSED = None
_SEQ, _PREVIOUS = "Nats-Sequence", "Nats-Last-Sequence"


class LiveFeed(Protocol):
    async def add(self, pattern: str) -> None: ...
    async def remove(self, pattern: str) -> None: ...
    async def next_batch(self, limit: int) -> list[StoredMessage | None]: ...
    def first_seq(self) -> int | None: ...
    def buffered(self) -> int: ...
    def missed(self) -> None: ...


class _Buffer:
    """The feed's one queue: records in arrival order, ``MISSED`` where some were lost."""

    def __init__(self, limit: int) -> None:
        self.items: deque[StoredMessage | None] = deque()
        self.ready = asyncio.Event()
        self.limit = limit
        self.lost = False  # over the limit: drop until the reader has emptied the queue

    def put(self, item: StoredMessage | None) -> None:
        items = self.items
        if item is MISSED:
            if not items or items[-1] is not MISSED:
                items.append(MISSED)
        elif self.lost:
            return
        elif len(items) >= self.limit:
            self.lost = True
            items.clear()  # the hub reads all of them from the stream instead
            items.append(MISSED)
        else:
            items.append(item)
        self.ready.set()

    async def take(self, limit: int) -> list[StoredMessage | None]:
        while not self.items:
            self.lost = False
            self.ready.clear()
            await self.ready.wait()
        items = self.items
        batch = [items.popleft() for _ in range(min(limit, len(items)))]
        if not items:
            self.lost = False
        return batch

    def first_seq(self) -> int | None:
        for item in self.items:
            return None if item is MISSED else item.seq
        return None


class _Inbox:
    """What nats-py takes for a subscription's pending queue (``put_nowait``, ``empty``,
    ``qsize``): every live subscription shares one, so records keep their arrival order."""

    __slots__ = ("_buffer", "_skip")

    def __init__(self, buffer: _Buffer) -> None:
        self._buffer = buffer
        self._skip = len(LIVE_PREFIX) + 1

    def put_nowait(self, msg: Msg) -> None:
        headers = msg.headers
        if not headers or _SEQ not in headers:
            return  # not a republished record (nobody else may publish here)
        self._buffer.put(
            StoredMessage(
                int(headers[_SEQ]),
                msg.subject[self._skip :],
                msg.data,
                int(headers.get(_PREVIOUS) or 0),
            )
        )

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0


class _BufferedFeed:
    """What both feeds share: the one buffer the hub reads, and the mark of a loss."""

    def __init__(self, limit: int) -> None:
        self._buffer = _Buffer(limit)

    def missed(self) -> None:
        """Records stored from here on may never have reached us (the link dropped)."""
        self._buffer.put(MISSED)

    async def next_batch(self, limit: int) -> list[StoredMessage | None]:
        return await self._buffer.take(limit)

    def first_seq(self) -> int | None:
        return self._buffer.first_seq()

    def buffered(self) -> int:
        return len(self._buffer.items)


class NatsLiveFeed(_BufferedFeed):
    def __init__(self, nc: Client, *, limit: int = LIVE_BUFFER) -> None:
        # Callbacks would lose the stream's order: without this hook the gateway does not start.
        fast_paths.require(
            nats_internals.LIVE_INBOX, nats_internals.check_subscription(), "nats-py"
        )
        super().__init__(limit)
        self._nc = nc
        self._inbox = _Inbox(self._buffer)
        self._subs: dict[str, Subscription] = {}

    async def add(self, pattern: str) -> None:
        """Ask the broker for ``pattern``'s records (a ``logs.…`` subject, wildcards allowed).
        The SUB is in the connection's write buffer when this returns, so a request sent after
        it (the same buffer) reaches the broker after it. nats-py's ``flush()`` is no such
        request: its PING is written straight to the socket, ahead of the buffer."""
        if pattern in self._subs:
            return
        sub = await self._nc.subscribe(f"{LIVE_PREFIX}.{pattern}", pending_bytes_limit=0)
        # The one seam into nats-py (see the module docstring): records go to the shared inbox,
        # and the subscription's own queue and iterator (about 3 KiB) are let go.
        nats_internals.share_pending_queue(sub, self._inbox)
        self._subs[pattern] = sub

    async def remove(self, pattern: str) -> None:
        sub = self._subs.pop(pattern, None)
        if sub is None:
            return
        try:
            await sub.unsubscribe()
        except Exception:  # closed link: the broker dropped the interest with the connection
            pass


class MemoryLiveFeed(_BufferedFeed):
    """The same over ``MemoryLogSource``, for unit tests: ``drop_next`` loses records on the way
    (as a broken link would, without saying so), ``missed`` says so."""

    def __init__(self, limit: int = LIVE_BUFFER) -> None:
        super().__init__(limit)
        self.patterns: set[str] = set()
        self._previous: dict[str, int] = {}
        self.drop_next = 0

    def stored(self, message: StoredMessage) -> None:
        """Called by the memory source for every record it stores."""
        previous = self._previous.get(message.subject, 0)
        self._previous[message.subject] = message.seq
        live = StoredMessage(message.seq, message.subject, message.data, previous)
        for pattern in list(self.patterns):
            if subject_matches(pattern, message.subject):
                if self.drop_next:
                    self.drop_next -= 1
                    continue
                self._buffer.put(live)

    async def add(self, pattern: str) -> None:
        self.patterns.add(pattern)

    async def remove(self, pattern: str) -> None:
        self.patterns.discard(pattern)
