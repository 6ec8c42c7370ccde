"""Case 4: ingest throughput, Logstream only (Nchan has no equivalent): records/s stored.

Each way keeps a few requests in flight for a fixed time and counts records confirmed stored:
HTTP 202 (JetStream acknowledged every record), or ingest's NATS reply with status 202.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bench.credentials import NATS_PRODUCER, PRODUCER_INBOX, SERVICE_TOKEN
from bench.http_wire import HttpWire, post_request
from bench.machine import CpuClock, load_average
from bench.messages import bench_channel, published_records
from bench.nats_wire import NatsWire
from logstream.shared.nats_names import INGEST_SUBJECT

__all__ = ["IngestResult", "ingest_case"]

_STATUS = re.compile(rb'"status":\s*(\d+)')
_HEADERS = {"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"}


@dataclass
class IngestResult:
    way: str
    records: int
    seconds: float
    failures: dict  # records not confirmed, by the answer they got
    ingest_cpu: float
    nats_cpu: float
    client_cpu: float
    load: str

    @property
    def rate(self) -> float:
        return self.records / self.seconds


class _Records:
    """Fresh record bodies (unique ids, so none is taken for a duplicate)."""

    def __init__(self) -> None:
        self.channel = bench_channel("ingest-" + uuid.uuid4().hex[:8])
        self.tag, self.next = uuid.uuid4().hex[:8], 0

    def body(self, count: int) -> bytes:
        self.next += count
        return published_records(self.channel, self.next - count, count, self.tag)


async def _http_worker(
    port: int, batch: int, records: _Records, until: float
) -> tuple[int, Counter[str]]:
    wire = await HttpWire.connect("127.0.0.1", port)
    stored, failed = 0, Counter[str]()
    try:
        while time.monotonic() < until:
            body = records.body(batch)
            [(status, _)] = await wire.pipeline([post_request("/api/logs/publish", body, _HEADERS)])
            if status == 202:
                stored += batch
            else:
                failed[f"HTTP {status}"] += batch
    finally:
        await wire.close()
    return stored, failed


async def _nats_worker(
    nats_url: str, batch: int, records: _Records, until: float
) -> tuple[int, Counter[str]]:
    """``batch`` 1: 64 single-record requests per round trip; else one batch request."""
    wire = await NatsWire.connect(nats_url, NATS_PRODUCER, PRODUCER_INBOX)
    bodies_per_trip, size = (64, 1) if batch == 1 else (1, batch)
    stored, failed = 0, Counter[str]()
    try:
        while time.monotonic() < until:
            replies = await wire.request_many(
                INGEST_SUBJECT,
                [records.body(size) for _ in range(bodies_per_trip)],
                headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
            )
            for reply in replies:
                if reply and b'"status":202' in reply:
                    stored += size
                else:
                    failed[_status_of(reply)] += size
    finally:
        await wire.close()
    return stored, failed


def _status_of(reply: bytes | None) -> str:
    if reply is None:
        return "no reply"
    found = _STATUS.search(reply)
    return f"status {found.group(1).decode()}" if found else "no status"


async def _measure(
    way: str,
    workers: Sequence[Callable[[float], Awaitable[tuple[int, Counter[str]]]]],
    seconds: float,
    stack,
) -> IngestResult:
    load = load_average()
    ingest = CpuClock([stack.ingest.process.pid])
    nats = CpuClock([stack.broker.process.pid])
    me = os.times()
    started = time.monotonic()
    results = await asyncio.gather(*(worker(started + seconds) for worker in workers))
    elapsed = time.monotonic() - started
    spent = os.times()
    client = ((spent.user + spent.system) - (me.user + me.system)) / elapsed
    failures = sum((r[1] for r in results), Counter())
    result = IngestResult(
        way,
        sum(r[0] for r in results),
        elapsed,
        dict(failures),
        ingest.total(),
        nats.total(),
        client,
        load,
    )
    print(
        f"  {way:<44} {result.rate:>9,.0f} records/s (failed {result.failures}, ingest CPU "
        f"{result.ingest_cpu:.2f}, nats-server {result.nats_cpu:.2f}, client "
        f"{client:.2f})",
        flush=True,
    )
    return result


async def ingest_case(stack, seconds: float, *, synced_stack=None) -> list[IngestResult]:
    records = _Records()
    port, url = stack.ingest.port, stack.broker.url
    ways = [
        (
            "HTTP, batches of 1,000, 4 in flight",
            [lambda u: _http_worker(port, 1000, records, u) for _ in range(4)],
            stack,
        ),
        (
            "HTTP, single-record POSTs, 32 in flight",
            [lambda u: _http_worker(port, 1, records, u) for _ in range(32)],
            stack,
        ),
        (
            "NATS ingest.logs, batches of 1,000, 4 in flight",
            [lambda u: _nats_worker(url, 1000, records, u) for _ in range(4)],
            stack,
        ),
        (
            "NATS ingest.logs, single records, 64 in flight",
            [lambda u: _nats_worker(url, 1, records, u) for _ in range(1)],
            stack,
        ),
    ]
    if synced_stack is not None:
        synced_port = synced_stack.ingest.port
        for in_flight in (4, 1):  # 4: as above; 1: what fsync per write allows in 2 s
            ways.append(
                (
                    f"HTTP, batches of 1,000, {in_flight} in flight, broker with "
                    "sync_interval: always",
                    [
                        lambda u: _http_worker(synced_port, 1000, records, u)
                        for _ in range(in_flight)
                    ],
                    synced_stack,
                )
            )
    return [await _measure(way, workers, seconds, where) for way, workers, where in ways]
