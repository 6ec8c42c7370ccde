"""``LogPublisher``: publish log records from Python (CONTRACT section 11).

::

    with LogPublisher(token="l5-etl-token") as logs:
        logs.publish("logs:etl:workspace123:workflow456", "extract done", rows=1200)
    # leaving the block flushed: every record is stored, or PublishFailed said why not

- ``publish()`` checks the record where it is called, with the rules ingest applies
  (``shared.records``), and raises ``InvalidRecord`` (a ``ValueError``) for a bad channel, level,
  timestamp or size. Then it queues the record and returns its ``id``; it never waits on the
  network.
- One background thread runs an asyncio loop that sends the queue in batches (up to 1,000
  records over HTTP, 250 over NATS, under 768 KiB), one request at a time, so one publisher's
  records are stored in the order they were published.
- Every record carries an ``id`` (a uuid4 hex unless given). 429, 5xx and lost connections
  are retried with the same ids, after ``Retry-After`` when given, up to ``max_attempts``:
  ingest stores a retried record once.
- A batch refused for good (400, 401, 403, 413, or out of attempts) is dropped and remembered:
  the next ``flush()`` or ``close()`` raises ``PublishFailed`` with the status, the server's
  code, message and details, and how many records were lost; ``on_error`` hears of it at once.
- The queue holds at most ``max_queue`` records. When it is full, ``publish()`` waits up to
  ``queue_timeout`` seconds for room (0, the default: not at all; ``None``: as long as it
  takes) and then raises ``PublishQueueFull``; the record is not queued.

Errors, all ``LogstreamError`` subclasses::

    InvalidRecord      (also ValueError)    publish(): the record breaks the contract
    PublishQueueFull                        publish(): no room in the queue
    PublisherClosed    (also RuntimeError)  publish() after close()
    PublishFailed                           flush()/close(): records ingest did not store
    FlushTimeout       (also TimeoutError)  flush()/close(): not all answered in time
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import sys
import threading
import time
import uuid
import weakref
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

import msgspec

from shared.ingest_client import (
    HttpTransport,
    NatsTransport,
    Reply,
    Transport,
    TransportFailed,
)
from shared.channels import DEFAULT_SERVICES
from shared.errors import InvalidRequest, LogstreamError
from shared.identities import DEV_NATS_PRODUCER
from shared.records import decode_batch, format_time, validate_records

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
# How long a lone record waits for company before it is sent: short enough to look live on
# the Logs page, long enough that a burst of lines goes out as one request.
DEFAULT_LINGER_S = 0.05
# 6 attempts with Retry-After (ingest says 1-2 s) or doubling from 0.5 s ride out a ~15 s
# ingest or broker restart.
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
# At interpreter exit, queued records get this long to be stored before they are given up.
EXIT_FLUSH_S = 10.0
# Statuses worth another try with the same ids: over budget, or not confirmed.
RETRYABLE = frozenset({429, 500, 502, 503, 504})
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

    def __init__(self, message: str, *, status: int | None, error: str, records: int,
                 details: list[Any] | None = None, more: int = 0) -> None:
        self.status, self.error, self.records, self.more = status, error, records, more
        self.server_message = message
        head = f"{status} {error}" if status is not None else error
        text = f"{records} record(s) not stored: {head}: {message}"
        if more:
            text += f" (and {more} more failed batch(es))"
        super().__init__(text, details=details)

    @classmethod
    def from_reply(cls, reply: Reply, records: int) -> "PublishFailed":
        details = reply.body.get("details")
        return cls(reply.message or "(no message)", status=reply.status,
                   error=reply.error or "error", records=records,
                   details=details if isinstance(details, list) else None)


def _jsonable(value: Any) -> str:
    """What the encoder sends for a value JSON has no form for."""
    return repr(value)


_ENCODER = msgspec.json.Encoder(enc_hook=_jsonable)


def _timestamp(value: datetime | str | int | float | None) -> str | int:
    if value is None:
        return format_time(datetime.now(timezone.utc))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidRecord("timestamp: a datetime needs a timezone (e.g. timezone.utc)")
        return format_time(value)
    if isinstance(value, float):  # seconds, as time.time() gives them
        return int(value * 1000)
    return value


class LogPublisher:
    """Queues records and sends them to ingest from a background thread; see the module doc."""

    def __init__(self, *, token: str, url: str | None = None,
                 transport: str | Transport = "http", max_queue: int = DEFAULT_MAX_QUEUE,
                 queue_timeout: float | None = 0.0, linger_s: float = DEFAULT_LINGER_S,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, backoff_s: float = DEFAULT_BACKOFF_S,
                 services: Iterable[str] = DEFAULT_SERVICES,
                 on_error: Callable[[PublishFailed], None] | None = None) -> None:
        if not token:
            raise ValueError("token is required (a service token, e.g. l5-etl-token in dev)")
        if isinstance(transport, str) and transport not in ("http", "nats"):
            raise ValueError(f"transport must be 'http' or 'nats' (given {transport!r})")
        self.url = url or (DEFAULT_NATS_URL if transport == "nats" else DEFAULT_HTTP_URL)
        self._token, self._kind = token, transport
        self._max_queue, self._queue_timeout = max_queue, queue_timeout
        self._linger_s, self._max_attempts, self._backoff_s = linger_s, max_attempts, backoff_s
        self._services, self._on_error = frozenset(services), on_error
        self._queue: collections.deque[bytes] = collections.deque()
        self._changed = threading.Condition()
        self._queued = self._resolved = self.lost = self.retried = 0
        self._failures: list[PublishFailed] = []
        self._closed = self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._wake, self._urgent = asyncio.Event(), asyncio.Event()
        # Until the transport is open: the HTTP limits, which the NATS ones are not above.
        self._batch_records, self._batch_bytes = 1000, 768 * 1024
        self._in_flight = 0

    # -- the caller's side -------------------------------------------------------------------

    def publish(self, channel: str, message: str, level: str = "info", *,
                source: str | None = None, timestamp: datetime | str | int | float | None = None,
                id: str | None = None, fields: Mapping[str, Any] | None = None,
                **more_fields: Any) -> str:
        """Check and queue one record; returns its id. ``more_fields`` join ``fields`` (and win
        on a clash); a field named like a keyword here goes in ``fields=``."""
        record_id = id or uuid.uuid4().hex
        merged = {**(fields or {}), **more_fields}
        raw = {"channel": channel, "message": message, "level": level,
               "timestamp": _timestamp(timestamp), "source": source,
               "fields": merged or None, "id": record_id}
        encoded = _ENCODER.encode({k: v for k, v in raw.items() if v is not None})
        self._check(encoded, channel)
        self._enqueue(encoded)
        return record_id

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record queued so far is stored; raise what went wrong meanwhile."""
        if in_sender_thread():
            raise RuntimeError("flush() from the publisher's own thread would wait for ever")
        with self._changed:
            target = self._queued
            if self._resolved < target:
                self._nudge(urgent=True)
                done = self._changed.wait_for(lambda: self._resolved >= target, timeout)
                if not done:
                    waiting = target - self._resolved
                    raise FlushTimeout(f"{waiting} record(s) still unconfirmed after {timeout:g}s")
            failures, self._failures = self._failures, []
        if failures:
            first = failures[0]
            raise PublishFailed(first.server_message, status=first.status, error=first.error,
                                records=sum(f.records for f in failures),
                                details=first.details, more=len(failures) - 1)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the background thread. Idempotent; later publishes raise."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush(timeout)
        finally:
            self._stop()

    @property
    def pending(self) -> int:
        """Records queued or in flight, not yet answered."""
        return self._queued - self._resolved

    def __enter__(self) -> "LogPublisher":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:  # do not hide the body's exception behind ours; on_error has seen ours
            with contextlib.suppress(LogstreamError):
                self.close()

    def _check(self, encoded: bytes, channel: object) -> None:
        try:
            validate_records(decode_batch(encoded, "application/json"),
                             publisher=_VALIDATION_PUBLISHER, services=self._services)
        except InvalidRequest as exc:
            first = exc.details[0] if exc.details else {}
            field = first.get("field")
            problem = first.get("message") or exc.message
            where = "" if field == "channel" else f" to {channel!r}" + (
                f": field {field!r}" if field else "")
            raise InvalidRecord(f"cannot publish{where}: {problem}",
                                details=exc.details) from None

    def _enqueue(self, encoded: bytes) -> None:
        with self._changed:
            if self._closed:
                raise PublisherClosed("this LogPublisher is closed")
            if len(self._queue) >= self._max_queue:
                room = self._changed.wait_for(lambda: len(self._queue) < self._max_queue
                                              or self._closed, self._queue_timeout)
                if not room or self._closed:
                    raise PublishQueueFull(f"{len(self._queue)} records are waiting to be sent "
                                           f"to {self.url}; this record was not queued")
            self._queue.append(encoded)
            self._queued += 1
            size = len(self._queue)
            self._start()
        if size == 1 or size == self._batch_records:
            self._nudge(urgent=size > 1)

    def _start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="logstream-publisher",
                                        daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def _nudge(self, *, urgent: bool) -> None:
        def wake() -> None:
            self._wake.set()
            if urgent:
                self._urgent.set()

        with contextlib.suppress(RuntimeError, AttributeError):  # not started, or stopped
            self._loop.call_soon_threadsafe(wake)

    def _stop(self, join_s: float = 5.0) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is None:
            return
        if self.pending:  # flush gave up: do not keep retrying for a publisher nobody uses
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(lambda: self._task and self._task.cancel())
        self._nudge(urgent=True)
        if not in_sender_thread():
            self._thread.join(join_s)
        _LIVE.discard(self)

    # -- the sender thread -------------------------------------------------------------------

    def _run(self) -> None:
        _SENDER.active = True
        asyncio.set_event_loop(self._loop)
        try:
            self._task = self._loop.create_task(self._send_forever())
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(self._task)
        finally:
            self._loop.close()

    async def _send_forever(self) -> None:
        transport: list[Transport] = []
        try:
            while True:
                await self._wake.wait()
                if not self._urgent.is_set() and self._linger_s > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._linger_s):
                            await self._urgent.wait()
                self._wake.clear()
                self._urgent.clear()
                with contextlib.suppress(TransportFailed):  # its limits shape the batches
                    await self._open(transport)
                while batch := self._take():
                    self._in_flight = len(batch)
                    failure = await self._deliver(batch, transport)
                    self._in_flight = 0
                    self._resolve(len(batch), failure)
                if self._stopping:
                    return
        finally:
            given_up = self._abandon() + self._in_flight
            if given_up:
                self._resolve(given_up, PublishFailed(
                    "the publisher was closed before ingest confirmed them", status=None,
                    error="abandoned", records=given_up))
            for opened in transport:
                with contextlib.suppress(Exception):
                    await opened.close()

    def _take(self) -> list[bytes]:
        with self._changed:
            batch, size = [], 2
            while self._queue and len(batch) < self._batch_records:
                if batch and size + len(self._queue[0]) + 1 > self._batch_bytes:
                    break
                size += len(self._queue[0]) + 1
                batch.append(self._queue.popleft())
            self._changed.notify_all()
            return batch

    def _abandon(self) -> int:
        """Records still queued when the sender stops (cancelled by a timed-out close)."""
        with self._changed:
            count = len(self._queue)
            self._queue.clear()
            return count

    def _resolve(self, count: int, failure: PublishFailed | None) -> None:
        with self._changed:
            self._resolved += count
            if failure is not None:
                self.lost += failure.records
                self._failures.append(failure)
            self._changed.notify_all()
        if failure is not None and self._on_error is not None:
            with contextlib.suppress(Exception):  # a callback's bug must not stop the sender
                self._on_error(failure)

    async def _open(self, opened: list[Transport]) -> Transport:
        if not opened:
            if not isinstance(self._kind, str):
                opened.append(self._kind)
            elif self._kind == "nats":
                opened.append(await NatsTransport.connect(self.url, name="logstream-publisher"))
            else:
                opened.append(HttpTransport(self.url))
            self._batch_records = opened[0].max_batch_records
            self._batch_bytes = opened[0].max_batch_bytes
        return opened[0]

    async def _deliver(self, batch: list[bytes], opened: list[Transport]) -> PublishFailed | None:
        body = b"[" + b",".join(batch) + b"]"
        for attempt in range(1, self._max_attempts + 1):
            retry_after = None
            try:
                reply = await (await self._open(opened)).publish(self._token, body)
            except TransportFailed as exc:
                problem = PublishFailed(exc.message, status=None, error="no answer",
                                        records=len(batch))
            except Exception as exc:  # a bug must not kill the sender and hang every flush()
                return PublishFailed(repr(exc), status=None, error="internal",
                                     records=len(batch))
            else:
                if reply.status == 202:
                    return None
                problem = PublishFailed.from_reply(reply, len(batch))
                if reply.status not in RETRYABLE:
                    return problem
                retry_after = reply.retry_after
            if attempt == self._max_attempts:
                return problem
            self.retried += 1
            await asyncio.sleep(min(retry_after if retry_after is not None
                                    else self._backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
        return None  # unreachable: the last attempt returned


_LIVE: "weakref.WeakSet[LogPublisher]" = weakref.WeakSet()
_SENDER = threading.local()


def in_sender_thread() -> bool:
    """True on any publisher's background thread (its HTTP and NATS clients log there)."""
    return getattr(_SENDER, "active", False)


@atexit.register
def _flush_at_exit() -> None:
    """Records published just before the program ends are still sent (within EXIT_FLUSH_S)."""
    deadline = time.monotonic() + EXIT_FLUSH_S
    for publisher in list(_LIVE):
        try:
            publisher.close(timeout=max(0.1, deadline - time.monotonic()))
        except LogstreamError as exc:
            print(f"logstream: at exit: {exc.message}", file=sys.stderr)
