"""The channels case's systems and tools: how a stream is opened on each system, publishers
over many channels, the gateway's metrics, the servers' logs.

A publisher sends message ``seq`` on channel ``seq % len(channels)`` (round-robin: every channel
gets the same share) and counts, per channel, the messages the system accepted: what each
stream on that channel must receive, no more and no less. ``publish(first_seq, count)`` fits
``bench.publishers.pace``.
"""

from __future__ import annotations

import re
import zlib
from array import array
from pathlib import Path

import httpx

from bench.channel_pool import CONNECTED
from bench.credentials import JETSTREAM_WRITER, WRITER_INBOX
from bench.http_wire import HttpWire
from bench.messages import message, stored_record_factory
from bench.nats_wire import NatsWire
from bench.publishers import _Wires
from logstream.shared.channels import parse_channel, to_subject
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens

__all__ = [
    "WORKSPACES",
    "ChannelsJetStream",
    "ChannelsNchan",
    "LagSummary",
    "LogstreamChannels",
    "NchanChannels",
    "Scrape",
    "channel_of",
    "lag_between",
    "log_problems",
    "scrape",
]

# The channels' workspaces: ws0 .. ws1999.
WORKSPACES = 2000
# Nchan's publisher: calls in flight share this many keep-alive connections.
NCHAN_CONNECTIONS = 8
# A scrape of a busy gateway's /metrics may wait behind its loop.
SCRAPE_TIMEOUT_S = 30.0


def channel_of(index: int) -> str:
    return f"logs:etl:ws{index % WORKSPACES}:wf{index}"


def _workspace(channel: str) -> str:
    return channel.split(":")[2]


class LogstreamChannels:
    """Gateways of a stack; a stream goes to gateway crc32(workspace) % len(gateways)."""

    marker = CONNECTED

    def __init__(self, stack, gateways: list) -> None:
        self.stack, self.gateways = stack, gateways
        self.name = f"Logstream {len(gateways)} gateway" + ("s" if len(gateways) > 1 else "")
        token = UserTokens(DEV_JWT_SECRET).issue("bench", ["*"])  # "*": every workspace
        self._head = (
            f"HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )

    def gateway_of(self, channel: str) -> int:
        return zlib.crc32(_workspace(channel).encode()) % len(self.gateways)

    def item(self, key: int, channel: str) -> tuple:
        port = self.gateways[self.gateway_of(channel)].port
        return (
            key,
            "127.0.0.1",
            port,
            f"GET /api/logs/stream?channels={channel} {self._head}".encode(),
            self.marker,
        )

    def pids(self) -> dict[str, list[int]]:
        groups = {f"gateway {i + 1}": [g.process.pid] for i, g in enumerate(self.gateways)}
        return groups | {"nats-server": [self.stack.broker.process.pid]}

    async def publisher(self, channels: list[str]):
        return await ChannelsJetStream.connect(self.stack.broker.url, channels)

    def logs(self) -> list:
        return [g.log_path for g in self.gateways]


class NchanChannels:
    """One nginx + Nchan; every stream to its one port."""

    marker = None  # connected at the response head

    def __init__(self, nchan) -> None:
        self.nchan, self.name = nchan, nchan.name

    def item(self, key: int, channel: str) -> tuple:
        return (key, "127.0.0.1", self.nchan.port, self.nchan.subscribe_request(channel), None)

    def pids(self) -> dict[str, list[int]]:
        return {"nginx workers": self.nchan.worker_pids()}

    async def publisher(self, channels: list[str]):
        return await ChannelsNchan.connect(self.nchan, channels)

    def logs(self) -> list:
        return [self.nchan.dir / "error.log"]


class _Accepted:
    def __init__(self, channels: list[str]) -> None:
        self.channels = channels
        self.accepted = array("q", bytes(8 * len(channels)))
        self.errors = 0

    def _count(self, seqs: range, good: list[bool]) -> int:
        total, accepted, n = 0, self.accepted, len(self.channels)
        for seq, ok in zip(seqs, good):
            if ok:
                accepted[seq % n] += 1
                total += 1
        self.errors += len(seqs) - total
        return total


class ChannelsJetStream(_Accepted):
    """Stored records straight into JetStream ``logs.etl.<ws>.<wf>``, as the ingest NATS user
    (the layout ``JetStreamPublisher`` writes): one pipelined write of PUBs per call."""

    def __init__(self, wire: NatsWire, channels: list[str]) -> None:
        super().__init__(channels)
        self._wire = wire
        self._subjects = [to_subject(parse_channel(c)).encode() for c in channels]
        self._records = [stored_record_factory(c) for c in channels]

    @classmethod
    async def connect(cls, nats_url: str, channels: list[str]) -> ChannelsJetStream:
        return cls(await NatsWire.connect(nats_url, JETSTREAM_WRITER, WRITER_INBOX), channels)

    async def publish(self, first_seq: int, count: int) -> int:
        n, seqs = len(self.channels), range(first_seq, first_seq + count)
        replies = await self._wire.request_each(
            [(self._subjects[seq % n], self._records[seq % n](seq)) for seq in seqs]
        )
        return self._count(seqs, [bool(r and b'"error"' not in r) for r in replies])

    async def close(self) -> None:
        await self._wire.close()


class ChannelsNchan(_Accepted):
    """POSTs to Nchan's publisher location, one per message, pipelined over keep-alive
    connections (2xx = accepted)."""

    def __init__(self, nchan, wires: list[HttpWire], channels: list[str]) -> None:
        super().__init__(channels)
        self._nchan, self._wires = nchan, _Wires(wires)
        self.statuses: dict[int, int] = {}

    @classmethod
    async def connect(cls, nchan, channels: list[str]) -> ChannelsNchan:
        wires = [await HttpWire.connect("127.0.0.1", nchan.port) for _ in range(NCHAN_CONNECTIONS)]
        return cls(nchan, wires, channels)

    async def publish(self, first_seq: int, count: int) -> int:
        n, seqs = len(self.channels), range(first_seq, first_seq + count)
        answers = await self._wires.pipeline(
            [self._nchan.publish_request(self.channels[seq % n], message(seq)) for seq in seqs]
        )
        for status, _ in answers:
            self.statuses[status] = self.statuses.get(status, 0) + 1
        return self._count(seqs, [200 <= status < 300 for status, _ in answers])

    async def close(self) -> None:
        await self._wires.close()


# -- the gateway's /metrics -----------------------------------------------------------------

_SAMPLE = re.compile(r'^(logstream_gateway_\w+?)(?:\{le="([^"]+)"\})? ([0-9.e+-]+|NaN)$', re.M)
_READ = "logstream_gateway_records_read_total"
_LAG = "logstream_gateway_loop_lag_seconds_bucket"
# Gauges of the hub's broker work (None from a gateway that does not export them).
_GAUGES = {
    "logstream_gateway_catch_ups": "catch_ups",
    "logstream_gateway_repairs": "repairs",
    "logstream_gateway_interests": "interests",
}


class Scrape:
    """One reading of a gateway's counters: records read, loop-lag buckets (None: no such
    metric, as in gateways before the loop-lag histogram), catch-ups, repairs, interests."""

    def __init__(self, text: str) -> None:
        self.read = 0.0
        self.catch_ups = self.repairs = self.interests = None
        self.lag: dict[float, float] | None = None
        for name, le, value in _SAMPLE.findall(text):
            if name == _READ:
                self.read = float(value)
            elif name in _GAUGES:
                setattr(self, _GAUGES[name], float(value))
            elif name == _LAG:
                self.lag = self.lag or {}
                self.lag[float(le)] = float(value)


def scrape(port: int) -> Scrape:
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S)
    answer.raise_for_status()
    return Scrape(answer.text)


class LagSummary:
    """How late the gateway's loop ran its 100 ms timer over a window, from bucket deltas."""

    def __init__(self, before: dict[float, float], after: dict[float, float]) -> None:
        deltas = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
        self.samples = int(deltas.get(float("inf"), 0))
        self.over_10ms = self.samples - int(deltas.get(0.01, 0))
        # The bucket of the worst sample: the first bound every sample is under.
        self.worst_le = next((le for le, n in deltas.items() if n >= self.samples), None)

    @property
    def worst(self) -> str:
        if self.worst_le is None or not self.samples:
            return "n/a"
        if self.worst_le == float("inf"):
            return "> 2.5 s"
        return f"<= {self.worst_le * 1000:g} ms"


def lag_between(before: Scrape, after: Scrape) -> LagSummary | None:
    if before.lag is None or after.lag is None:
        return None
    return LagSummary(before.lag, after.lag)


# -- server logs ----------------------------------------------------------------------------

_PROBLEM = re.compile(r"warn|error|critical|crit\]|alert\]|emerg\]|traceback", re.I)


def log_problems(paths: list[Path], limit: int = 6) -> tuple[int, list[str]]:
    """(lines that warn or err in these logs, the first few distinct ones, trimmed)."""
    count, kinds, shown = 0, set[str](), list[str]()
    for path in paths:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if _PROBLEM.search(line):
                count += 1
                kind = re.sub(r"\d+", "N", line)[:120]  # one example per kind of line
                if kind not in kinds and len(shown) < limit:
                    kinds.add(kind)
                    shown.append(line.strip()[:240])
    return count, shown
