"""The sender behind ``LogPublisher``: one background thread that drains its queue into ingest.

``publish()`` only appends to the ``Outbox``; everything that touches the network happens
here, on a thread of its own that runs an asyncio loop:

- The first record wakes the sender, which lingers ``linger_s`` for company; a full batch or
  a ``flush()`` does not wait. Batches follow the transport's limits (1,000 records over
  HTTP, 250 over NATS, under 768 KiB) and go one request at a time, so one publisher's
  records are stored in the order they were published.
- 429, 5xx and lost connections are retried with the same body (so the same ids: ingest
  stores a retried record once), after ``Retry-After`` when given, else with doubling
  backoff and jitter, up to ``max_attempts`` (None: until stored or the publisher is closed).
- ``on_outage`` hears of an outage once, at its first unanswered or 5xx attempt, with a
  ``BatchFailure`` saying what happened, and once more (with None) when a batch is stored again.
- Every batch ends answered: stored, or a ``BatchFailure`` that the ``Outbox`` keeps for the
  next ``flush()`` and ``on_failure`` hears of at once. That is what wakes ``flush()``.

The publisher turns a ``BatchFailure`` into its ``PublishFailed``; this module raises nothing
at its callers, since they are on another thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from logstream.shared.ingest_client import (
    HttpTransport,
    NatsTransport,
    Reply,
    Transport,
    TransportFailed,
)

__all__ = ["BatchFailure", "Outbox", "Sender", "in_sender_thread", "retry_delay"]

# The longest wait between attempts, even when Retry-After asks for more: one answer should
# not hold a flush() for minutes.
MAX_BACKOFF_S = 10.0
# Random spread added to every wait, so producers that failed together do not retry together.
JITTER = 0.5


def retry_delay(
    attempt: int,
    backoff_s: float,
    retry_after: float | None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds before attempt ``attempt + 1``: ``Retry-After`` when the server gave one, else
    ``backoff_s`` doubled per attempt; either way capped at ``MAX_BACKOFF_S`` and stretched by
    up to ``JITTER`` (never shortened: a ``Retry-After`` is a floor)."""
    base = retry_after if retry_after is not None else backoff_s * 2 ** min(attempt - 1, 16)
    return min(base, MAX_BACKOFF_S) * (1 + JITTER * rand())


# Statuses worth another try with the same ids: over budget, or not confirmed.
RETRYABLE = frozenset({429, 500, 502, 503, 504})
# Until the transport is open: the HTTP limits, which the NATS ones are not above.
_FIRST_BATCH_RECORDS, _FIRST_BATCH_BYTES = 1000, 768 * 1024
# Marks every sender thread, so that logging done there by the HTTP and NATS clients is not
# published back into a publisher (LogstreamHandler asks ``in_sender_thread()``).
_SENDER = threading.local()


def in_sender_thread() -> bool:
    """True on any publisher's background thread (its HTTP and NATS clients log there)."""
    return getattr(_SENDER, "active", False)


class BatchFailure(msgspec.Struct, frozen=True, kw_only=True):
    """Records ingest did not store: its answer (``status`` None when it never answered)."""

    message: str
    status: int | None
    error: str
    records: int
    details: list[Any] | None = None

    @classmethod
    def from_reply(cls, reply: Reply, records: int) -> BatchFailure:
        details = reply.body.get("details")
        return cls(
            message=reply.message or "(no message)",
            status=reply.status,
            error=reply.error or "error",
            records=records,
            details=details if isinstance(details, list) else None,
        )


class Outbox:
    """Encoded records between ``publish()`` and ingest's answer, and the tally of answers.

    Shared by the caller's threads and the sender; ``changed`` guards every field and is
    notified whenever room is made or records are answered, which is what ``publish()`` (for
    room) and ``flush()`` (for answers) wait on.
    """

    def __init__(self) -> None:
        self.records: collections.deque[bytes] = collections.deque()
        self.changed = threading.Condition()
        self.queued = self.resolved = self.lost = 0
        self.failures: list[BatchFailure] = []

    @property
    def pending(self) -> int:
        """Records queued or in flight, not yet answered."""
        return self.queued - self.resolved

    def take(self, max_records: int, max_bytes: int) -> list[bytes]:
        """The oldest records that fit one request body (a JSON array of them)."""
        with self.changed:
            batch: list[bytes] = []
            size = 2  # the array's brackets
            while self.records and len(batch) < max_records:
                if batch and size + len(self.records[0]) + 1 > max_bytes:
                    break
                size += len(self.records[0]) + 1
                batch.append(self.records.popleft())
            self.changed.notify_all()
            return batch

    def abandon(self) -> int:
        """Drop what is still queued when the sender stops (cancelled by a timed-out close)."""
        with self.changed:
            count = len(self.records)
            self.records.clear()
            return count

    def resolve(self, count: int, failure: BatchFailure | None) -> None:
        with self.changed:
            self.resolved += count
            if failure is not None:
                self.lost += failure.records
                self.failures.append(failure)
            self.changed.notify_all()


class Sender:
    """The background thread and asyncio loop that send an ``Outbox`` to ingest."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        token: str,
        url: str,
        transport: str | Transport,
        linger_s: float,
        max_attempts: int | None,
        backoff_s: float,
        on_failure: Callable[[BatchFailure], None] | None,
        on_outage: Callable[[BatchFailure | None], None] | None = None,
    ) -> None:
        self._outbox, self._token, self._url, self._kind = outbox, token, url, transport
        self._linger_s, self._max_attempts, self._backoff_s = linger_s, max_attempts, backoff_s
        self._on_failure, self._on_outage = on_failure, on_outage
        self.in_outage = False
        self.retried = 0
        self.batch_records, self._batch_bytes = _FIRST_BATCH_RECORDS, _FIRST_BATCH_BYTES
        self._transport: Transport | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._wake, self._urgent = asyncio.Event(), asyncio.Event()
        self._stopping = False
        self._in_flight = 0

    # -- called from the publisher's side ----------------------------------------------------

    def start(self, owner: object) -> threading.Thread:
        """Start the thread (once). It holds ``owner`` until it ends, so a publisher nobody
        holds any more is still alive, and flushed, at interpreter exit."""
        if self._thread is None:
            self._loop = loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._run, args=(owner, loop), name="logstream-publisher", daemon=True
            )
            self._thread.start()
        return self._thread

    def nudge(self, *, urgent: bool) -> None:
        """Wake the sender; ``urgent`` skips the linger (a full batch, a flush, a close)."""

        def wake() -> None:
            self._wake.set()
            if urgent:
                self._urgent.set()

        if self._loop is None:  # not started
            return
        with contextlib.suppress(RuntimeError):  # stopped
            self._loop.call_soon_threadsafe(wake)

    def stop(self, join_s: float) -> None:
        """Send what is queued and end the thread; if records are still unanswered (the
        caller's flush gave up), cancel instead: nobody is left to retry them for."""
        self._stopping = True
        if self._thread is None or self._loop is None:  # never started (both are set at once)
            return
        if self._outbox.pending:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(lambda: self._task and self._task.cancel())
        self.nudge(urgent=True)
        if not in_sender_thread():
            self._thread.join(join_s)

    # -- the sender thread -------------------------------------------------------------------

    def _run(self, owner: object, loop: asyncio.AbstractEventLoop) -> None:
        # owner is only held: see start(); loop is the sender's, self._loop
        _SENDER.active = True
        asyncio.set_event_loop(loop)
        try:
            self._task = loop.create_task(self._send_forever())
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
        finally:
            loop.close()

    async def _send_forever(self) -> None:
        try:
            while True:
                await self._wait_for_records()
                with contextlib.suppress(TransportFailed):  # its limits shape the batches
                    await self._open()
                while batch := self._outbox.take(self.batch_records, self._batch_bytes):
                    self._in_flight = len(batch)
                    failure = await self._deliver(batch)
                    self._in_flight = 0
                    self._resolve(len(batch), failure)
                if self._stopping:
                    return
        finally:
            await self._shut_down()

    async def _wait_for_records(self) -> None:
        """Until nudged; then linger, unless urgent, so a burst of lines goes out as one."""
        await self._wake.wait()
        if not self._urgent.is_set() and self._linger_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._linger_s):
                    await self._urgent.wait()
        self._wake.clear()
        self._urgent.clear()

    async def _shut_down(self) -> None:
        """Answer every record left (as abandoned) so no flush() waits for ever; close up."""
        given_up = self._outbox.abandon() + self._in_flight
        if given_up:
            self._resolve(
                given_up,
                BatchFailure(
                    message="the publisher was closed before ingest confirmed them",
                    status=None,
                    error="abandoned",
                    records=given_up,
                ),
            )
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.close()

    def _resolve(self, count: int, failure: BatchFailure | None) -> None:
        self._outbox.resolve(count, failure)
        if failure is not None and self._on_failure is not None:
            with contextlib.suppress(Exception):  # a callback's bug must not stop the sender
                self._on_failure(failure)

    async def _open(self) -> Transport:
        if self._transport is None:
            if not isinstance(self._kind, str):
                self._transport = self._kind
            elif self._kind == "nats":
                self._transport = await NatsTransport.connect(self._url, name="logstream-publisher")
            else:
                self._transport = HttpTransport(self._url)
            self.batch_records = self._transport.max_batch_records
            self._batch_bytes = self._transport.max_batch_bytes
        return self._transport

    async def _deliver(self, batch: list[bytes]) -> BatchFailure | None:
        body = b"[" + b",".join(batch) + b"]"
        for attempt in itertools.count(1):
            retry_after = None
            try:
                reply = await (await self._open()).publish(self._token, body)
            except TransportFailed as exc:
                problem = BatchFailure(
                    message=exc.message, status=None, error="no answer", records=len(batch)
                )
            except Exception as exc:  # a bug must not kill the sender and hang every flush()
                return BatchFailure(
                    message=repr(exc), status=None, error="internal", records=len(batch)
                )
            else:
                if reply.status == 202:
                    self._outage(None)
                    return None
                problem = BatchFailure.from_reply(reply, len(batch))
                if reply.status not in RETRYABLE:
                    return problem
                retry_after = reply.retry_after
            if reply_is_outage(problem):
                self._outage(problem)
            if attempt == self._max_attempts:
                return problem
            self.retried += 1
            await asyncio.sleep(retry_delay(attempt, self._backoff_s, retry_after))
        return None  # unreachable: the loop only ends by returning

    def _outage(self, problem: BatchFailure | None) -> None:
        """Tell ``on_outage`` when ingest stops answering, and when it answers again: once each."""
        if (problem is not None) == self.in_outage:
            return
        self.in_outage = problem is not None
        if self._on_outage is not None:
            with contextlib.suppress(Exception):  # a callback's bug must not stop the sender
                self._on_outage(problem)


def reply_is_outage(problem: BatchFailure) -> bool:
    """No answer, or ingest (or its broker) down; a 429 is ingest working as meant."""
    return problem.status is None or problem.status >= 500
