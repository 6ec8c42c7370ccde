"""The reconnect storm (Logstream): a gateway restarts and all its streams resume at once.

A stack of its own (a fresh broker, one gateway). ``streams`` streams on ``channels`` channels
(stream ``k`` on channel ``k % channels``: 10 per channel at the defaults) are opened on the
gateway, and records are published straight into JetStream (as the ingest NATS user, in ingest's
layout) at ``rate`` records/s round-robin over the channels, without a pause until the end. After
``settle_s`` the gateway is restarted (SIGTERM, as a deploy does; the same port); the client
holds every stream closed meanwhile, and the moment ``/ready`` answers 200 every stream
reconnects at once with ``Last-Event-ID`` = the last id it received (no retry delay: the herd).

Measured:

- *live again*: a stream is live again once, on a connection made after the restart, it holds
  every record acknowledged on its channel before that connection's ``connected`` frame (the
  publisher keeps when each record was acknowledged): at the later of the two instants, in
  seconds from the gateway's readiness (max and p99: target, all within 10 s). A refused or
  failed attempt, or a connection ended before it caught up, is retried after 0.5 s with the
  last id, as a browser would, and the time counts;
- *delivery* of the records that reach streams already live, from the storm until the last
  stream is live (p99 target 100 ms), and before the restart and after the storm for comparison;
- *the ledger*: every stream's ids, before and after the restart, must be exactly its channel's
  acknowledged ids after its first cursor, in order: lost, repeated, unexpected, out of order;
- CPU of the gateway, nats-server and the client over the storm.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import os
import re
import subprocess
import sys
import time
import uuid
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.credentials import JETSTREAM_WRITER, WRITER_INBOX, user_token
from bench.machine import cpu_seconds, load_average
from bench.messages import bench_channel, stored_record_factory
from bench.nats_wire import NatsWire
from bench.publishers import IN_FLIGHT, MAX_PER_CALL, TICK_S, _ack_seq
from bench.storm_load import StormPool
from bench.window import percentile
from logstream.shared.channels import parse_channel, to_subject

__all__ = [
    "DRAIN_TIMEOUT_S",
    "LIVE_TARGET_S",
    "LIVE_TIMEOUT_S",
    "STORM_P99_TARGET_MS",
    "StormResult",
    "storm_case",
]

# The targets (issue 18): every stream live again within 10 s, p99 of live streams <= 100 ms.
LIVE_TARGET_S = 10.0
STORM_P99_TARGET_MS = 100.0
CLIENT_WORKERS = 2
# First opens in flight per client worker (the opening is not what is measured).
OPEN_IN_FLIGHT = 100
OPEN_TIMEOUT_S = 120.0
# How long the storm may take before the case gives up on the streams not live yet.
LIVE_TIMEOUT_S = 60.0
# After the last publish, until every stream holds its channel's last record.
DRAIN_TIMEOUT_S = 30.0
_POLL_S = 0.05
# Edge limits a gateway may have (flag -> value): a storm from one address must not be refused
# by them; passed only to a gateway whose --help lists the flag.
EDGE_FLAGS = {"--max-pending-per-address": "1000000", "--max-connections": "1000000"}


@dataclass
class StormResult:
    streams: int
    channels: int
    rate: float
    settle_s: float
    load: str
    gateway_flags: list[str] = field(default_factory=list)
    opened_s: float = 0.0
    sent: int = 0
    accepted: int = 0
    publish_errors: int = 0
    stop_s: float = 0.0  # SIGTERM to the process gone
    down_s: float = 0.0  # SIGTERM to /ready answering 200 again
    acked_while_down: int = 0
    caught_up: int = 0  # records streams read back after the storm (their backlog)
    most_caught_up: int = 0  # the most one stream read back
    live_s: list[float] = field(default_factory=list, repr=False)  # per stream live again
    not_live: int = 0
    storm_window_s: float = 0.0  # readiness to the last stream live (or giving up)
    storm_samples: int = 0
    storm_p50: float = float("nan")
    storm_p99: float = float("nan")
    before_p50: float = float("nan")
    before_p99: float = float("nan")
    after_p50: float = float("nan")
    after_p99: float = float("nan")
    expected: int = 0  # deliveries the ledger wants, all streams
    delivered: int = 0
    lost: int = 0
    repeated: int = 0
    unexpected: int = 0
    disordered: int = 0
    streams_wrong: int = 0
    cuts: int = 0
    overflows: int = 0
    retries: int = 0
    storm_failed: dict = field(default_factory=dict)
    cut: dict = field(default_factory=dict)  # server-ended streams by its last word
    log_lines: int = 0  # the gateway's log lines warning or worse
    log_kinds: list[tuple[int, str]] = field(default_factory=list)  # (count, kind), most first
    storm_cpu_s: dict = field(default_factory=dict)  # group -> CPU seconds over the storm
    storm_cpu_window_s: float = 0.0  # readiness until the wait for the streams ended
    steady_cpu: dict = field(default_factory=dict)  # group -> share of a core before the restart
    problems: list[str] = field(default_factory=list)

    @property
    def live_max(self) -> float:
        return max(self.live_s) if self.live_s and not self.not_live else float("inf")

    @property
    def live_p50(self) -> float:
        return self._live_at(0.5)

    @property
    def live_p99(self) -> float:
        return self._live_at(0.99)

    def _live_at(self, share: float) -> float:
        never = [float("inf")] * self.not_live
        return percentile(self.live_s + never, share)

    @property
    def ledger_ok(self) -> bool:
        return not (self.lost or self.repeated or self.unexpected or self.disordered)

    @property
    def live_met(self) -> bool:
        return self.live_max <= LIVE_TARGET_S

    @property
    def p99_met(self) -> bool:
        return self.storm_p99 <= STORM_P99_TARGET_MS  # NaN (no sample): not met

    @property
    def passed(self) -> bool:
        return self.live_met and self.p99_met and self.ledger_ok and not self.problems


class StormPublisher:
    """Stored records straight into JetStream, message ``seq`` on channel ``seq % channels``;
    keeps every acknowledged stream sequence per channel (the ledger)."""

    def __init__(self, wire: NatsWire, channels: list[str]) -> None:
        self._wire = wire
        self._subjects = [to_subject(parse_channel(c)).encode() for c in channels]
        self._records = [stored_record_factory(c) for c in channels]
        self.acked = [array("q") for _ in channels]
        self.acked_ns = [array("q") for _ in channels]  # when each was acknowledged (about)
        self.accepted = self.errors = 0

    @classmethod
    async def connect(cls, nats_url: str, channels: list[str]) -> StormPublisher:
        return cls(await NatsWire.connect(nats_url, JETSTREAM_WRITER, WRITER_INBOX), channels)

    async def publish(self, first_seq: int, count: int) -> int:
        n, seqs = len(self._subjects), range(first_seq, first_seq + count)
        replies = await self._wire.request_each(
            [(self._subjects[seq % n], self._records[seq % n](seq)) for seq in seqs]
        )
        accepted, now = 0, time.monotonic_ns()  # (the batch's last reply: a little late)
        for seq, reply in zip(seqs, replies):
            if reply and b'"error"' not in reply:
                self.acked[seq % n].append(_ack_seq(reply))
                self.acked_ns[seq % n].append(now)
                accepted += 1
        self.accepted += accepted
        self.errors += count - accepted
        return accepted

    def last_acked(self) -> list[int]:
        """Per channel, the largest sequence acknowledged so far (0: none)."""
        return [max(acked, default=0) for acked in self.acked]

    async def close(self) -> None:
        await self._wire.close()


async def _publish_until(publish, rate: float, stop: asyncio.Event) -> int:
    """``bench.publishers.pace`` without an end: ``rate`` messages/s until ``stop`` is set."""
    sent = 0
    pending: set[asyncio.Task] = set()
    start = time.monotonic()
    while not stop.is_set():
        due = min(int(rate * (time.monotonic() - start)) + 1, sent + MAX_PER_CALL) - sent
        if due > 0 and len(pending) < IN_FLIGHT:
            call = asyncio.create_task(publish(sent, due))
            pending.add(call)
            call.add_done_callback(pending.discard)
            sent += due
        await asyncio.sleep(TICK_S)
    await asyncio.gather(*pending)
    return sent


def edge_flags() -> list[str]:
    """The edge-limit flags this gateway has, each with a value no storm reaches."""
    answer = subprocess.run(
        [sys.executable, "-m", "logstream", "gateway", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = []
    for flag, value in EDGE_FLAGS.items():
        if re.search(re.escape(flag) + r"(?![\w-])", answer.stdout):
            found += [flag, value]
    return found


def log_kinds(path: Path, limit: int = 8) -> tuple[int, list[tuple[int, str]]]:
    """(the log's lines warning or worse, the most frequent kinds with their counts): a kind
    is the level, logger, message, audit rule and the exception (outermost first, then what
    it was raised from), so a wrapped broker error shows its cause."""
    kinds: Counter[str] = Counter()
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return 0, []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            entry = {"level": "error" if "Traceback" in line else "", "msg": line[:160]}
        if not isinstance(entry, dict) or entry.get("level") not in (
            "warning",
            "error",
            "critical",
        ):
            continue
        # The exception lines of a traceback (the root cause first when chained).
        exc = [
            text
            for text in str(entry.get("exc") or "").splitlines()
            if text.strip() and not text.startswith((" ", "Traceback", "The above", "During "))
        ]
        kind = " ".join(
            str(part)
            for part in (
                entry.get("level"),
                entry.get("logger", ""),
                str(entry.get("msg", "")).strip()[:120],
                entry.get("rule", ""),
                " <- ".join(dict.fromkeys(text[:160] for text in reversed(exc))),
            )
            if part
        )
        kinds[kind] += 1
    return sum(kinds.values()), [(n, kind) for kind, n in kinds.most_common(limit)]


def _stack_class(base, flags: list[str]):
    """``base`` (``bench.stack.LogstreamStack``) whose gateways get ``flags`` too."""

    class StormStack(base):
        def _service(self, name: str, args: list[str]):
            return super()._service(name, [*args, *flags] if name == "gateway" else args)

    return StormStack


def _cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}


def _groups(stack, pool: StormPool) -> dict[str, list[int]]:
    return {
        "gateway": [stack.gateways[0].process.pid],
        "nats-server": [stack.broker.process.pid],
        "client": pool.pids,
    }


async def _until(pool: StormPool, done, timeout_s: float, finals=None) -> dict:
    """Poll the pool's status until ``done(status)`` or ``timeout_s``; the last status."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await asyncio.to_thread(pool.status, finals)
        if done(status) or time.monotonic() > deadline:
            return status
        await asyncio.sleep(_POLL_S)


async def storm_case(stack_class, workdir, args) -> StormResult:
    """``stack_class``: ``bench.stack.LogstreamStack``, started here with one fresh gateway."""
    streams, count = args.storm_streams, args.storm_channels
    result = StormResult(streams, count, args.storm_rate, args.storm_s, load_average())
    result.gateway_flags = await asyncio.to_thread(edge_flags)
    stack = _stack_class(stack_class, result.gateway_flags)(workdir / "storm", gateways=1)
    pool: StormPool | None = None
    publisher: StormPublisher | None = None
    try:
        await asyncio.to_thread(stack.start)
        pool = StormPool(CLIENT_WORKERS, OPEN_IN_FLIGHT)
        tag = uuid.uuid4().hex[:6]
        channels = [bench_channel(f"storm-{tag}-{i}") for i in range(count)]
        port, token = stack.gateways[0].port, user_token()
        heads = [
            f"GET /api/logs/stream?channels={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n".encode()
            for channel in channels
        ]
        began = time.monotonic()
        await asyncio.to_thread(
            pool.open, [(k, k % count, "127.0.0.1", port, heads[k % count]) for k in range(streams)]
        )
        opened = await _until(pool, lambda s: s["connected"] >= streams, OPEN_TIMEOUT_S)
        result.opened_s = time.monotonic() - began
        print(
            f"  {opened['connected']:,} of {streams:,} streams on {count:,} channels open in "
            f"{result.opened_s:.1f} s {dict(opened['failed']) or ''}",
            flush=True,
        )
        if opened["connected"] < streams:
            result.problems.append(
                f"only {opened['connected']:,} of {streams:,} streams opened in "
                f"{OPEN_TIMEOUT_S:g} s: the storm was not measured"
            )
            return result
        publisher = await StormPublisher.connect(stack.broker.url, channels)
        stop = asyncio.Event()
        publishing = asyncio.create_task(_publish_until(publisher.publish, args.storm_rate, stop))
        marks: dict[str, int] = {}
        try:
            targets = await _storm(stack, pool, publisher, result, args, marks)
        finally:
            stop.set()
            result.sent = await publishing
        marks["published"] = time.monotonic_ns()
        result.accepted, result.publish_errors = publisher.accepted, publisher.errors
        finals = publisher.last_acked()
        drained = await _until(
            pool, lambda s: s["holding_finals"] >= streams, DRAIN_TIMEOUT_S, finals
        )
        if drained["holding_finals"] < streams:
            result.problems.append(
                f"{streams - drained['holding_finals']:,} streams did not receive their "
                f"channel's last record within {DRAIN_TIMEOUT_S:g} s of the last publish"
            )
        report = await asyncio.to_thread(pool.report)
        _account(result, report, publisher, marks, targets)
    finally:
        if publisher is not None:
            await publisher.close()
        if pool is not None:
            await asyncio.to_thread(pool.shutdown)
        await asyncio.to_thread(stack.stop)
        if stack.gateways:
            result.log_lines, result.log_kinds = log_kinds(stack.gateways[0].log_path)
    _print(result)
    return result


async def _storm(
    stack, pool: StormPool, publisher: StormPublisher, result, args, marks: dict[str, int]
) -> list[int]:
    """The steady window, the restart, the storm and the window after it; fills ``marks``
    (monotonic ns of each step) and returns the storm's targets (per channel, the last record
    acknowledged when the streams were sent back)."""
    groups = _groups(stack, pool)
    await asyncio.sleep(0.5)  # the first records reach every stream: the steady window starts
    marks["steady"] = time.monotonic_ns()
    cpu, me = _cpu(groups), os.times()
    await asyncio.sleep(args.storm_s)
    used, spent = _cpu(groups), os.times()
    wall = (time.monotonic_ns() - marks["steady"]) / 1e9
    result.steady_cpu = {n: (used[n] - cpu[n]) / wall for n in groups}
    result.steady_cpu["publisher"] = (spent.user + spent.system - me.user - me.system) / wall
    await asyncio.to_thread(pool.hold)
    marks["stop"] = time.monotonic_ns()
    acked = publisher.accepted
    stopped, ready = await asyncio.to_thread(stack.restart_gateway, 0)
    marks["ready"] = ready
    result.stop_s = (stopped - marks["stop"]) / 1e9
    result.down_s = (ready - marks["stop"]) / 1e9
    result.acked_while_down = publisher.accepted - acked
    groups = _groups(stack, pool)  # the new gateway process
    cpu = _cpu(groups)
    targets = publisher.last_acked()
    marks["storm"] = time.monotonic_ns()
    await asyncio.to_thread(pool.storm)
    status = await _until(pool, lambda s: s["live"] >= result.streams, LIVE_TIMEOUT_S)
    marks["storm_end"] = time.monotonic_ns()
    used = _cpu(groups)
    result.storm_cpu_s = {n: used[n] - cpu[n] for n in groups}
    result.storm_cpu_window_s = (marks["storm_end"] - ready) / 1e9
    print(
        f"  gateway restarted: down {result.down_s:.2f} s (stopped in {result.stop_s:.2f} s), "
        f"{status['live']:,} of {result.streams:,} streams live again "
        f"{(marks['storm_end'] - ready) / 1e9:.2f} s after ready {dict(status['failed']) or ''}",
        flush=True,
    )
    await asyncio.sleep(args.storm_s)  # the after window: publishing goes on
    return targets


def _latency(report: dict, start: int, end: int, after_live: bool) -> list[float]:
    """Delivery latencies (ms) of the records that arrived in [start, end), only those to
    streams already live (after their live instant) with ``after_live``."""
    found: list[float] = []
    for stream in report["streams"].values():
        live = stream["live_ns"] if after_live else 0
        if after_live and not live:
            continue
        arrivals, stamps = array("q"), array("q")
        arrivals.frombytes(stream["arrivals"])
        stamps.frombytes(stream["stamps"])
        low = bisect.bisect_left(arrivals, max(start, live + 1 if after_live else start))
        high = bisect.bisect_left(arrivals, end)
        found.extend((arrivals[i] - stamps[i]) / 1e6 for i in range(low, high) if stamps[i])
    return found


class _AckedBefore:
    """Per channel: the largest sequence acknowledged before a given instant."""

    def __init__(self, publisher: StormPublisher) -> None:
        self._times: list[list[int]] = []
        self._highest: list[list[int]] = []
        for seqs, times in zip(publisher.acked, publisher.acked_ns):
            pairs = sorted(zip(times, seqs))
            self._times.append([t for t, _ in pairs])
            self._highest.append(list(itertools.accumulate((s for _, s in pairs), max)))

    def __call__(self, channel: int, instant: int) -> int:
        index = bisect.bisect_left(self._times[channel], instant)
        return self._highest[channel][index - 1] if index else 0


def _live_at(stream: dict, seqs: array, arrivals: array, acked_before: _AckedBefore) -> int:
    """When the stream was live again (monotonic ns; 0: never): the first connection after the
    restart on which it came to hold every record acknowledged on its channel before that
    connection's ``connected``, at the later of ``connected`` and that record's arrival."""
    conns, ends = array("q"), array("q")
    conns.frombytes(stream["conns"])
    ends.frombytes(stream["ends"])
    for connected, ended in zip(conns, ends):
        wanted = acked_before(stream["channel"], connected)
        start = bisect.bisect_left(arrivals, connected)
        if (seqs[start - 1] if start else 0) >= wanted:
            return connected  # it had them all already
        stop = bisect.bisect_left(arrivals, ended) if ended else len(arrivals)
        for index in range(start, stop):
            if seqs[index] >= wanted:
                return max(connected, arrivals[index])
    return 0


def _account(
    result: StormResult, report: dict, publisher: StormPublisher, marks: dict, targets: list[int]
) -> None:
    acked = [sorted(seqs) for seqs in publisher.acked]
    acked_before = _AckedBefore(publisher)
    ready = marks["ready"]
    for stream in report["streams"].values():
        seqs, arrivals = array("q"), array("q")
        seqs.frombytes(stream["seqs"])
        arrivals.frombytes(stream["arrivals"])
        stream["live_ns"] = _live_at(stream, seqs, arrivals, acked_before)
        wanted = acked[stream["channel"]]
        wanted = wanted[bisect.bisect_right(wanted, stream["cursor"]) :]
        result.expected += len(wanted)
        result.delivered += len(seqs)
        got = list(seqs)
        if got != wanted:
            result.streams_wrong += 1
            have, want = set(got), set(wanted)
            result.lost += len(want - have)
            result.repeated += len(got) - len(have)
            result.unexpected += len(have - want)
            result.disordered += sum(b < a for a, b in itertools.pairwise(got))
        result.cuts += stream["cuts"]
        result.overflows += stream["overflows"]
        result.retries += stream["retries"]
        if stream["live_ns"]:
            result.live_s.append((stream["live_ns"] - ready) / 1e9)
        else:
            result.not_live += 1
        if stream["storm_sent_ns"] and targets:
            first = bisect.bisect_left(arrivals, stream["storm_sent_ns"])
            target = targets[stream["channel"]]
            back = sum(1 for seq in got[first:] if seq <= target)
            result.caught_up += back
            result.most_caught_up = max(result.most_caught_up, back)
    result.storm_failed = dict(report["storm_failed"])
    result.cut = dict(report["cut"])
    storm_end = ready + int(result.live_max * 1e9) if not result.not_live else marks["storm_end"]
    result.storm_window_s = (storm_end - ready) / 1e9
    storm = _latency(report, ready, storm_end + 1, after_live=True)
    result.storm_samples = len(storm)
    result.storm_p50, result.storm_p99 = percentile(storm, 0.5), percentile(storm, 0.99)
    before = _latency(report, marks["steady"], marks["stop"], after_live=False)
    result.before_p50, result.before_p99 = percentile(before, 0.5), percentile(before, 0.99)
    after = _latency(report, storm_end + 1, marks["published"], after_live=False)
    result.after_p50, result.after_p99 = percentile(after, 0.5), percentile(after, 0.99)


def _print(result: StormResult) -> None:
    cpu = ", ".join(f"{n} {s:.1f}" for n, s in result.storm_cpu_s.items())
    print(
        f"  storm: live again p50 {result.live_p50:.2f} s p99 {result.live_p99:.2f} s max "
        f"{result.live_max:.2f} s ({result.not_live} never); delivery p99 of live streams "
        f"{result.storm_p99:.1f} ms ({result.storm_samples:,} records; before "
        f"{result.before_p99:.1f}, after {result.after_p99:.1f}); ledger: "
        f"{result.delivered:,}/{result.expected:,}, lost {result.lost}, repeated "
        f"{result.repeated}, unexpected {result.unexpected}, out of order {result.disordered}"
        f"; read back {result.caught_up:,}; retries {result.retries} "
        f"{result.storm_failed or ''}; cut {result.cuts} {result.cut or ''}; gateway log "
        f"lines warning or worse {result.log_lines}; CPU s over the storm: {cpu}; "
        f"{'pass' if result.passed else 'FAIL'}",
        flush=True,
    )
    for count, kind in result.log_kinds[:4]:
        print(f"  gateway log: {count:,} x {kind[:300]}", flush=True)
    for problem in result.problems:
        print(f"  problem: {problem}", flush=True)
