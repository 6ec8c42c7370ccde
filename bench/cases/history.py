"""Case 9: history pages and the channel list (Logstream): how long a page of one channel takes
when the stream around it is large, and how long the list of a workspace's channels takes.

A stack of its own (a fresh broker, one gateway) is filled straight into JetStream, as the
ingest NATS user, with stored records in ingest's layout: ``channels - 2`` filler channels
round-robin, and two page channels of exactly ``PAGE`` records each, spread evenly: *big* over
the whole stream, *small* over its first tenth. At a tenth of the stream the small channel's
newest page and the channel list are timed; the fill then goes on to the whole stream, and the
big channel's pages (newest, one ``before=`` in the middle, two filtered), the small channel's
page again (now in the oldest tenth) and the channel list are timed. Every answer is compared
with what was written: a wrong one fails the case.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.credentials import JETSTREAM_WRITER, WORKSPACE, WRITER_INBOX, user_token
from bench.machine import cpu_seconds, load_average
from bench.messages import stored_record_factory
from bench.nats_wire import NatsWire
from bench.window import percentile
from logstream.shared.channels import parse_channel, to_subject
from logstream.shared.records import StoredRecord, delivered_json, encode_stored

__all__ = ["HEADLINE", "HistoryResult", "Timing", "history_case"]

# Records of each page channel, and the newest page asked for (all of them).
PAGE = 100
# The middle page: ``before`` the record of this index, this many records.
MIDDLE_BEFORE, MIDDLE_LIMIT = 60, 20
# Channels the list returns (the most recently active).
LIST_LIMIT = 100
# The scale point: the small channel's page and the list are timed at stream length / this.
SCALE_DIVISOR = 10
# Records per pipelined write to JetStream, and writes unanswered at once.
FILL_BATCH = 5_000
FILL_IN_FLIGHT = 4
HTTP_TIMEOUT_S = 60.0
# After a fill, until the servers idle (under this share of a core over a second; at most
# QUIET_MAX_S): the broker still writing the last records out must not load the first figures.
QUIET_SHARE, QUIET_MAX_S = 0.1, 30.0
# Of the page channels' records: every tenth an error, every fourth fields.table = "orders".
ERROR_EVERY, ORDERS_EVERY = 10, 4
HEADLINE = "newest page, big channel"


@dataclass
class Timing:
    what: str
    request: str
    stream_records: int
    requests: int
    answer: str  # what each answer held, e.g. "100 records"
    times_ms: list[float]
    gateway_cpu_ms: float  # per request
    nats_cpu_ms: float
    problem: str | None = None

    @property
    def p50(self) -> float:
        return percentile(self.times_ms, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.times_ms, 0.99)

    @property
    def max(self) -> float:
        return max(self.times_ms, default=float("nan"))


@dataclass
class HistoryResult:
    records: int
    channels: int
    scale_records: int
    fill_s: float = 0.0
    timings: list[Timing] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    load: str = ""

    def timing(self, what: str, stream_records: int | None = None) -> Timing | None:
        return next(
            (
                t
                for t in self.timings
                if t.what == what and stream_records in (None, t.stream_records)
            ),
            None,
        )

    @property
    def fill_rate(self) -> float:
        return self.records / self.fill_s if self.fill_s else 0.0

    @property
    def scale_ratio(self) -> float | None:
        """p50 of the big channel's newest page at the whole stream over the small channel's
        at a tenth of it: the same request shape, a stream ten times longer."""
        big = self.timing(HEADLINE, self.records)
        small = self.timing("newest page, small channel", self.scale_records)
        return big.p50 / small.p50 if big and small and small.p50 else None


def _padded(text: str) -> str:
    return (text + " " + "y" * 200)[:200]


class _Layout:
    """Which channel each stream position (0-based, in write order) holds, and the stored
    bytes; the page channels' records carry a level and ``fields`` to filter on."""

    def __init__(self, total: int, channels: int) -> None:
        self.total, self.scale = total, total // SCALE_DIVISOR
        # A fresh stream: nothing else in it, so the names need no run tag.
        self.big = f"logs:etl:{WORKSPACE}:history-big"
        self.small = f"logs:etl:{WORKSPACE}:history-small"
        self.fillers = [f"logs:etl:{WORKSPACE}:fill-{i:04d}" for i in range(channels - 2)]
        self.subjects = {c: to_subject(parse_channel(c)).encode() for c in self.all_channels}
        self._filler_records = [stored_record_factory(c) for c in self.fillers]
        # position -> (channel, index within the channel's PAGE records)
        self.paged: dict[int, tuple[str, int]] = {}
        for channel, span in ((self.big, self.total), (self.small, self.scale)):
            every = span // PAGE
            for k in range(PAGE):
                position = k * every + every // 2
                assert position not in self.paged, "page channels' positions collide"
                self.paged[position] = (channel, k)
        self.stored = {
            (channel, k): self._page_record(channel, k) for channel, k in self.paged.values()
        }
        self.seqs: dict[tuple[str, int], int] = {}  # from JetStream's acks
        self.counts: dict[str, int] = dict.fromkeys(self.all_channels, 0)
        self.last_position: dict[str, int] = {}

    @property
    def all_channels(self) -> list[str]:
        return [self.big, self.small, *self.fillers]

    @staticmethod
    def level(k: int) -> str:
        return "error" if k % ERROR_EVERY == ERROR_EVERY - 1 else "info"

    @staticmethod
    def table(k: int) -> str:
        return "orders" if k % ORDERS_EVERY == 0 else "users"

    def _page_record(self, channel: str, k: int) -> bytes:
        return encode_stored(
            StoredRecord(
                channel=channel,
                level=self.level(k),
                message=_padded(f"history record {k:03d} of {channel.rsplit(':', 1)[1]}"),
                timestamp="2026-01-01T00:00:00Z",
                received_at="2026-01-01T00:00:00Z",
                publisher="bench",
                fields={"n": k, "table": self.table(k)},
            )
        )

    def requests(self, first: int, stop: int) -> list[tuple[bytes, bytes]]:
        out = []
        fillers, records = len(self.fillers), self._filler_records
        for position in range(first, stop):
            paged = self.paged.get(position)
            if paged is None:
                index = position % fillers
                channel = self.fillers[index]
                payload = records[index](position)
            else:
                channel = paged[0]
                payload = self.stored[paged]
            self.counts[channel] += 1
            self.last_position[channel] = position
            out.append((self.subjects[channel], payload))
        return out

    def expected(self, channel: str, ks: list[int]) -> list[Any]:
        return [
            json.loads(delivered_json(self.seqs[(channel, k)], self.stored[(channel, k)]))
            for k in ks
        ]


def _ack_seq(reply: bytes | None) -> int | None:
    if not reply or b'"error"' in reply:
        return None
    return int(reply.split(b'"seq":', 1)[1].split(b",")[0].split(b"}")[0])


class _Filler:
    """Writes positions in order over one connection (JetStream stores them in that order),
    ``FILL_IN_FLIGHT`` batches unanswered at once; notes the seqs of the page records."""

    def __init__(self, wire: NatsWire, layout: _Layout) -> None:
        self.wire, self.layout = wire, layout
        self.written = 0
        self.errors = 0
        self.offset: int | None = None  # seq - position, the same for every record
        self.out_of_order = 0
        self.seconds = 0.0

    async def fill_to(self, stop: int) -> None:
        started = time.monotonic()
        slots = asyncio.Semaphore(FILL_IN_FLIGHT)
        tasks = []
        while self.written < stop:
            end = min(self.written + FILL_BATCH, stop)
            await slots.acquire()
            batch = self.layout.requests(self.written, end)
            tasks.append(asyncio.create_task(self._write(self.written, batch, slots)))
            await asyncio.sleep(0)  # let it write before the next batch is built
            self.written = end
        await asyncio.gather(*tasks)
        self.seconds += time.monotonic() - started

    async def _write(self, first: int, batch: list, slots: asyncio.Semaphore) -> None:
        try:
            replies = await self.wire.request_each(batch)
        finally:
            slots.release()
        self.errors += sum(1 for reply in replies if _ack_seq(reply) is None)
        for position in (first, first + len(batch) - 1, *self._paged_in(first, len(batch))):
            seq = _ack_seq(replies[position - first])
            if seq is None:
                continue
            if self.offset is None:
                self.offset = seq - position
            self.out_of_order += seq - position != self.offset
            paged = self.layout.paged.get(position)
            if paged is not None:
                self.layout.seqs[paged] = seq

    def _paged_in(self, first: int, count: int) -> list[int]:
        return [p for p in self.layout.paged if first <= p < first + count]


async def _timed(
    client: httpx.AsyncClient,
    pids: tuple[int, int],
    what: str,
    stream_records: int,
    path: str,
    params: dict[str, str],
    check: Callable[[Any], tuple[str, str | None]],
    requests: int,
) -> Timing:
    """``requests`` sequential requests after one not counted (the first of its kind may pay
    for a connection or a cache); ``check(answer)`` -> (what it held, problem or None)."""
    reply = await client.get(path, params=params)
    gateway, nats = pids
    cpu_before = cpu_seconds(gateway), cpu_seconds(nats)
    times, answers = [], [reply]
    for _ in range(requests):
        began = time.perf_counter()
        reply = await client.get(path, params=params)
        times.append((time.perf_counter() - began) * 1000)
        answers.append(reply)
    gateway_cpu = (cpu_seconds(gateway) - cpu_before[0]) * 1000 / requests
    nats_cpu = (cpu_seconds(nats) - cpu_before[1]) * 1000 / requests
    held, problem = "", None
    for answer in answers:
        if answer.status_code != 200:
            problem = f"HTTP {answer.status_code}: {answer.text[:200]}"
            break
        held, problem = check(answer.json())
        if problem:
            break
    request = path + "?" + "&".join(f"{k}={v}" for k, v in params.items())
    timing = Timing(
        what, request, stream_records, requests, held, times, gateway_cpu, nats_cpu, problem
    )
    print(
        f"  {what} ({stream_records:,} records): p50 {timing.p50:.1f} ms, p99 "
        f"{timing.p99:.1f} ms, max {timing.max:.1f} ms; gateway CPU {gateway_cpu:.1f} ms, "
        f"nats-server {nats_cpu:.1f} ms per request; {held}"
        + (f"; WRONG: {problem}" if problem else "")
        + "\n    each (ms): "
        + " ".join(f"{t:.0f}" for t in times),
        flush=True,
    )
    return timing


def _page_check(
    layout: _Layout, channel: str, ks: list[int], next_before: tuple[int | None, ...]
) -> Callable[[Any], tuple[str, str | None]]:
    wanted = layout.expected(channel, ks)

    def check(answer: Any) -> tuple[str, str | None]:
        records = answer.get("records", [])
        held = f"{len(records)} records"
        if records != wanted:
            seqs = [r.get("seq") for r in records]
            return held, (
                f"{len(records)} records (seqs {seqs[:3]}..{seqs[-3:]}), expected "
                f"{len(wanted)} (seqs {[w['seq'] for w in wanted[:3]]}..)"
            )
        if answer.get("next_before") not in next_before:
            return held, f"next_before {answer.get('next_before')}, expected {next_before}"
        return held, None

    return check


def _list_check(layout: _Layout, offset: int) -> Callable[[Any], tuple[str, str | None]]:
    """The ``LIST_LIMIT`` channels whose newest record is newest, newest first, each with its
    record count and newest seq as written."""
    newest = sorted(layout.last_position.items(), key=lambda item: item[1], reverse=True)
    wanted = [(channel, layout.counts[channel], position + offset) for channel, position in newest]
    wanted = wanted[:LIST_LIMIT]

    def check(answer: Any) -> tuple[str, str | None]:
        listed = answer.get("channels", [])
        held = f"{len(listed)} channels"
        got = [(c.get("channel"), c.get("records"), c.get("last_seq")) for c in listed]
        if got != wanted:
            wrong = next((pair for pair in zip(got, wanted) if pair[0] != pair[1]), None)
            return held, f"{len(got)} channels, expected {len(wanted)}; first difference {wrong}"
        return held, None

    return check


async def history_case(stack_class, workdir, args) -> HistoryResult:
    """``stack_class``: ``bench.stack.LogstreamStack``, started here with one fresh gateway."""
    total, channels, requests = args.history_records, args.history_channels, args.history_requests
    layout = _Layout(total, channels)
    result = HistoryResult(total, channels, layout.scale, load=load_average())
    stack = stack_class(workdir / "history", gateways=1)
    wire = None
    try:
        await asyncio.to_thread(stack.start)
        assert stack.broker.process is not None and stack.gateways[0].process is not None
        pids = (stack.gateways[0].process.pid, stack.broker.process.pid)
        wire = await NatsWire.connect(stack.broker.url, JETSTREAM_WRITER, WRITER_INBOX)
        filler = _Filler(wire, layout)
        headers = {"Authorization": f"Bearer {user_token()}"}
        async with httpx.AsyncClient(
            base_url=stack.gateways[0].url, headers=headers, timeout=HTTP_TIMEOUT_S
        ) as client:
            await filler.fill_to(layout.scale)
            _filled(filler, result, layout.scale)
            if result.problems:
                return result
            await _quiet(pids)
            offset = filler.offset or 1
            prefix = f"logs:etl:{WORKSPACE}"
            newest = list(range(PAGE))

            async def measure(what: str, path: str, params: dict[str, str], check) -> None:
                result.timings.append(
                    await _timed(client, pids, what, filler.written, path, params, check, requests)
                )

            page = {"channels": layout.small, "limit": str(PAGE)}
            await measure(
                "newest page, small channel",
                "/api/logs/history",
                page,
                _page_check(layout, layout.small, newest, (None,)),
            )
            listing = {"prefix": prefix, "limit": str(LIST_LIMIT)}
            await measure(
                "channel list", "/api/logs/channels", listing, _list_check(layout, offset)
            )

            await filler.fill_to(total)
            _filled(filler, result, total)
            if result.problems:
                return result
            await _quiet(pids)
            await measure(
                HEADLINE,
                "/api/logs/history",
                {"channels": layout.big, "limit": str(PAGE)},
                _page_check(layout, layout.big, newest, (None,)),
            )
            before = layout.seqs[(layout.big, MIDDLE_BEFORE)]
            middle = list(range(MIDDLE_BEFORE - MIDDLE_LIMIT, MIDDLE_BEFORE))
            await measure(
                f"before= in the middle, {MIDDLE_LIMIT} records",
                "/api/logs/history",
                {"channels": layout.big, "before": str(before), "limit": str(MIDDLE_LIMIT)},
                _page_check(layout, layout.big, middle, (layout.seqs[(layout.big, middle[0])],)),
            )
            errors = [k for k in newest if layout.level(k) == "error"]
            await measure(
                f"filtered: level=error ({len(errors)} of {PAGE} match)",
                "/api/logs/history",
                {"channels": layout.big, "limit": str(PAGE), "level": "error"},
                _page_check(layout, layout.big, errors, (None,)),
            )
            orders = [k for k in newest if layout.table(k) == "orders"]
            await measure(
                f"filtered: where= on fields ({len(orders)} of {PAGE} match)",
                "/api/logs/history",
                {"channels": layout.big, "limit": str(PAGE), "where": "fields.table = orders"},
                _page_check(layout, layout.big, orders, (None,)),
            )
            await measure(
                "newest page, small channel (now in the oldest tenth)",
                "/api/logs/history",
                page,
                _page_check(layout, layout.small, newest, (None,)),
            )
            await measure(
                "channel list", "/api/logs/channels", listing, _list_check(layout, offset)
            )
    finally:
        if wire is not None:
            await wire.close()
        await asyncio.to_thread(stack.stop)
    result.problems += [f"{t.what}: {t.problem}" for t in result.timings if t.problem]
    ratio = result.scale_ratio
    print(
        f"  filled {total:,} records in {result.fill_s:.1f} s ({result.fill_rate:,.0f}/s); "
        f"page p50 at {total:,} / at {layout.scale:,}: "
        + (f"{ratio:.2f}" if ratio is not None else "n/a"),
        flush=True,
    )
    return result


async def _quiet(pids: tuple[int, int]) -> float:
    """Seconds waited until the gateway and nats-server idle (see ``QUIET_SHARE``)."""
    began = time.monotonic()
    while time.monotonic() - began < QUIET_MAX_S:
        before = sum(cpu_seconds(pid) for pid in pids)
        await asyncio.sleep(1.0)
        if sum(cpu_seconds(pid) for pid in pids) - before < QUIET_SHARE:
            break
    return time.monotonic() - began


def _filled(filler: _Filler, result: HistoryResult, stop: int) -> None:
    result.fill_s = filler.seconds
    print(
        f"  filled to {stop:,} records in {filler.seconds:.1f} s "
        f"({stop / max(filler.seconds, 1e-9):,.0f} records/s)",
        flush=True,
    )
    if filler.errors:
        result.problems.append(f"{filler.errors:,} of {stop:,} records not stored")
    if filler.out_of_order:
        result.problems.append(
            f"{filler.out_of_order} records stored out of write order: the layout is unknown"
        )
    missing = [key for pos, key in filler.layout.paged.items() if pos < stop]
    if any(key not in filler.layout.seqs for key in missing):
        result.problems.append("a page record's seq is unknown (no ack)")
