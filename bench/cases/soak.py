"""The soak (issue 18, item 3): the whole stack under a steady mixed load for a long run, with
one broker restart in the middle; every service's memory, descriptors, tasks and the broker's
consumers sampled throughout, and every acknowledged record accounted for.

What runs at once, against ``LogstreamStack`` (embedded nats-server, ingest, two gateways, the
proxy in front of the first):

- *publishing*: ``rate`` records/s through ingest's ``POST /api/logs/publish``, one request
  at a time (10 a second), round-robin over the active channels (4 stable ones and 16 that
  rotate: one retired and one new every ``rotate_s``). Each record has an id
  (``soak-<n>``); a request not answered 202 is sent again with the same records until it is
  (JetStream's duplicate window stores each once). The ledger keeps every acknowledged
  record's channel and seq.
- *reconnects*: ``reconnects`` stream opens a second, dealt 2:2:1 over the first gateway, the
  second and the proxy; each reads for 0.2-3 s and closes. Channels: active ones (live),
  channels not published yet or never, and resumes with ``Last-Event-ID`` on active and on
  retired channels (a replay from the stream). Every record a reconnect received is checked
  against the ledger from its ``connected`` cursor up to the last record it got.
- *long-lived readers*: five streams (each gateway directly, the proxy, one on two channels,
  one on the workspace's wildcard) reading the whole run, reconnecting with ``Last-Event-ID``
  when cut; at the end each must hold every acknowledged record of its channels after its first
  cursor, in order, each once.
- *stalled readers*: three sockets at a time that send a stream request and never read (receive
  buffer 4 KiB): a replay of the whole workspace on the first gateway, the live wildcard on the
  second, a replay of one channel through the proxy. After ``stall_s`` the bench looks whether
  the server still holds its end, then reads what is there (an ``overflow`` frame? the
  server's close?) and closes.
- *broker restart*: at half time nats-server is stopped (SIGTERM) and started again on the
  same port and store; the services reconnect by themselves.
- *samples* every 10 s (``bench.soak_metrics``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import msgspec
import nats
from nats.js.api import DeliverPolicy

from bench.credentials import SERVICE_TOKEN, WORKSPACE, user_token
from bench.http_wire import HttpWire, post_request
from bench.soak_ledger import Comparison, Ledger
from bench.soak_metrics import SAMPLE_S, Sampler, Service
from bench.sse_wire import StalledSocket, open_sse, server_holds_socket, stream_request
from bench.stack import LogstreamStack
from logstream.shared.identities import DEV_NATS_GATEWAY
from logstream.shared.nats_names import STREAM_NAME, inbox_prefix

__all__ = ["SoakConfig", "SoakResult", "soak_case"]

STABLE = 4
ROTATING = 16
PUBLISH_TICK_S = 0.1
# A publish request not answered in this long is abandoned and sent again (same ids).
PUBLISH_TIMEOUT_S = 15.0
RETRY_S = 0.5
# After the run, how long the publisher may still retry its last request.
PUBLISH_FINISH_S = 120.0
CHURN_MIN_S, CHURN_MAX_S = 0.2, 3.0
# Reconnects in flight past this are not started (counted as skipped): a stuck server must not
# make the client pile up sockets without bound.
CHURN_MAX_IN_FLIGHT = 1000
READER_RETRY_S = 0.5
CATCH_UP_S = 90.0
BROKER_DOWN_S = 2.0
STALL_DRAIN_S = 15.0
HOLD_POLL_S = 2.0
OVERFLOW = b"event: overflow"
AFTER_SAMPLES, AFTER_SAMPLE_S = 3, 15.0
# A stalled replay starts this many records back (of the workspace, or of its one channel): a
# load that does not grow with the stream, and more than the ~5 MB of socket buffers and
# outbox a gateway fills before it cuts a reader.
STALL_REPLAY = 20_000
# The client's own event loop: how late a 100 ms timer runs (a late client delays everything).
LAG_TICK_S = 0.1
_VIAS = ("gateway-1", "gateway-1", "gateway-2", "gateway-2", "proxy")


@dataclass
class SoakConfig:
    minutes: float = 30.0
    rate: float = 300.0  # records/s
    reconnects: float = 50.0  # stream opens/s
    rotate_s: float = 5.0
    stall_s: float = 60.0
    sample_s: float = SAMPLE_S
    seed: int = 18

    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0


def channel(name: str) -> str:
    return f"logs:etl:{WORKSPACE}:{name}"


WILDCARD = f"logs:etl:{WORKSPACE}:*"


# --- results ---------------------------------------------------------------------------------


@dataclass
class PublishStats:
    batches: int = 0
    records_sent: int = 0
    acknowledged: int = 0
    attempts: int = 0
    statuses: Counter = field(default_factory=Counter)  # of every answer, 202 included
    errors: Counter = field(default_factory=Counter)  # no answer: by exception
    refusals: list[tuple[float, int]] = field(default_factory=list)  # (t, status), not 202
    ack_times: list[float] = field(default_factory=list)  # t of each 202 (for gaps)
    unfinished: int = 0  # records of a request never acknowledged (abandoned at the end)
    elapsed_s: float = 0.0


@dataclass
class ChurnStats:
    started: int = 0
    skipped: int = 0
    by_via: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)  # (via, status)
    refusals: list[tuple[float, str, int, str]] = field(default_factory=list)
    connect_errors: Counter = field(default_factory=Counter)
    connected: int = 0
    no_connected: int = 0  # 200 but no `connected` event before the end
    cut_early: int = 0  # the server ended the stream before the client closed it
    overflows: int = 0
    records: int = 0
    checked: int = 0  # streams whose records were compared with the ledger
    comparison: Comparison = field(default_factory=Comparison)
    mismatches: list[str] = field(default_factory=list)
    connect_ms: list[float] = field(default_factory=list)


@dataclass
class ReaderStats:
    name: str
    via: str
    channels: list[str] | None  # None: the workspace wildcard
    first_cursor: int | None = None
    received: list[int] = field(default_factory=list)
    numbers: dict[int, int] = field(default_factory=dict)  # seq -> record number from its id
    connects: int = 0
    cuts: int = 0  # the server closed without a final frame
    overflows: int = 0
    rewinds: int = 0  # an overflow's id before the last record received
    statuses: Counter = field(default_factory=Counter)
    refusals: list[tuple[float, int]] = field(default_factory=list)
    connect_errors: int = 0
    cursor_moves: int = 0  # a resume whose `connected` cursor was not the id sent
    comparison: Comparison | None = None
    wrong_records: int = 0  # a seq whose record id is not the ledger's


@dataclass
class StallOutcome:
    via: str
    kind: str
    opened_at: float
    status: int = 0
    held_at_end: bool | None = None
    released_after_s: float | None = None  # the server let go of its end, this long after open
    stalled_s: float = 0.0  # from the request to the bench reading
    bytes_read: int = 0
    overflow_seen: bool = False
    closed_by_server: bool = False
    error: str | None = None


@dataclass
class RestartStats:
    at: float = 0.0  # s since start
    stop_s: float = 0.0  # SIGTERM to exit
    down_s: float = 0.0  # exit to start called
    listening_s: float = 0.0  # start called to listening
    first_ack_after_s: float | None = None  # from the stop to the first 202 after the start
    ready_after_s: dict[str, float | None] = field(default_factory=dict)  # from the stop
    error: str | None = None

    @property
    def outage(self) -> tuple[float, float]:
        """The window in which refusals are expected: the stop to every service ready + 5 s."""
        ends = [v for v in self.ready_after_s.values() if v is not None]
        if self.first_ack_after_s is not None:
            ends.append(self.first_ack_after_s)
        return self.at, self.at + (max(ends) if ends else 60.0) + 5.0


@dataclass
class StoredCheck:
    stream_messages: int = 0
    read: int = 0
    acknowledged_found: int = 0
    acknowledged_missing: int = 0
    wrong: int = 0  # a ledger seq holding another record
    not_acknowledged: int = 0  # soak records stored that the ledger does not have
    repeated_ids: int = 0  # a soak id stored more than once
    seconds: float = 0.0
    error: str | None = None

    @property
    def balanced(self) -> bool:
        return self.error is None and not (
            self.acknowledged_missing or self.wrong or self.not_acknowledged or self.repeated_ids
        )


@dataclass
class SoakResult:
    config: SoakConfig
    duration_s: float = 0.0
    publish: PublishStats = field(default_factory=PublishStats)
    churn: ChurnStats = field(default_factory=ChurnStats)
    readers: list[ReaderStats] = field(default_factory=list)
    stalls: list[StallOutcome] = field(default_factory=list)
    restart: RestartStats = field(default_factory=RestartStats)
    stored: StoredCheck = field(default_factory=StoredCheck)
    ledger_acknowledged: int = 0
    ledger_records: int = 0
    ledger_repeated_acks: int = 0
    channels_published: int = 0
    channels_opened: int = 0
    sampler: Sampler | None = None
    services: dict[str, str] = field(default_factory=dict)  # name -> pid(s)
    log_lines: dict[str, list[str]] = field(default_factory=dict)  # warnings/errors per log
    caught_up: bool = True
    notes: list[str] = field(default_factory=list)
    client_lags: list[float] = field(default_factory=list)  # s late, each LAG_TICK_S timer
    client_stalls: list[tuple[float, float]] = field(default_factory=list)  # (t, s) over 1 s
    client_cpu: float = 0.0  # share of one core over the load


# --- the run ---------------------------------------------------------------------------------


class _Soak:
    def __init__(self, stack: LogstreamStack, config: SoakConfig) -> None:
        self.stack, self.config = stack, config
        self.rng = random.Random(config.seed)
        self.token = user_token()
        self.ledger = Ledger()
        self.result = SoakResult(config)
        self.stable = [channel(f"soak-s{i}") for i in range(STABLE)]
        self.rotating = [channel(f"soak-r{i}") for i in range(ROTATING)]
        self.next_rotating = ROTATING
        self.retired: list[str] = []
        self.never = 0  # channels opened that are never published
        self.opened_channels: set[str] = set()
        self.stop_load = asyncio.Event()
        self.t0 = time.monotonic()
        self.churn_tasks: set[asyncio.Task] = set()

    # -- helpers --

    def now(self) -> float:
        return time.monotonic() - self.t0

    def active(self) -> list[str]:
        return self.stable + self.rotating

    def _address(self, via: str) -> tuple[int, int]:
        """(port, pid) of the server a stream of ``via`` connects to."""
        if via == "proxy":
            server = self.stack.proxy
        else:
            server = self.stack.gateways[int(via.rsplit("-", 1)[1]) - 1]
        assert server is not None and server.process is not None
        return server.port, server.process.pid

    def _request(self, via: str, channels: list[str], last_event_id: int | None) -> bytes:
        self.opened_channels.update(channels)
        if via == "proxy":
            assert len(channels) == 1, "a proxy route streams one channel"
            _, _, workspace, workflow = channels[0].split(":")
            path = (
                f"/api/dapadmin/l5-etl/sse/logs/stream?workspace_id={workspace}"
                f"&workflow_id={workflow}"
            )
        else:
            path = f"/api/logs/stream?channels={','.join(channels)}"
        return stream_request(path, self.token, last_event_id)

    # -- publishing --

    async def publish(self) -> None:
        stats = self.result.publish
        ingest = self.stack.ingest
        assert ingest is not None
        wire: HttpWire | None = None
        number = 0
        start = time.monotonic()
        encoder = msgspec.json.Encoder()
        pad = "x" * 120
        while not self.stop_load.is_set():
            due = min(int(self.config.rate * (time.monotonic() - start)) - number, 1000)
            if due <= 0:
                await asyncio.sleep(PUBLISH_TICK_S / 4)
                continue
            active = self.active()
            batch = [(active[n % len(active)], n) for n in range(number, number + due)]
            body = encoder.encode(
                [
                    {"channel": name, "message": f"soak {n:09d} {pad}", "id": f"soak-{n}"}
                    for name, n in batch
                ]
            )
            request = post_request(
                "/api/logs/publish",
                body,
                {"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"},
            )
            stats.batches += 1
            stats.records_sent += due
            number += due
            finish_by = None
            while True:
                if self.stop_load.is_set() and finish_by is None:
                    finish_by = time.monotonic() + PUBLISH_FINISH_S
                if finish_by is not None and time.monotonic() > finish_by:
                    stats.unfinished += due
                    break
                stats.attempts += 1
                try:
                    if wire is None:
                        wire = await asyncio.wait_for(
                            HttpWire.connect("127.0.0.1", ingest.port), PUBLISH_TIMEOUT_S
                        )
                    [(status, answer)] = await asyncio.wait_for(
                        wire.pipeline([request]), PUBLISH_TIMEOUT_S
                    )
                except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                    stats.errors[type(exc).__name__] += 1
                    if wire is not None:
                        with contextlib.suppress(Exception):
                            await wire.close()
                    wire = None
                    await asyncio.sleep(RETRY_S)
                    continue
                stats.statuses[status] += 1
                if status == 202:
                    seqs = msgspec.json.decode(answer)["seqs"]
                    for (name, n), seq in zip(batch, seqs, strict=True):
                        self.ledger.add(name, n, seq)
                    stats.acknowledged += due
                    stats.ack_times.append(self.now())
                    break
                stats.refusals.append((self.now(), status))
                await asyncio.sleep(RETRY_S)
            await asyncio.sleep(PUBLISH_TICK_S)
        stats.elapsed_s = time.monotonic() - start
        if wire is not None:
            with contextlib.suppress(Exception):
                await wire.close()

    async def rotate(self) -> None:
        slot = 0
        while not self.stop_load.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_load.wait(), self.config.rotate_s)
                return
            self.retired.append(self.rotating[slot])
            self.rotating[slot] = channel(f"soak-r{self.next_rotating}")
            self.next_rotating += 1
            slot = (slot + 1) % ROTATING

    # -- reconnects --

    async def churn(self) -> None:
        stats = self.result.churn
        start = time.monotonic()
        started = 0
        while not self.stop_load.is_set():
            due = int(self.config.reconnects * (time.monotonic() - start)) - started
            for _ in range(max(due, 0)):
                started += 1
                if len(self.churn_tasks) >= CHURN_MAX_IN_FLIGHT:
                    stats.skipped += 1
                    continue
                task = asyncio.create_task(self._reconnect(started))
                self.churn_tasks.add(task)
                task.add_done_callback(self.churn_tasks.discard)
            await asyncio.sleep(0.02)
        if self.churn_tasks:
            await asyncio.wait(list(self.churn_tasks), timeout=CHURN_MAX_S + 30)

    def _pick(self) -> tuple[str, str, int | None]:
        """(kind, channel, Last-Event-ID or None)."""
        roll = self.rng.random()
        if roll < 0.35:
            return "live", self.rng.choice(self.active()), None
        if roll < 0.45:  # about to be published: the next rotating channels
            ahead = self.next_rotating + self.rng.randrange(3)
            return "new", channel(f"soak-r{ahead}"), None
        if roll < 0.5:  # never published
            self.never += 1
            return "never", channel(f"soak-n{self.never}"), None
        if roll < 0.8 or not self.retired:
            name = self.rng.choice(self.active())
            seqs = self.ledger.by_channel.get(name, [])
            back = self.rng.randrange(1, 60)
            resume = seqs[-back] if len(seqs) >= back else 0
            return "resume", name, resume
        name = self.rng.choice(self.retired[-200:])
        seqs = self.ledger.by_channel.get(name, [])
        resume = self.rng.choice(seqs) if seqs else 0
        return "resume-retired", name, resume

    async def _reconnect(self, index: int) -> None:
        stats = self.result.churn
        via = _VIAS[index % len(_VIAS)]
        kind, name, resume = self._pick()
        stats.started += 1
        stats.by_via[via] += 1
        stats.by_kind[kind] += 1
        lifetime = self.rng.uniform(CHURN_MIN_S, CHURN_MAX_S)
        port, _ = self._address(via)
        opened = time.monotonic()
        try:
            answer = await open_sse("127.0.0.1", port, self._request(via, [name], resume))
        except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
            stats.connect_errors[f"{via}: {type(exc).__name__}"] += 1
            return
        stats.statuses[(via, answer.status)] += 1
        if answer.status != 200:
            body = await answer.body()
            answer.close()
            stats.refusals.append(
                (self.now(), via, answer.status, body[:160].decode(errors="replace"))
            )
            return
        cursor: int | None = None
        seqs: list[int] = []
        deadline = opened + lifetime
        ended = False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    events = await asyncio.wait_for(answer.next_events(), left)
                except TimeoutError:
                    break
                if events is None:
                    ended = True
                    break
                for event in events:
                    if event.event == "log" and event.id is not None:
                        seqs.append(int(event.id))
                    elif event.event == "connected" and event.id is not None:
                        cursor = int(event.id)
                        stats.connected += 1
                        stats.connect_ms.append((time.monotonic() - opened) * 1000)
                    elif event.event == "overflow":
                        stats.overflows += 1
                        ended = True
                if ended:
                    break
        finally:
            answer.close()
        stats.cut_early += ended
        stats.records += len(seqs)
        if cursor is None:
            stats.no_connected += 1
            return
        if not seqs:
            return
        upto = min(max(seqs), self.ledger.max_seq)
        result = self.ledger.compare([name], cursor, seqs, upto)
        stats.checked += 1
        stats.comparison.add(result)
        if not result.balanced and len(stats.mismatches) < 20:
            stats.mismatches.append(
                f"t={self.now():.0f}s {via} {kind} {name.rsplit(':', 1)[1]} resume={resume} "
                f"cursor={cursor}: expected {result.expected}, received {result.received}, "
                f"missing {result.missing} (first {result.first_missing[:3]}), extra "
                f"{result.extra}, repeated {result.repeated}, out of order {result.out_of_order}"
            )

    # -- long-lived readers --

    async def read(self, reader: ReaderStats) -> None:
        port, _ = self._address(reader.via)
        channels = reader.channels or [WILDCARD]
        last: int | None = None
        decoder = msgspec.json.Decoder()
        while True:
            try:
                answer = await open_sse(
                    "127.0.0.1", port, self._request(reader.via, channels, last)
                )
            except (OSError, TimeoutError, ConnectionError, ValueError):
                reader.connect_errors += 1
                await asyncio.sleep(READER_RETRY_S)
                continue
            reader.statuses[answer.status] += 1
            if answer.status != 200:
                await answer.body()
                answer.close()
                reader.refusals.append((self.now(), answer.status))
                await asyncio.sleep(READER_RETRY_S)
                continue
            reader.connects += 1
            final = False
            try:
                while not final:
                    events = await answer.next_events()
                    if events is None:
                        reader.cuts += 1
                        break
                    for event in events:
                        if event.event == "log" and event.id is not None:
                            seq = int(event.id)
                            reader.received.append(seq)
                            record_id = decoder.decode(event.data).get("id") or ""
                            if record_id.startswith("soak-"):
                                reader.numbers[seq] = int(record_id[5:])
                            last = seq
                        elif event.event == "connected" and event.id is not None:
                            cursor = int(event.id)
                            if reader.first_cursor is None:
                                reader.first_cursor = cursor
                            elif last is not None and cursor != last:
                                reader.cursor_moves += 1
                            if last is None:
                                last = cursor
                        elif event.event in ("overflow", "auth-expired"):
                            reader.overflows += event.event == "overflow"
                            if event.id is not None and last is not None and int(event.id) < last:
                                # resend from there: drop what will come again
                                cut = int(event.id)
                                reader.rewinds += 1
                                keep = bisect.bisect_right(reader.received, cut)
                                reader.received[keep:] = []
                                last = cut
                            final = True
                            break
            finally:
                answer.close()
            await asyncio.sleep(READER_RETRY_S)

    # -- stalled readers --

    async def stall(self, via: str, kind: str) -> None:
        while not self.stop_load.is_set():
            outcome = StallOutcome(via, kind, self.now())
            self.result.stalls.append(outcome)
            await self._stall_once(outcome, self.config.stall_s)

    async def stall_whole_run(self, via: str) -> None:
        """One live wildcard stream never read until the load stops: does the server ever let
        go of a reader that stopped reading for good?"""
        outcome = StallOutcome(via, "live-wildcard, whole run", self.now())
        self.result.stalls.append(outcome)
        await self._stall_once(outcome, float("inf"))

    async def _stall_once(self, outcome: StallOutcome, duration: float) -> None:
        via = outcome.via
        if outcome.kind.startswith("live-wildcard"):
            request = self._request(via, [WILDCARD], None)
        elif outcome.kind == "replay-wildcard":  # the last STALL_REPLAY records (~9 MB)
            request = self._request(via, [WILDCARD], max(0, self.ledger.max_seq - STALL_REPLAY))
        else:  # the last STALL_REPLAY records of one stable channel
            seqs = self.ledger.by_channel.get(self.stable[0], [])
            resume = seqs[-STALL_REPLAY] - 1 if len(seqs) >= STALL_REPLAY else 0
            request = self._request(via, [self.stable[0]], resume)
        port, pid = self._address(via)
        opened = time.monotonic()
        try:
            sock = await StalledSocket.open("127.0.0.1", port, request)
        except (OSError, TimeoutError) as exc:
            outcome.error = type(exc).__name__
            await asyncio.sleep(1)
            return
        try:
            deadline = opened + duration
            held = True
            while time.monotonic() < deadline and not self.stop_load.is_set():
                await asyncio.sleep(HOLD_POLL_S)
                _, pid = self._address(via)
                held = server_holds_socket(pid, port, sock.client_port)
                if not held and outcome.released_after_s is None:
                    outcome.released_after_s = time.monotonic() - opened
            outcome.held_at_end = held
            outcome.stalled_s = time.monotonic() - opened
            read, seen, closed, status = await sock.drain(STALL_DRAIN_S, OVERFLOW)
            outcome.bytes_read, outcome.overflow_seen = read, seen
            outcome.closed_by_server, outcome.status = closed, status
        finally:
            sock.close()

    # -- broker restart --

    async def restart_broker(self) -> None:
        stats = self.result.restart
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_load.wait(), self.config.duration_s / 2)
            return
        broker = self.stack.broker
        stats.at = self.now()
        began = time.monotonic()

        def bounce() -> None:  # timed in its own thread: the client's loop lag cannot skew it
            broker.stop()
            stopped = time.monotonic()
            stats.stop_s = stopped - began
            time.sleep(BROKER_DOWN_S)
            starting = time.monotonic()
            stats.down_s = starting - stopped
            broker.start()
            stats.listening_s = time.monotonic() - starting

        try:
            await asyncio.to_thread(bounce)
        except (OSError, RuntimeError) as exc:
            stats.error = f"{type(exc).__name__}: {exc}"
            return
        services = {"ingest": self.stack.ingest, "proxy": self.stack.proxy}
        for index, gateway in enumerate(self.stack.gateways, 1):
            services[f"gateway-{index}"] = gateway
        waiting = {name: s for name, s in services.items() if s is not None}
        async with httpx.AsyncClient(timeout=2.0) as client:
            give_up = time.monotonic() + 120
            while time.monotonic() < give_up and (waiting or stats.first_ack_after_s is None):
                for name, service in list(waiting.items()):
                    with contextlib.suppress(httpx.HTTPError, OSError):
                        if (await client.get(service.url + "/ready")).status_code == 200:
                            stats.ready_after_s[name] = time.monotonic() - began
                            del waiting[name]
                acks = self.result.publish.ack_times
                if stats.first_ack_after_s is None and acks and acks[-1] > stats.at + stats.stop_s:
                    later = [t for t in acks if t > stats.at + stats.stop_s]
                    stats.first_ack_after_s = later[0] - stats.at
                await asyncio.sleep(0.1)
        for name in waiting:
            stats.ready_after_s[name] = None

    # -- sampling --

    async def watch_lag(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_TICK_S)
            lag = time.monotonic() - before - LAG_TICK_S
            self.result.client_lags.append(lag)
            if lag > 1.0:
                self.result.client_stalls.append((self.now() - lag, lag))

    def services(self) -> list[Service]:
        stack = self.stack

        def pid_of(server):
            return lambda: server.process.pid if server.process else None

        found = [Service("nats-server", pid_of(stack.broker), None)]
        assert stack.ingest is not None and stack.proxy is not None
        found.append(Service("ingest", pid_of(stack.ingest), stack.ingest.url + "/metrics"))
        for index, gateway in enumerate(stack.gateways, 1):
            found.append(Service(f"gateway-{index}", pid_of(gateway), gateway.url + "/metrics"))
        found.append(Service("proxy", pid_of(stack.proxy), stack.proxy.url + "/metrics"))
        return found

    async def sample(self, sampler: Sampler, stop: asyncio.Event) -> None:
        while True:
            began = time.monotonic()
            await sampler.sample()
            left = self.config.sample_s - (time.monotonic() - began)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(left, 0.1))
                return

    # -- the end --

    async def catch_up(self) -> bool:
        """Until every long-lived reader holds the last acknowledged record of its channels."""
        deadline = time.monotonic() + CATCH_UP_S
        while time.monotonic() < deadline:
            behind = 0
            for reader in self.result.readers:
                wanted = self.ledger.expected(reader.channels, 0, self.ledger.max_seq)
                if wanted and (not reader.received or reader.received[-1] < wanted[-1]):
                    behind += 1
            if not behind:
                break
            await asyncio.sleep(0.5)
        else:
            return False
        return True

    def check_readers(self) -> None:
        for reader in self.result.readers:
            after = reader.first_cursor or 0
            reader.comparison = self.ledger.compare(
                reader.channels, after, reader.received, self.ledger.max_seq
            )
            reader.wrong_records = sum(
                1
                for seq, number in reader.numbers.items()
                if self.ledger.record_of.get(seq, number) != number
            )

    async def check_stored(self) -> None:
        check = self.result.stored
        began = time.monotonic()
        user, password = DEV_NATS_GATEWAY

        async def quiet(_exc: Exception) -> None:
            pass

        try:
            nc = await nats.connect(
                self.stack.broker.url,
                user=user,
                password=password,
                inbox_prefix=inbox_prefix("gateway"),
                error_cb=quiet,
                name="logstream-soak-ledger",
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            check.error = f"connect: {exc}"
            return
        try:
            js = nc.jetstream(timeout=10)
            info = await js.stream_info(STREAM_NAME)
            check.stream_messages = info.state.messages
            last = info.state.last_seq
            stored: dict[int, int] = {}  # seq -> record number (soak records)
            other_ids = 0
            done = asyncio.Event()
            decoder = msgspec.json.Decoder()
            repeated = 0
            seen_numbers: set[int] = set()

            async def take(msg) -> None:
                nonlocal other_ids, repeated
                seq = msg.metadata.sequence.stream
                check.read += 1
                record_id = decoder.decode(msg.data).get("id") or ""
                if record_id.startswith("soak-"):
                    number = int(record_id[5:])
                    stored[seq] = number
                    if number in seen_numbers:
                        repeated += 1
                    seen_numbers.add(number)
                else:
                    other_ids += 1
                if seq >= last:
                    done.set()

            sub = await js.subscribe(
                "logs.>",
                cb=take,
                stream=STREAM_NAME,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
                pending_msgs_limit=1_000_000,
                pending_bytes_limit=1024 * 1024 * 1024,
            )
            if last:
                try:
                    await asyncio.wait_for(done.wait(), 60 + info.state.messages / 5000)
                except TimeoutError:
                    check.error = f"read {check.read} of {info.state.messages} records in time"
            await sub.unsubscribe()
            check.repeated_ids = repeated
            ledger = self.ledger
            for seq, number in ledger.record_of.items():
                found = stored.get(seq)
                if found is None:
                    check.acknowledged_missing += 1
                elif found != number:
                    check.wrong += 1
                else:
                    check.acknowledged_found += 1
            check.not_acknowledged = sum(1 for seq in stored if seq not in ledger.record_of)
            if other_ids:
                self.result.notes.append(f"{other_ids} stored records without a soak id")
        except (TimeoutError, nats.errors.Error) as exc:
            check.error = f"{type(exc).__name__}: {exc}"
        finally:
            check.seconds = time.monotonic() - began
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5)

    # -- everything --

    async def run(self) -> SoakResult:
        result = self.result
        config = self.config
        self.t0 = time.monotonic()
        broker = self.stack.broker
        sampler = Sampler(self.services(), broker.url, broker.monitor_url, self.t0)
        result.sampler = sampler
        sampling_stop = asyncio.Event()
        sampling = asyncio.create_task(self.sample(sampler, sampling_stop))
        result.readers = [
            ReaderStats("gateway-1, one channel", "gateway-1", [self.stable[0]]),
            ReaderStats("gateway-2, one channel", "gateway-2", [self.stable[1]]),
            ReaderStats("proxy, one channel", "proxy", [self.stable[2]]),
            ReaderStats("gateway-1, two channels", "gateway-1", [self.stable[3], self.stable[0]]),
            ReaderStats("gateway-2, workspace wildcard", "gateway-2", None),
        ]
        reading = [asyncio.create_task(self.read(reader)) for reader in result.readers]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(r.first_cursor is None for r in result.readers):
            await asyncio.sleep(0.05)
        load = [
            asyncio.create_task(self.publish()),
            asyncio.create_task(self.rotate()),
            asyncio.create_task(self.churn()),
            asyncio.create_task(self.stall("gateway-1", "replay-wildcard")),
            asyncio.create_task(self.stall("gateway-2", "live-wildcard")),
            asyncio.create_task(self.stall("proxy", "replay-channel")),
            asyncio.create_task(self.stall_whole_run("gateway-1")),
            asyncio.create_task(self.restart_broker()),
        ]
        progress = asyncio.create_task(self._progress())
        lag = asyncio.create_task(self.watch_lag())
        cpu_start = os.times()
        try:
            await asyncio.sleep(config.duration_s)
            result.duration_s = self.now()
            cpu_end = os.times()
            result.client_cpu = (
                cpu_end.user + cpu_end.system - cpu_start.user - cpu_start.system
            ) / max(result.duration_s, 1e-9)
            self.stop_load.set()
            print("  load stopped; finishing publishes and reconnects", flush=True)
            for task, outcome in zip(load, await asyncio.gather(*load, return_exceptions=True)):
                if isinstance(outcome, BaseException):
                    result.notes.append(
                        f"the task {task.get_coro().__name__} failed: {outcome!r}"  # type: ignore[union-attr]
                    )
            result.caught_up = await self.catch_up()
            print(f"  readers caught up: {result.caught_up}", flush=True)
        finally:
            self.stop_load.set()
            progress.cancel()
            lag.cancel()
            for task in reading + load:
                task.cancel()
            await asyncio.gather(*reading, *load, progress, lag, return_exceptions=True)
            sampling_stop.set()
            await asyncio.gather(sampling, return_exceptions=True)
        # After the load: where everything settles (ephemeral consumers expire 30 s after their
        # last use).
        for _ in range(AFTER_SAMPLES):
            await sampler.sample()
            await asyncio.sleep(AFTER_SAMPLE_S)
        await sampler.sample()
        await sampler.close()
        self.check_readers()
        print("  reading back LOGS for the ledger", flush=True)
        await self.check_stored()
        result.ledger_acknowledged = self.ledger.acknowledged
        result.ledger_records = len(self.ledger.record_of)
        result.ledger_repeated_acks = self.ledger.repeated_acks
        result.channels_published = len(self.ledger.by_channel)
        result.channels_opened = len(self.opened_channels)
        return result

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(60)
            churn, publish = self.result.churn, self.result.publish
            print(
                f"  t={self.now():5.0f}s acknowledged {publish.acknowledged:,} records, "
                f"{churn.started:,} reconnects ({churn.statuses.total():,} answered, "
                f"{churn.connect_errors.total()} failed to connect), "
                f"{len(self.result.stalls)} stalled readers, "
                f"{len(self.churn_tasks)} reconnects open",
                flush=True,
            )


_PROBLEM_MARKS = (
    '"level":"warning"',
    '"level":"error"',
    '"level":"critical"',
    "WARNING",
    "ERROR",
    "CRITICAL",
    "[WRN]",
    "[ERR]",
    "[FTL]",
    "Traceback",
)


def _is_problem(line: str) -> bool:
    return any(mark in line for mark in _PROBLEM_MARKS)


def _log_problems(stack: LogstreamStack) -> dict[str, list[str]]:
    """WARNING/ERROR lines of every service's log (and nats-server's [WRN]/[ERR]), per file."""
    found: dict[str, list[str]] = {}
    paths = [*sorted(stack.workdir.glob("*.log")), stack.broker.store_dir / "nats-server.log"]
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        bad = [line for line in lines if _is_problem(line)]
        if bad:
            found[path.name] = bad
    return found


async def soak_case(config: SoakConfig, workdir) -> SoakResult:
    stack = LogstreamStack(workdir, gateways=2)
    await asyncio.to_thread(stack.start)
    try:
        soak = _Soak(stack, config)
        result = await soak.run()
        result.services = {
            "nats-server": str(stack.broker.process.pid if stack.broker.process else "-"),
            **{
                service.name: str(service.pid())
                for service in soak.services()
                if service.name != "nats-server"
            },
        }
    finally:
        await asyncio.to_thread(stack.stop)
    result.log_lines = _log_problems(stack)
    return result
