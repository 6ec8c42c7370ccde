"""Publishers of benchmark messages, and the pacer that offers them at a fixed rate.

Each publisher's ``publish(first_seq, count)`` sends messages ``first_seq ..`` and returns how
many the system accepted (Nchan: 2xx; JetStream: a PubAck; ingest: 202).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from bench.credentials import JETSTREAM_WRITER, SERVICE_TOKEN, WRITER_INBOX
from bench.http_wire import HttpWire, post_request
from bench.messages import message, published_records, stored_record_factory
from bench.nats_wire import NatsWire
from logstream.shared.channels import parse_channel, to_subject

__all__ = ["IngestHttpPublisher", "JetStreamPublisher", "NchanPublisher", "Paced", "pace"]

# A pacer tick: small enough that a 20 msgs/s rate is not lumpy, large enough to batch 50k/s.
TICK_S = 0.005
# The most messages one tick may send when catching up, so a stall does not become a flood.
MAX_PER_CALL = 2000
# A publisher that sent less than this share of what was offered fell behind.
BEHIND_SHARE = 0.95
# Publish calls in flight at once: a round trip per tick would cap the rate at the latency.
IN_FLIGHT = 32


@dataclass
class Paced:
    offered_rate: float
    duration_s: float
    sent: int
    accepted: int
    elapsed_s: float

    @property
    def achieved_rate(self) -> float:
        return self.accepted / self.duration_s

    @property
    def behind(self) -> bool:
        return self.accepted < BEHIND_SHARE * self.offered_rate * self.duration_s


async def pace(
    publish: Callable[[int, int], Coroutine[Any, Any, int]],
    rate: float,
    duration_s: float,
    first_seq: int = 0,
) -> Paced:
    """Offer ``rate`` messages/s for ``duration_s``: each tick sends what is due by then, with
    up to ``IN_FLIGHT`` calls unanswered; what is still unanswered at the end is awaited."""
    total = int(rate * duration_s)
    sent = 0
    calls: list[asyncio.Task] = []
    pending: set[asyncio.Task] = set()
    start = time.monotonic()
    while sent < total:
        elapsed = time.monotonic() - start
        if elapsed >= duration_s:
            break
        due = min(int(rate * elapsed) + 1, total, sent + MAX_PER_CALL) - sent
        if due > 0 and len(pending) < IN_FLIGHT:
            call = asyncio.create_task(publish(first_seq + sent, due))
            calls.append(call)
            pending.add(call)
            call.add_done_callback(pending.discard)
            sent += due
        await asyncio.sleep(TICK_S)
    accepted = sum(await asyncio.gather(*calls))
    return Paced(rate, duration_s, sent, accepted, time.monotonic() - start)


class _Wires:
    """Keep-alive connections handed out one per call, so calls in flight never share one."""

    def __init__(self, wires: list[HttpWire]) -> None:
        self.all = wires
        self._free: asyncio.Queue[HttpWire] = asyncio.Queue()
        for wire in wires:
            self._free.put_nowait(wire)

    async def pipeline(self, requests: list[bytes]) -> list[tuple[int, bytes]]:
        wire = await self._free.get()
        try:
            return await wire.pipeline(requests)
        finally:
            self._free.put_nowait(wire)

    async def close(self) -> None:
        for wire in self.all:
            await wire.close()


class NchanPublisher:
    """POSTs to Nchan's publisher location, pipelined over a few keep-alive connections."""

    def __init__(self, nchan, channel: str, wires: list[HttpWire]) -> None:
        self._nchan, self._channel, self._wires = nchan, channel, _Wires(wires)
        self.statuses: dict[int, int] = {}

    @classmethod
    async def connect(cls, nchan, channel: str, connections: int = 8) -> NchanPublisher:
        wires = [await HttpWire.connect("127.0.0.1", nchan.port) for _ in range(connections)]
        return cls(nchan, channel, wires)

    async def publish(self, first_seq: int, count: int) -> int:
        answers = await self._wires.pipeline(
            [
                self._nchan.publish_request(self._channel, message(seq))
                for seq in range(first_seq, first_seq + count)
            ]
        )
        accepted = 0
        for status, _ in answers:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            accepted += 200 <= status < 300
        return accepted

    async def close(self) -> None:
        await self._wires.close()


class JetStreamPublisher:
    """Stored records straight into JetStream ``logs.<...>``: what ingest would write."""

    def __init__(self, wire: NatsWire, channel: str) -> None:
        self._wire = wire
        self._subject = to_subject(parse_channel(channel))
        self._record = stored_record_factory(channel)
        self.first_seq = self.last_seq = 0
        self.errors = 0

    @classmethod
    async def connect(cls, nats_url: str, channel: str) -> JetStreamPublisher:
        return cls(await NatsWire.connect(nats_url, JETSTREAM_WRITER, WRITER_INBOX), channel)

    async def publish(self, first_seq: int, count: int) -> int:
        replies = await self._wire.request_many(
            self._subject, [self._record(seq) for seq in range(first_seq, first_seq + count)]
        )
        good = [reply for reply in replies if reply and b'"error"' not in reply]
        self.errors += len(replies) - len(good)
        if good:  # PubAck {"stream":"LOGS","seq":N}: only the ends are parsed
            self.first_seq = self.first_seq or _ack_seq(good[0])
            self.last_seq = _ack_seq(good[-1])
        return len(good)

    async def close(self) -> None:
        await self._wire.close()


def _ack_seq(ack: bytes) -> int:
    return int(ack.split(b'"seq":', 1)[1].split(b",")[0].split(b"}")[0])


class IngestHttpPublisher:
    """Records through the real ingest: one POST of a JSON array per call (202 = stored)."""

    def __init__(self, wires: list[HttpWire], channel: str, tag: str) -> None:
        self._wire, self._channel, self._tag = _Wires(wires), channel, tag
        self.statuses: dict[int, int] = {}

    @classmethod
    async def connect(
        cls, port: int, channel: str, tag: str, connections: int = 4
    ) -> IngestHttpPublisher:
        wires = [await HttpWire.connect("127.0.0.1", port) for _ in range(connections)]
        return cls(wires, channel, tag)

    async def publish(self, first_seq: int, count: int) -> int:
        body = published_records(self._channel, first_seq, count, self._tag)
        [(status, _)] = await self._wire.pipeline(
            [
                post_request(
                    "/api/logs/publish",
                    body,
                    {
                        "Authorization": f"Bearer {SERVICE_TOKEN}",
                        "Content-Type": "application/json",
                    },
                )
            ]
        )
        self.statuses[status] = self.statuses.get(status, 0) + 1
        return count if status == 202 else 0

    async def close(self) -> None:
        await self._wire.close()
