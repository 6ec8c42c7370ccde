"""Case 4: ingest throughput, Logstream only (Nchan has no equivalent): records/s stored.

Each way keeps a few requests in flight for a fixed time and counts records confirmed stored:
HTTP 202 (JetStream acknowledged every record), or ingest's NATS reply with status 202.

Compressed and OTLP bodies are built before the clock starts (a shipper compresses on its own
machine), and so are the plain bodies they are compared with, side by side in the same run:
"JSON, pre-built" against "JSON gzip, pre-built" is what compression costs ingest.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from bench.credentials import NATS_PRODUCER, PRODUCER_INBOX, SERVICE_TOKEN
from bench.http_wire import HttpWire, post_request
from bench.machine import CpuClock, load_average
from bench.messages import bench_channel, published_records
from bench.nats_wire import NatsWire
from logstream.shared.nats_names import INGEST_SUBJECT

__all__ = ["IngestResult", "ingest_case"]

_STATUS = re.compile(rb'"status":\s*(\d+)')
_HEADERS = {"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"}
_GZIP_HEADERS = {**_HEADERS, "Content-Encoding": "gzip"}
_OTLP_HEADERS = {
    "Authorization": f"Bearer {SERVICE_TOKEN}",
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "gzip",
}
# What shippers use by default (Vector, Fluent Bit and the OTLP exporters: zlib's level 6).
GZIP_LEVEL = 6
# The OpenTelemetry SDK's BatchLogRecordProcessor exports at most 512 records at a time.
OTLP_BATCH = 512
# Pre-built bodies per way: more than the busiest way sends in the bench's time (runs out: the
# way ends early and its rate is still records / seconds it ran).
PREBUILT_RECORDS = 1_000_000


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


def _gzip_json(records: _Records, batch: int) -> bytes:
    return gzip.compress(records.body(batch), GZIP_LEVEL)


def _otlp_export(records: _Records, batch: int) -> bytes:
    """An OTLP ExportLogsServiceRequest of ``batch`` log records as the SDK's exporter sends
    one (a resource with service.name and the channel, severity, time, a body, two attributes),
    gzip-compressed."""
    first = records.next
    records.next += batch
    now = time.time_ns()
    logs = [
        LogRecord(
            time_unix_nano=now + n,
            severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
            severity_text="INFO",
            body=AnyValue(string_value=f"{records.tag} record {n} of the batch: rows copied"),
            attributes=[
                KeyValue(key="code.function", value=AnyValue(string_value="copy_rows")),
                KeyValue(key="rows", value=AnyValue(int_value=n)),
            ],
        )
        for n in range(first, first + batch)
    ]
    resource = Resource(
        attributes=[
            KeyValue(key="service.name", value=AnyValue(string_value="bench-etl")),
            KeyValue(key="logstream.channel", value=AnyValue(string_value=records.channel)),
        ]
    )
    export = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=logs)])]
    )
    return gzip.compress(export.SerializeToString(), GZIP_LEVEL)


def _prebuilt(make: Callable[[_Records, int], bytes], batch: int, count: int) -> list[bytes]:
    records = _Records()
    return [make(records, batch) for _ in range(count)]


async def _prebuilt_worker(
    port: int, path: str, headers: dict[str, str], batch: int, bodies: list[bytes], until: float
) -> tuple[int, Counter[str]]:
    """POSTs ``bodies`` (built before the clock started) until the time is up or they run out."""
    wire = await HttpWire.connect("127.0.0.1", port)
    stored, failed = 0, Counter[str]()
    try:
        while time.monotonic() < until and bodies:
            body = bodies.pop()
            [(status, _)] = await wire.pipeline([post_request(path, body, headers)])
            if status in (200, 202):
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


# The fsync floor: this many 4 KiB writes, each followed by an fsync, on the broker's disk.
FSYNC_WRITES = 400
FSYNC_BLOCK = 4096


@dataclass
class FsyncFloor:
    """What the store's disk allows when every write waits for fsync."""

    directory: str
    writes: int
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return 1000 / self.p50_ms if self.p50_ms else 0.0

    def records_per_second(self, batch: int) -> float:
        """What one fsync per batch of ``batch`` records would allow, one batch at a time."""
        return self.per_second * batch


def fsync_floor(directory: Path, writes: int = FSYNC_WRITES) -> FsyncFloor:
    """Append ``FSYNC_BLOCK`` bytes and fsync, ``writes`` times, in ``directory`` (the store's
    disk): the latency no durable write there can beat."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fsync-floor.bin"
    block = os.urandom(FSYNC_BLOCK)
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(writes):
            began = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            times.append((time.perf_counter() - began) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    times.sort()
    return FsyncFloor(
        str(directory), writes, statistics.median(times), times[int(len(times) * 0.99) - 1]
    )


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
    # Built before the clock starts; each way's bodies are its own (unique records).
    body_count = max(8, min(PREBUILT_RECORDS, int(seconds * 150_000)) // 1000)
    plain = _prebuilt(lambda r, b: r.body(b), 1000, body_count)
    gzipped = _prebuilt(_gzip_json, 1000, body_count)
    otlp = _prebuilt(_otlp_export, OTLP_BATCH, body_count * 2)

    def prebuilt(way: str, path: str, headers: dict[str, str], batch: int, bodies: list[bytes]):
        workers = [
            lambda u: _prebuilt_worker(port, path, headers, batch, bodies, u) for _ in range(4)
        ]
        return (f"{way}, pre-built, 4 in flight", workers, stack)

    ways += [
        prebuilt("HTTP JSON, batches of 1,000", "/api/logs/publish", _HEADERS, 1000, plain),
        prebuilt(
            "HTTP JSON gzip, batches of 1,000", "/api/logs/publish", _GZIP_HEADERS, 1000, gzipped
        ),
        prebuilt(
            f"OTLP/HTTP protobuf gzip, batches of {OTLP_BATCH}",
            "/v1/logs",
            _OTLP_HEADERS,
            OTLP_BATCH,
            otlp,
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
