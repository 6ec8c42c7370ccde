"""``LogPublisher``: publish log records from Python (docs/clients.md).

::

    with LogPublisher(token="l5-etl-token") as logs:
        logs.publish("logs:etl:workspace123:workflow456", "extract done", rows=1200)
    # leaving the block flushed: every record is stored, or PublishFailed said why not

- ``publish()`` checks the record where it is called, with the rules ingest applies
  (``logstream.shared.records``), and raises ``InvalidRecord`` (a ``ValueError``) for a bad channel, level,
  timestamp or size. Then it queues the record and returns its ``id``; it never waits on the
  network.
- One background thread runs an asyncio loop that sends the queue in batches (up to 1,000
  records over HTTP, 250 over NATS, under 768 KiB), one request at a time, so one publisher's
  records are stored in the order they were published (``logstream.sender``).
- Every record carries an ``id`` (a uuid4 hex unless given). 429, 5xx and lost connections
  are retried with the same ids, after ``Retry-After`` when given, up to ``max_attempts``:
  ingest stores a retried record once. ``max_attempts=None`` retries until stored or closed;
  ``on_outage`` hears once when ingest stops answering (a ``PublishFailed``) and once (None)
  when it answers again.
- From asyncio: ``publish()`` never waits, so call it as it is; ``await aflush()`` /
  ``aclose()`` (or ``async with``) wait for the answers on a worker thread, not the loop.
- A batch refused for good (400, 401, 403, 413, or out of attempts) is dropped and remembered:
  the next ``flush()`` or ``close()`` raises ``PublishFailed`` with the status, the server's
  code, message and details, and how many records were lost; ``on_error`` hears of it at once.
- The queue holds at most ``max_queue`` records. What happens when it is full is the
  ``when_full`` policy: ``"drop_oldest"`` (the default: ``publish()`` never raises or waits
  for room; the oldest queued record is discarded and counted in ``dropped``), ``"block"``
  (wait up to ``queue_timeout`` seconds for room, ``None``: as long as it takes, then raise
  ``PublishQueueFull``), or ``"raise"`` (``PublishQueueFull`` at once; the record is not
  queued).

Errors, all ``LogstreamError`` subclasses::

    InvalidRecord      (also ValueError)    publish(): the record breaks the contract
    PublishQueueFull                        publish(): no room ("block" or "raise" policy)
    PublisherClosed    (also RuntimeError)  publish() after close()
    PublishFailed                           flush()/close(): records ingest did not store
    FlushTimeout       (also TimeoutError)  flush()/close(): not all answered in time
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from logstream.sender import BatchFailure, Outbox, Sender, in_sender_thread
from logstream.shared.channels import DEFAULT_SERVICES
from logstream.shared.errors import InvalidRequest, LogstreamError
from logstream.shared.identities import DEV_NATS_PRODUCER
from logstream.shared.ingest_client import Transport
from logstream.shared.records import decode_batch, format_time, validate_records

__all__ = [
    "DEFAULT_HTTP_URL",
    "DEFAULT_NATS_URL",
    "FlushTimeout",
    "InvalidRecord",
    "LogPublisher",
    "PublishFailed",
    "PublishQueueFull",
    "PublisherClosed",
    "in_sender_thread",
]

DEFAULT_HTTP_URL = "http://127.0.0.1:3001"
DEFAULT_NATS_URL = "nats://{}:{}@127.0.0.1:4222".format(*DEV_NATS_PRODUCER)
# 100k records of a few hundred bytes is tens of MB: room for a minute-long ingest outage at a
# busy service's rate, without letting a dead ingest eat the application's memory.
DEFAULT_MAX_QUEUE = 100_000
# What publish() does when the queue is full (see the module doc).
WHEN_FULL = ("drop_oldest", "block", "raise")
# How long a lone record waits for company before it is sent: short enough to look live on
# the Logs page, long enough that a burst of lines goes out as one request.
DEFAULT_LINGER_S = 0.05
# 6 attempts with Retry-After (ingest says 1-2 s) or doubling from 0.5 s ride out a ~15 s
# ingest or broker restart.
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_BACKOFF_S = 0.5
# At interpreter exit, queued records get this long to be stored before they are given up.
EXIT_FLUSH_S = 10.0
# How long close() waits for the told-to-stop sender thread: ample for closing its transport;
# the thread is a daemon, so one that hangs longer still does not keep the program alive.
_STOP_JOIN_S = 5.0
_VALIDATION_PUBLISHER = "local-check"


class InvalidRecord(InvalidRequest, ValueError):
    """The record breaks the contract; raised by ``publish()`` before anything is queued."""


class PublishQueueFull(LogstreamError):
    code = "queue_full"


class PublisherClosed(LogstreamError, RuntimeError):
    code = "closed"


class FlushTimeout(LogstreamError, TimeoutError):
    code = "flush_timeout"


class PublishFailed(LogstreamError):
    """Records ingest did not store: its answer (``status`` None when it never answered)."""

    code = "publish_failed"

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        error: str,
        records: int,
        details: list[Any] | None = None,
        more: int = 0,
    ) -> None:
        self.status, self.error, self.records, self.more = status, error, records, more
        self.server_message = message
        head = f"{status} {error}" if status is not None else error
        text = f"{records} record(s) not stored: {head}: {message}"
        if more:
            text += f" (and {more} more failed batch(es))"
        super().__init__(text, details=details)

    @classmethod
    def from_batches(cls, failures: Sequence[BatchFailure]) -> PublishFailed:
        """One error for every batch lost: the first one's answer, all of their records."""
        first = failures[0]
        return cls(
            first.message,
            status=first.status,
            error=first.error,
            records=sum(failure.records for failure in failures),
            details=first.details,
            more=len(failures) - 1,
        )


def _jsonable(value: Any) -> str:
    """What the encoder sends for a value JSON has no form for."""
    return repr(value)


_ENCODER = msgspec.json.Encoder(enc_hook=_jsonable)


def _timestamp(value: datetime | str | int | float | None) -> str | int:
    if value is None:
        return format_time(datetime.now(UTC))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidRecord("timestamp: a datetime needs a timezone (e.g. timezone.utc)")
        return format_time(value)
    if isinstance(value, float):  # seconds, as time.time() gives them
        return int(value * 1000)
    return value


def _reporting_to(
    on_error: Callable[[PublishFailed], None] | None,
) -> Callable[[BatchFailure], None] | None:
    """The sender's failure callback. It closes over ``on_error`` alone, not the publisher, so
    the sender holds no reference back to the publisher other than its running thread's."""
    if on_error is None:
        return None
    return lambda failure: on_error(PublishFailed.from_batches([failure]))


def _outage_to(
    on_outage: Callable[[PublishFailed | None], None] | None,
) -> Callable[[BatchFailure | None], None] | None:
    if on_outage is None:
        return None
    return lambda failure: on_outage(
        None if failure is None else PublishFailed.from_batches([failure])
    )


class LogPublisher:
    """Queues records and sends them to ingest from a background thread; see the module doc."""

    def __init__(
        self,
        *,
        token: str,
        url: str | None = None,
        transport: str | Transport = "http",
        max_queue: int = DEFAULT_MAX_QUEUE,
        when_full: str = "drop_oldest",
        queue_timeout: float | None = None,
        linger_s: float = DEFAULT_LINGER_S,
        max_attempts: int | None = DEFAULT_MAX_ATTEMPTS,
        backoff_s: float = DEFAULT_BACKOFF_S,
        services: Iterable[str] = DEFAULT_SERVICES,
        on_error: Callable[[PublishFailed], None] | None = None,
        on_outage: Callable[[PublishFailed | None], None] | None = None,
    ) -> None:
        if not token:
            raise ValueError("token is required (a service token, e.g. l5-etl-token in dev)")
        if isinstance(transport, str) and transport not in ("http", "nats"):
            raise ValueError(f"transport must be 'http' or 'nats' (given {transport!r})")
        self.url = url or (DEFAULT_NATS_URL if transport == "nats" else DEFAULT_HTTP_URL)
        if when_full not in WHEN_FULL:
            raise ValueError(
                f"when_full must be one of {', '.join(WHEN_FULL)} (given {when_full!r})"
            )
        self._max_queue, self._queue_timeout = max_queue, queue_timeout
        self._when_full = when_full
        self.dropped = 0  # records discarded by the "drop_oldest" policy
        self._services = frozenset(services)
        self._outbox = Outbox()
        self._sender = Sender(
            self._outbox,
            token=token,
            url=self.url,
            transport=transport,
            linger_s=linger_s,
            max_attempts=max_attempts,
            backoff_s=backoff_s,
            on_failure=_reporting_to(on_error),
            on_outage=_outage_to(on_outage),
        )
        self._closed = False
        self._thread: threading.Thread | None = None  # the sender's, once a record starts it

    def publish(
        self,
        channel: str,
        message: str,
        level: str = "info",
        *,
        source: str | None = None,
        timestamp: datetime | str | int | float | None = None,
        id: str | None = None,
        fields: Mapping[str, Any] | None = None,
        **more_fields: Any,
    ) -> str:
        """Check and queue one record; returns its id. ``more_fields`` join ``fields`` (and win
        on a clash); a field named like a keyword here goes in ``fields=``."""
        record_id = id or uuid.uuid4().hex
        merged = {**(fields or {}), **more_fields}
        raw = {
            "channel": channel,
            "message": message,
            "level": level,
            "timestamp": _timestamp(timestamp),
            "source": source,
            "fields": merged or None,
            "id": record_id,
        }
        encoded = _ENCODER.encode({k: v for k, v in raw.items() if v is not None})
        self._check(encoded, channel)
        self._enqueue(encoded)
        return record_id

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record queued so far is stored; raise what went wrong meanwhile."""
        if in_sender_thread():
            raise RuntimeError("flush() from the publisher's own thread would wait for ever")
        outbox = self._outbox
        with outbox.changed:
            target = outbox.queued
            if outbox.resolved < target:
                self._sender.nudge(urgent=True)
                done = outbox.changed.wait_for(lambda: outbox.resolved >= target, timeout)
                if not done:
                    waiting = target - outbox.resolved
                    raise FlushTimeout(f"{waiting} record(s) still unconfirmed after {timeout:g}s")
            failures, outbox.failures = outbox.failures, []
        if failures:
            raise PublishFailed.from_batches(failures)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the background thread. Idempotent; later publishes raise."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush(timeout)
        finally:
            self._stop()

    async def aflush(self, timeout: float | None = None) -> None:
        """``flush()`` for asyncio code: waits on a worker thread, the loop keeps running."""
        await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.close, timeout)

    async def __aenter__(self) -> LogPublisher:
        return self

    async def __aexit__(self, kind, value, traceback) -> None:
        await asyncio.to_thread(self.__exit__, kind, value, traceback)

    @property
    def pending(self) -> int:
        """Records queued or in flight, not yet answered."""
        return self._outbox.pending

    @property
    def lost(self) -> int:
        """Records ingest did not store (refused, out of attempts, or abandoned by close)."""
        return self._outbox.lost

    @property
    def retried(self) -> int:
        """Requests sent again after a 429, a 5xx or no answer."""
        return self._sender.retried

    def __enter__(self) -> LogPublisher:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:  # do not hide the body's exception behind ours; on_error has seen ours
            with contextlib.suppress(LogstreamError):
                self.close()

    def _check(self, encoded: bytes, channel: object) -> None:
        try:
            validate_records(
                decode_batch(encoded, "application/json"),
                publisher=_VALIDATION_PUBLISHER,
                services=self._services,
            )
        except InvalidRequest as exc:
            first = exc.details[0] if exc.details else {}
            field = first.get("field")
            problem = first.get("message") or exc.message
            where = (
                ""
                if field == "channel"
                else f" to {channel!r}" + (f": field {field!r}" if field else "")
            )
            raise InvalidRecord(f"cannot publish{where}: {problem}", details=exc.details) from None

    def _enqueue(self, encoded: bytes) -> None:
        outbox = self._outbox
        with outbox.changed:
            if self._closed:
                raise PublisherClosed("this LogPublisher is closed")
            if len(outbox.records) >= self._max_queue:
                self._make_room(outbox)
            outbox.records.append(encoded)
            outbox.queued += 1
            size = len(outbox.records)
            self._start()
        if size == 1 or size == self._sender.batch_records:
            self._sender.nudge(urgent=size > 1)

    def _make_room(self, outbox: Outbox) -> None:
        """The ``when_full`` policy, with ``outbox.changed`` held and the queue full."""
        if self._when_full == "drop_oldest":
            while len(outbox.records) >= self._max_queue:
                outbox.records.popleft()
                outbox.resolved += 1  # answered, as far as flush() is concerned: given up
                self.dropped += 1
            outbox.changed.notify_all()
            return
        timeout = self._queue_timeout if self._when_full == "block" else 0.0
        room = outbox.changed.wait_for(
            lambda: len(outbox.records) < self._max_queue or self._closed, timeout
        )
        if self._closed:
            raise PublisherClosed("this LogPublisher is closed")
        if not room:
            raise PublishQueueFull(
                f"{len(outbox.records)} records are waiting to be "
                f"sent to {self.url}; this record was not queued"
            )

    def _start(self) -> None:
        if self._thread is None:
            self._thread = self._sender.start(owner=self)
            _LIVE.add(self)

    def _stop(self) -> None:
        with self._outbox.changed:  # publish() calls waiting for room see _closed and give up
            self._outbox.changed.notify_all()
        self._sender.stop(_STOP_JOIN_S)
        _LIVE.discard(self)


# Publishers with a running sender, for the flush at exit; weak, so this is not what keeps
# them alive (their sender thread does, until close()).
_LIVE: weakref.WeakSet[LogPublisher] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """Records published just before the program ends are still sent (within EXIT_FLUSH_S)."""
    deadline = time.monotonic() + EXIT_FLUSH_S
    for publisher in list(_LIVE):
        try:
            publisher.close(timeout=max(0.1, deadline - time.monotonic()))
        except LogstreamError as exc:
            print(f"logstream: at exit: {exc.message}", file=sys.stderr)
