"""Drive traffic into ingest: bursts as fast as ingest takes them, or a steady paced stream.

``Simulation`` is the library entry point (the CLI is a thin layer over it)::

    transport = await open_transport("http", ingest_url=..., nats_url=...)
    tally = await Simulation(transport, Traffic(seed=7)).burst(300)

Records are stamped with an id (``<run id>-<counter>``, unique per run) and a timestamp of
now, grouped per service (each service has its own token), and sent in batches with a bounded
number of requests in flight. 429 and 503 are retried with the same ids after ``Retry-After``,
so a retried record is stored once. A run that cannot reach ingest at all gives up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from logstream.services.simulator.catalog import LogEvent
from logstream.services.simulator.scenarios import Traffic
from logstream.services.simulator.tally import Tally
from logstream.shared.channels import parse_grant
from logstream.shared.identities import DEV_SERVICE_TOKENS
from logstream.shared.ingest_client import Transport, TransportFailed
from logstream.shared.records import format_time

__all__ = ["Batch", "Batcher", "RetryPolicy", "Simulation", "TokenBook", "new_run_id"]

# Calm enough to read on the Logs page as it scrolls, busy enough to look alive.
DEFAULT_RATE = 5.0
# Progress goes to stderr this often: a heartbeat, not a per-record echo.
PROGRESS_INTERVAL_S = 10.0
# A paced run wakes at most this often; records due in between go out together.
MIN_TICK_S = 0.05
# After a stop, requests in flight get this long to be answered before they count as failed.
DRAIN_TIMEOUT_S = 5.0
_ENCODE = msgspec.json.Encoder()


def new_run_id() -> str:
    """Random per run, so two runs with one seed never share a record id."""
    return "sim-" + secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    # 5 attempts with Retry-After (ingest says 1-2 s) ride out a broker restart of ~10 s.
    max_attempts: int = 5
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        wanted = retry_after if retry_after is not None else self.first_delay_s * 2 ** (attempt - 1)
        return min(wanted, self.max_delay_s)


@dataclass(frozen=True, slots=True)
class TokenBook:
    """The service token for each service's records: the dev tokens, or one override for all."""

    by_service: dict[str, str] = field(default_factory=dict)
    override: str | None = None

    @classmethod
    def dev(cls, override: str | None = None) -> TokenBook:
        book = {}
        for secret, grants in DEV_SERVICE_TOKENS.items():
            for grant in map(parse_grant, grants):
                if len(grant.segments) == 1:
                    book[grant.segments[0]] = secret
        return cls(book, override)

    def token_for(self, service: str) -> str:
        if self.override is not None:
            return self.override
        try:
            return self.by_service[service]
        except KeyError:
            raise ValueError(f"no service token for {service!r}: give --token") from None


@dataclass(slots=True)
class Batch:
    service: str
    records: list[bytes]

    @property
    def body(self) -> bytes:
        return b"[" + b",".join(self.records) + b"]"


class Batcher:
    """Per-service buffers of encoded records, cut at a record count or a body size."""

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records, self.max_bytes = max_records, max_bytes
        self._open: dict[str, tuple[list[bytes], list[int]]] = {}

    def add(self, service: str, record: bytes) -> Batch | None:
        records, size = self._open.setdefault(service, ([], [2]))
        full = None
        if records and (
            len(records) >= self.max_records or size[0] + len(record) + 1 > self.max_bytes
        ):
            full = Batch(service, records)
            records, size = self._open[service] = ([], [2])
        records.append(record)
        size[0] += len(record) + 1
        return full

    def flush(self) -> list[Batch]:
        batches = [
            Batch(service, records) for service, (records, _) in self._open.items() if records
        ]
        self._open.clear()
        return batches


class Simulation:
    """One run: a transport, a traffic mix, tokens, and the tally of what happened."""

    def __init__(
        self,
        transport: Transport,
        traffic: Traffic,
        *,
        tokens: TokenBook | None = None,
        run_id: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        tally: Tally | None = None,
        stop: asyncio.Event | None = None,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
    ) -> None:
        self.transport, self.traffic = transport, traffic
        self.tokens = tokens or TokenBook.dev()
        self.run_id = run_id or new_run_id()
        self.retry, self.tally = retry, tally or Tally()
        self.stop = stop or asyncio.Event()
        self.progress_interval_s = progress_interval_s
        self._counter = 0
        self._answered = False
        self._slots = asyncio.Semaphore(transport.in_flight)
        self._tasks: set[asyncio.Task] = set()
        self._batcher = Batcher(transport.max_batch_records, transport.max_batch_bytes)

    async def burst(self, count: int) -> Tally:
        """Send ``count`` records as fast as ingest takes them."""
        async with self._reporting():
            for _ in range(count):
                if self.stop.is_set():
                    self.tally.interrupted = not self.tally.aborted
                    break
                full = self._add(next(self.traffic))
                if full is not None:
                    await self._submit(full)
            if not self.stop.is_set():
                await self._flush()
        return self.tally

    async def continuous(self, seconds: float, rate: float = DEFAULT_RATE) -> Tally:
        """``rate`` records/s for ``seconds`` (0: until ``stop``), on an absolute schedule."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        total = math.ceil(seconds * rate) if seconds > 0 else None
        loop = asyncio.get_running_loop()
        async with self._reporting():
            start, produced = loop.time(), 0
            while not self.stop.is_set():
                now = loop.time()
                due = math.floor((now - start) * rate) + 1
                due = due if total is None else min(due, total)
                for _ in range(due - produced):
                    full = self._add(next(self.traffic))
                    if full is not None:
                        await self._submit(full)
                produced = max(produced, due)
                await self._flush()
                if total is not None and produced >= total:
                    break
                wake = max(start + produced / rate - loop.time(), MIN_TICK_S)
                await _wait(self.stop, wake)
        return self.tally

    def _add(self, event: LogEvent) -> Batch | None:
        self._counter += 1
        record = event.to_record(f"{self.run_id}-{self._counter}", format_time(datetime.now(UTC)))
        return self._batcher.add(event.service, _ENCODE.encode(record))

    async def _flush(self) -> None:
        for batch in self._batcher.flush():
            await self._submit(batch)

    async def _submit(self, batch: Batch) -> None:
        await self._slots.acquire()
        self.tally.sent += len(batch.records)
        task = asyncio.create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: Batch) -> None:
        try:
            await self._deliver(batch)
        except asyncio.CancelledError:
            self.tally.fail(
                len(batch.records), "interrupted", "", "the run stopped before ingest answered"
            )
            raise
        finally:
            self._slots.release()

    async def _deliver(self, batch: Batch) -> None:
        count, body = len(batch.records), batch.body
        token = self.tokens.token_for(batch.service)
        for attempt in range(1, self.retry.max_attempts + 1):
            last = attempt == self.retry.max_attempts
            try:
                reply = await self.transport.publish(token, body)
            except TransportFailed as exc:
                if exc.unreachable and not self._answered:
                    self.tally.abort(exc.message)
                    self.stop.set()
                if last or self.tally.aborted:
                    self.tally.fail(count, "transport", "", exc.message)
                    return
                delay = self.retry.delay(attempt, None)
                self.tally.retry(
                    "transport", "", exc.message, delay, attempt, self.retry.max_attempts
                )
            else:
                self._answered = True
                if reply.status == 202:
                    accepted = reply.body.get("accepted", count)
                    accepted = accepted if isinstance(accepted, int) else count
                    self.tally.accept(min(accepted, count))
                    if accepted < count:  # the contract says all or nothing: say so if not
                        self.tally.fail(
                            count - accepted,
                            "202",
                            "partial",
                            f"ingest accepted {accepted} of {count} records",
                        )
                    return
                if reply.status not in (429, 503) or last:
                    self.tally.fail(
                        count,
                        str(reply.status),
                        reply.error,
                        reply.message,
                        reply.body.get("details"),
                    )
                    return
                delay = self.retry.delay(attempt, reply.retry_after)
                self.tally.retry(
                    str(reply.status),
                    reply.error,
                    reply.message,
                    delay,
                    attempt,
                    self.retry.max_attempts,
                )
            await asyncio.sleep(delay)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=DRAIN_TIMEOUT_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _reporting(self) -> AsyncIterator[None]:
        """Around a run: a sparse progress line, and a drain of requests in flight at the end."""
        progress = asyncio.create_task(self._report_progress())
        try:
            yield
        finally:
            try:
                await self._drain()
            finally:
                progress.cancel()

    async def _report_progress(self) -> None:
        last = -1
        while True:
            await asyncio.sleep(self.progress_interval_s)
            if self.tally.sent != last:
                last = self.tally.sent
                self.tally.report(self.tally.progress_line())


async def _wait(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass
