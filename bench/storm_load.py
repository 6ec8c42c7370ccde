"""Subscribers for the reconnect storm: each stream keeps the id of every record it got, and all
of them resume with ``Last-Event-ID`` at one command.

A sibling of ``bench/load.py``'s ``SubscriberPool`` and ``bench/channel_pool.py``'s
``ChannelPool`` (same technique: spawned processes, raw sockets on one ``epoll``, no HTTP
library), for what neither keeps: every record's id, send time and arrival time per stream (the
ledger and the latencies are worked out by the parent afterwards), the ``connected`` cursor,
and the stream's own last id, which it sends back as ``Last-Event-ID`` when it reconnects.

Key ``k`` lives in worker ``k % workers``. A stream's life:

- ``open``: the first connect, a bounded number in flight per worker;
- a stream the server ends (or refuses, or a connect that fails) is opened again after
  ``RETRY_S`` with its last id, as a browser's ``EventSource`` does, unless the pool is
  *holding*: then it stays closed (the gateway is being restarted on purpose);
- ``storm()``: every stream of every worker connects at once (non-blocking connects, no bound
  in flight: the herd), each with ``Last-Event-ID`` = the last id it received. From then on
  each connection's ``connected`` time and end time are kept (the parent works out from them
  and the publisher's ledger when the stream was caught up), and the worker notes the first
  record sent after its connection's ``connected`` (necessarily after the whole backlog):
  ``status()`` counts those streams, so the parent knows when to stop waiting.

The body is de-chunked (the gateway answers HTTP/1.1 chunked) and split into SSE frames; a
``log`` frame gives its ``id`` and the message's send time (``bench.messages``), both kept with
the arrival time (CLOCK_MONOTONIC, one clock for every process).
"""

from __future__ import annotations

import errno
import heapq
import os
import select
import socket
import time
from array import array
from collections import Counter
from typing import Any

from bench.load import WorkerProcesses
from bench.messages import MARK, stamp_at

__all__ = ["RETRY_S", "StormPool"]

# A browser's EventSource waits the gateway's ``retry`` (2 s; 500 ms after a shutdown) before
# reconnecting; a refused or failed attempt of the storm is tried again after this.
RETRY_S = 0.5
_RECV_BYTES = 256 * 1024
_IDLE_POLL_S = 0.05
_LOG_EVENT = b"event: log"
_CONNECTED = b"event: connected"
_OVERFLOW = b"event: overflow"

# Stream states.
_CLOSED, _CONNECTING, _HEAD, _BODY = 0, 1, 2, 3


class _Stream:
    __slots__ = (
        "arrivals",
        "body",
        "channel",
        "connected",
        "conns",
        "cursor",
        "cuts",
        "ends",
        "head",
        "host",
        "key",
        "last",
        "left",
        "live_ns",
        "note",
        "opens",
        "overflows",
        "pending_first",
        "port",
        "raw",
        "request",
        "retries",
        "seqs",
        "sock",
        "stamps",
        "state",
        "storm_sent_ns",
    )

    def __init__(self, key: int, channel: int, host: str, port: int, request: bytes) -> None:
        self.key, self.channel, self.host, self.port = key, channel, host, port
        self.request = request  # the request head without its final blank line
        self.sock: socket.socket | None = None
        self.state = _CLOSED
        self.head = self.raw = self.body = b""
        self.left = 0  # bytes of the current chunk still to come, its CRLF included
        self.connected = False
        self.note = ""  # the last comment or final event seen: why the server ended it
        self.cursor = -1  # the first `connected` id: the stream gets every record after it
        self.last = -1  # the last id received (-1: none yet)
        self.seqs, self.arrivals, self.stamps = array("q"), array("q"), array("q")
        self.opens = self.retries = self.cuts = self.overflows = 0
        self.pending_first = True  # not connected yet since ``open``: counted in flight
        self.storm_sent_ns = self.live_ns = 0
        # Since the storm: each connection's `connected` time and end time (0: still open).
        self.conns, self.ends = array("q"), array("q")


class _Worker:
    def __init__(self, pipe, in_flight: int) -> None:
        self.pipe, self.in_flight = pipe, in_flight
        self.buffer = bytearray(_RECV_BYTES)
        self.view = memoryview(self.buffer)
        self.epoll = select.epoll()
        self.epoll.register(pipe.fileno(), select.EPOLLIN)
        self.streams: dict[int, _Stream] = {}  # key -> stream
        self.by_fd: dict[int, _Stream] = {}
        self.queue: list[_Stream] = []  # first opens not started yet (bounded in flight)
        self.timers: list[tuple[float, int, int]] = []  # (due, order, key): reconnects
        self.order = 0
        self.opening = 0  # first opens under way
        self.holding = False
        self.storming = False  # since ``storm``: connections are timed
        self.failed: Counter[str] = Counter()
        self.storm_failed: Counter[str] = Counter()
        self.cut: Counter[str] = Counter()  # streams the server ended, by its last word
        self.cpu_mark = _cpu()

    def run(self) -> None:
        pipe_fd = self.pipe.fileno()
        while True:
            self._start_opens()
            timeout = _IDLE_POLL_S
            if self.timers:
                timeout = max(0.0, min(timeout, self.timers[0][0] - time.monotonic()))
            events = self.epoll.poll(timeout, len(self.by_fd) + 2)
            command = False
            for fd, _ in events:
                if fd == pipe_fd:
                    command = True
                    continue
                stream = self.by_fd.get(fd)
                if stream is None:
                    continue
                if stream.state == _CONNECTING:
                    self._connected(stream)
                else:
                    self._read(stream)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, key = heapq.heappop(self.timers)
                stream = self.streams[key]
                if stream.state == _CLOSED and not self.holding:
                    stream.retries += 1
                    self.opening += stream.pending_first
                    self._connect(stream)
            if command:
                name, *args = self.pipe.recv()
                if name == "exit":
                    return
                self.pipe.send(getattr(self, name)(*args))

    # -- commands ----------------------------------------------------------------------------

    def open(self, items: list) -> int:
        """Items ``(key, channel index, host, port, request head)``: connected a bounded
        number at a time."""
        for key, channel, host, port, request in items:
            stream = _Stream(key, channel, host, port, request)
            self.streams[key] = stream
            self.queue.append(stream)
        self.queue.reverse()  # popped from the end: in the order given
        return len(self.queue)

    def hold(self) -> int:
        """From now on a stream that ends stays closed until ``storm``."""
        self.holding = True
        return sum(s.state != _CLOSED for s in self.streams.values())

    def storm(self) -> int:
        """Every stream connects now, resuming after its last id."""
        self.holding = False
        self.storming = True
        self.timers.clear()
        self.storm_failed.clear()
        for stream in self.streams.values():
            if stream.sock is not None:  # (the server ended them all: none should be open)
                self._close(stream)
            stream.live_ns = 0
            del stream.conns[:], stream.ends[:]
        for stream in self.streams.values():
            stream.storm_sent_ns = time.monotonic_ns()
            self._connect(stream)
        return len(self.streams)

    def status(self, finals: list[int] | None = None) -> dict:
        """Counts: connected streams, live (since the storm), failures; with ``finals`` (per
        channel, the last record acknowledged), how many streams hold theirs."""
        streams = self.streams.values()
        found = {
            "streams": len(self.streams),
            "connected": sum(s.connected for s in streams),
            "live": sum(s.live_ns > 0 for s in streams),
            "waiting": len(self.queue) + self.opening,
            "failed": dict(self.failed),
            "received": sum(len(s.seqs) for s in streams),
        }
        if finals is not None:
            found["holding_finals"] = sum(s.last >= finals[s.channel] for s in streams)
        return found

    def report(self) -> dict:
        return {
            "streams": {
                s.key: {
                    "channel": s.channel,
                    "cursor": s.cursor,
                    "seqs": s.seqs.tobytes(),
                    "arrivals": s.arrivals.tobytes(),
                    "stamps": s.stamps.tobytes(),
                    "opens": s.opens,
                    "retries": s.retries,
                    "cuts": s.cuts,
                    "overflows": s.overflows,
                    "storm_sent_ns": s.storm_sent_ns,
                    "conns": s.conns.tobytes(),
                    "ends": s.ends.tobytes(),
                    "live_ns": s.live_ns,
                }
                for s in self.streams.values()
            },
            "failed": dict(self.failed),
            "storm_failed": dict(self.storm_failed),
            "cut": dict(self.cut),
            "cpu_s": _cpu() - self.cpu_mark,
        }

    def close_all(self) -> int:
        self.holding = True
        self.queue.clear()
        self.timers.clear()
        for stream in self.streams.values():
            if stream.sock is not None:
                self._close(stream)
        self.streams.clear()
        self.failed.clear()
        return 0

    # -- connecting --------------------------------------------------------------------------

    def _start_opens(self) -> None:
        while self.queue and self.opening < self.in_flight:
            stream = self.queue.pop()
            self.opening += 1
            self._connect(stream)

    def _connect(self, stream: _Stream) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex((stream.host, stream.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._failed(stream, f"connect: {errno.errorcode.get(code, code)}")
            return
        stream.sock, stream.state = sock, _CONNECTING
        stream.head = stream.raw = stream.body = b""
        stream.left, stream.connected, stream.note = 0, False, ""
        self.by_fd[sock.fileno()] = stream
        self.epoll.register(sock.fileno(), select.EPOLLOUT)

    def _connected(self, stream: _Stream) -> None:
        sock = stream.sock
        assert sock is not None
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._close(stream)
            self._failed(stream, f"connect: {errno.errorcode.get(code, code)}")
            return
        resume = b"Last-Event-ID: %d\r\n" % stream.last if stream.last >= 0 else b""
        request = stream.request + resume + b"\r\n"
        try:
            sent = sock.send(request)
        except OSError as exc:
            sent = -1
            reason = f"send: {type(exc).__name__}"
        else:
            reason = "send: partial"
        if sent != len(request):
            self._close(stream)
            self._failed(stream, reason)
            return
        stream.state = _HEAD
        stream.opens += 1
        self.epoll.modify(sock.fileno(), select.EPOLLIN)

    def _failed(self, stream: _Stream, reason: str) -> None:
        """An attempt that did not get as far as ``connected``: tried again after RETRY_S."""
        self.failed[reason] += 1
        if self.storming:
            self.storm_failed[reason] += 1
        self.opening -= stream.pending_first  # (in flight again when it is retried)
        self._retry_later(stream)

    def _retry_later(self, stream: _Stream) -> None:
        if self.holding:
            return
        self.order += 1
        heapq.heappush(self.timers, (time.monotonic() + RETRY_S, self.order, stream.key))

    def _close(self, stream: _Stream) -> None:
        sock = stream.sock
        if sock is None:
            return
        if stream.connected and stream.ends and not stream.ends[-1]:
            stream.ends[-1] = time.monotonic_ns()
        fd = sock.fileno()
        self.by_fd.pop(fd, None)
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        sock.close()
        stream.sock, stream.state, stream.connected = None, _CLOSED, False

    def _ended(self, stream: _Stream, reason: str) -> None:
        """The server ended the stream or the connection broke."""
        was_connected = stream.connected
        self._close(stream)
        if not was_connected:
            self._failed(stream, reason)
            return
        if not self.holding:
            stream.cuts += 1
            self.cut[stream.note or reason] += 1
            self._retry_later(stream)

    # -- reading -----------------------------------------------------------------------------

    def _read(self, stream: _Stream) -> None:
        sock = stream.sock
        assert sock is not None
        try:
            size = sock.recv_into(self.buffer)
        except BlockingIOError:
            return
        except OSError:
            size = 0
        now = time.monotonic_ns()
        if not size:
            closed = "closed after 200, before connected" if stream.state == _BODY else "closed"
            self._ended(stream, closed if not stream.connected else "closed")
            return
        data = bytes(self.view[:size])
        if stream.state == _HEAD:
            joined = stream.head + data
            end = joined.find(b"\r\n\r\n")
            if end < 0:
                stream.head = joined
                return
            status = int(joined[9:12])
            if status != 200:
                self._ended(stream, f"HTTP {status}")
                return
            stream.state, stream.head = _BODY, b""
            data = joined[end + 4 :]
        if data and self._body(stream, data, now):
            self._ended(stream, "ended" if stream.connected else "ended before connected")

    def _body(self, stream: _Stream, data: bytes, now: int) -> bool:
        """De-chunk ``data`` and take its complete SSE frames; True when the body ended."""
        raw = stream.raw + data if stream.raw else data
        stream.raw = b""
        position, size, parts, ended = 0, len(raw), [], False
        while position < size:
            if stream.left == 0:
                end = raw.find(b"\r\n", position)
                if end < 0:
                    stream.raw = raw[position:]
                    break
                length = int(raw[position:end], 16)
                position = end + 2
                if length == 0:
                    ended = True
                    break
                stream.left = length + 2
            take = min(stream.left, size - position)
            data_left = stream.left - 2
            if data_left > 0:
                parts.append(raw[position : position + min(take, data_left)])
            stream.left -= take
            position += take
        if parts:
            body = stream.body + b"".join(parts) if stream.body else b"".join(parts)
            frames = body.split(b"\n\n")
            stream.body = frames.pop()
            for frame in frames:
                self._frame(stream, frame, now)
        return ended

    def _frame(self, stream: _Stream, frame: bytes, now: int) -> None:
        if frame.startswith(b"id: "):
            line_end = frame.find(b"\n")
            if frame.startswith(_LOG_EVENT, line_end + 1):
                seq = int(frame[4:line_end])
                stream.seqs.append(seq)
                stream.arrivals.append(now)
                mark = frame.find(MARK, line_end)
                stamp = stamp_at(frame, mark) if mark >= 0 else None
                stream.stamps.append(stamp if stamp is not None else 0)
                stream.last = seq
                if stream.conns and not stream.live_ns and stamp and stamp >= stream.conns[-1]:
                    stream.live_ns = now  # sent after `connected`: the backlog is all in
                return
        if frame.startswith(b": ") and frame != b": hb":
            stream.note = frame.split(b"\n", 1)[0][2:62].decode(errors="replace")
        fields: dict[bytes, bytes] = {}
        for line in frame.split(b"\n"):
            name, _, value = line.partition(b": ")
            if name and not name.startswith(b":"):
                fields[name] = value
        event = fields.get(b"event")
        if event == b"connected":
            stream.connected = True
            if stream.pending_first:
                stream.pending_first = False
                stream.cursor = int(fields[b"id"])
                self.opening -= 1
            if self.storming:
                stream.conns.append(now)
                stream.ends.append(0)
        elif event in (b"overflow", b"auth-expired"):
            stream.note = event.decode()
            stream.overflows += event == b"overflow"
            if fields.get(b"id"):  # the gateway says where to resume
                stream.last = int(fields[b"id"])


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _worker_main(pipe, in_flight: int) -> None:
    _Worker(pipe, in_flight).run()


class StormPool(WorkerProcesses):
    """``workers`` subscriber processes; stream ``key`` lives in worker ``key % workers``.

    An item is ``(key, channel index, host, port, request head)``, the head without its final
    blank line (the worker adds ``Last-Event-ID`` when it resumes).
    """

    def __init__(self, workers: int = 2, in_flight: int = 100) -> None:
        super().__init__(_worker_main, [(in_flight,)] * workers)

    def open(self, items: list) -> None:
        shares: list[list] = [[] for _ in self._pipes]
        for item in items:
            shares[item[0] % len(shares)].append(item)
        for pipe, share in zip(self._pipes, shares):
            pipe.send(("open", share))
        for pipe in self._pipes:
            pipe.recv()

    def hold(self) -> None:
        self._all("hold")

    def storm(self) -> None:
        """Every worker reconnects all its streams at once (the command reaches each in turn,
        a pipe write apart)."""
        self._all("storm")

    def status(self, finals: list[int] | None = None) -> dict:
        total: dict[str, Any] = {"failed": Counter()}
        for part in self._all("status", finals):
            for name, value in part.items():
                if name == "failed":
                    total["failed"].update(value)
                else:
                    total[name] = total.get(name, 0) + value
        return total

    def report(self) -> dict:
        total: dict[str, Any] = {
            "streams": {},
            "failed": Counter(),
            "storm_failed": Counter(),
            "cut": Counter(),
            "cpu_s": [],
        }
        for part in self._all("report"):
            total["streams"].update(part["streams"])
            total["failed"].update(part["failed"])
            total["storm_failed"].update(part["storm_failed"])
            total["cut"].update(part["cut"])
            total["cpu_s"].append(part["cpu_s"])
        return total

    def close_all(self) -> None:
        self._all("close_all")
