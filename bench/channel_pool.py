"""Subscribers on many channels: per-stream counts, connect latency, and churn on a schedule.

A sibling of ``bench/load.py``'s ``SubscriberPool`` for the channels case, which needs what that
pool does not keep: each stream's own count, each stream's connect latency (GET sent to the
gateway's ``event: connected`` frame, or to Nchan's response head), opens with a bound on those
in flight, and closes and opens at set times during a window (churn), run by the workers on
their own clock so the parent's publishing does not delay them.

Key ``k`` lives in worker ``k % workers``: a process (spawn) with its raw sockets and its command
pipe on one ``epoll``. Messages are counted by counting ``MARK`` in the received bytes; every
message's send time is parsed (a few thousand messages/s in all), bytes read as they arrive.
"""

from __future__ import annotations

import heapq
import select
import socket
import time
from array import array
from collections import Counter, deque
from typing import Any

from bench.load import WorkerProcesses
from bench.messages import MARK, stamp_at

__all__ = ["CONNECTED", "ChannelPool"]

# What the gateway's first frame says: its time is the stream's connect time.
CONNECTED = b"event: connected"
_OVERFLOW = b"event: overflow"
_RECV_BYTES = 64 * 1024
_MAX_SAMPLES = 1_000_000
_IDLE_POLL_S = 0.05


class _Conn:
    __slots__ = (
        "abandoned",
        "count",
        "cut",
        "key",
        "marker",
        "overflow",
        "pending",
        "ready_ms",
        "sent_ns",
        "sock",
        "state",
        "tail",
    )

    def __init__(self, sock: socket.socket, key: int, marker: bytes | None) -> None:
        self.sock, self.key, self.marker = sock, key, marker
        self.state = 0  # 0: waiting for the head, 1: for the marker, 2: connected
        self.pending, self.count, self.tail = b"", 0, b""
        self.sent_ns, self.ready_ms = 0, -1.0
        self.overflow = self.cut = self.abandoned = False  # abandoned: closed unconnected


class _Worker:
    def __init__(self, pipe, in_flight: int) -> None:
        self.pipe, self.in_flight = pipe, in_flight
        self.buffer = bytearray(_RECV_BYTES)
        self.view = memoryview(self.buffer)
        self.epoll = select.epoll()
        self.epoll.register(pipe.fileno(), select.EPOLLIN)
        self.conns: dict[int, _Conn] = {}  # fd -> open connection
        self.by_key: dict[int, _Conn] = {}  # every stream opened, open or not
        self.queue: deque = deque()  # (key, host, port, request, marker) not started yet
        self.connecting = 0
        self.schedule: list = []  # heap of (due ns, order, action, argument)
        self.order = 0
        self.failed: Counter[str] = Counter()
        self.last_ready_ns = 0
        self.reset()

    def reset(self) -> None:
        for conn in self.by_key.values():
            conn.count = 0
        self.latency = array("d")

    def run(self) -> None:
        pipe_fd = self.pipe.fileno()
        while True:
            self._start_opens()
            timeout = _IDLE_POLL_S
            if self.schedule:
                timeout = max(0.0, min(timeout, (self.schedule[0][0] - time.monotonic_ns()) / 1e9))
            events = self.epoll.poll(timeout, len(self.conns) + 2)
            now = time.monotonic_ns()
            for fd, _ in events:
                if fd == pipe_fd:
                    continue
                conn = self.conns.get(fd)
                if conn is not None:
                    self._read(fd, conn, now)
            while self.schedule and self.schedule[0][0] <= time.monotonic_ns():
                _, _, action, argument = heapq.heappop(self.schedule)
                if action == "close":
                    self.close([argument])
                else:
                    self.queue.append(argument)
            if any(fd == pipe_fd for fd, _ in events):
                command, *args = self.pipe.recv()
                if command == "exit":
                    return
                self.pipe.send(getattr(self, command)(*args))

    # -- opening and closing ----------------------------------------------------------------

    def open(self, items: list) -> int:
        self.queue.extend(items)
        return len(self.queue)

    def plan(self, entries: list) -> int:
        """Churn: ``(due monotonic ns, "close", key)`` and ``(due, "open", item)`` entries."""
        for due, action, argument in entries:
            self.order += 1
            heapq.heappush(self.schedule, (due, self.order, action, argument))
        return len(self.schedule)

    def _start_opens(self) -> None:
        while self.queue and self.connecting < self.in_flight:
            key, host, port, request, marker = self.queue.popleft()
            sock = socket.socket()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(10)
            try:
                sock.connect((host, port))
                sent = time.monotonic_ns()
                sock.sendall(request)
            except OSError as exc:
                self.failed[f"connect: {type(exc).__name__}"] += 1
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, key, marker)
            conn.sent_ns = sent
            self.by_key[key] = conn
            self.conns[sock.fileno()] = conn
            self.connecting += 1
            self.epoll.register(sock.fileno(), select.EPOLLIN)

    def close(self, keys: list[int]) -> int:
        closed = 0
        for key in keys:
            conn = self.by_key.get(key)
            if conn is not None and conn.sock.fileno() in self.conns:
                conn.abandoned = conn.state < 2
                self._drop(conn.sock.fileno(), conn)
                closed += 1
        return closed

    def close_all(self) -> int:
        self.queue.clear()
        self.schedule.clear()
        for fd, conn in list(self.conns.items()):
            self._drop(fd, conn)
        self.by_key.clear()
        self.failed.clear()
        return 0

    def _drop(self, fd: int, conn: _Conn) -> None:
        if conn.state < 2:
            self.connecting -= 1
        self.epoll.unregister(fd)
        del self.conns[fd]
        conn.sock.close()

    # -- reading -----------------------------------------------------------------------------

    def _read(self, fd: int, conn: _Conn, now: int) -> None:
        buffer, view = self.buffer, self.view
        try:
            size = conn.sock.recv_into(buffer)
        except BlockingIOError:
            return
        except OSError:
            size = 0
        if not size:
            conn.cut = conn.state == 2
            if conn.state < 2:
                self.failed["closed before connected"] += 1
            self._drop(fd, conn)
            return
        start = 0
        if conn.state < 2:
            start = self._opening(fd, conn, bytes(view[:size]), now)
            if start < 0:
                return
        found = buffer.count(MARK, start, size) + (conn.tail + view[start : start + 2]).count(MARK)
        conn.tail = bytes(view[size - 2 : size])
        if found:
            conn.count += found
            if len(self.latency) < _MAX_SAMPLES:
                data = bytes(view[start:size])
                index = data.find(MARK)
                while index >= 0:
                    stamp = stamp_at(data, index)
                    if stamp is not None:
                        self.latency.append((now - stamp) / 1e6)
                    index = data.find(MARK, index + 1)
        if buffer.find(_OVERFLOW, start, size) >= 0:
            conn.overflow = True

    def _opening(self, fd: int, conn: _Conn, data: bytes, now: int) -> int:
        """Where counting starts in ``data`` once the stream is connected, else -1."""
        held = len(conn.pending)
        joined = conn.pending + data
        if conn.state == 0:
            end = joined.find(b"\r\n\r\n")
            if end < 0:
                conn.pending = joined
                return -1
            status = int(joined[9:12])
            if status != 200:
                self.failed[f"HTTP {status}"] += 1
                self._drop(fd, conn)
                return -1
            conn.state, body = 1, end + 4
        else:
            body = 0
        if conn.marker is not None:
            at = joined.find(conn.marker, body)
            if at < 0:
                conn.pending = joined[max(body, len(joined) - len(conn.marker)) :]
                return -1
            body = at + len(conn.marker)
        conn.state, conn.pending = 2, b""
        conn.ready_ms = (now - conn.sent_ns) / 1e6
        self.last_ready_ns = max(self.last_ready_ns, now)
        self.connecting -= 1
        return max(0, body - held)

    # -- reports -----------------------------------------------------------------------------

    def status(self) -> dict:
        ready = sum(conn.state == 2 for conn in self.by_key.values())
        return {
            "ready": ready,
            "waiting": len(self.queue) + self.connecting,
            "scheduled": len(self.schedule),
            "failed": dict(self.failed),
            "last_ready_ns": self.last_ready_ns,
            "received": sum(conn.count for conn in self.by_key.values()),
        }

    def report(self) -> dict:
        conns = self.by_key.values()
        return {
            "counts": {c.key: c.count for c in conns},
            "ready_ms": {c.key: c.ready_ms for c in conns if c.ready_ms >= 0},
            "cut": [c.key for c in conns if c.cut],
            "abandoned": [c.key for c in conns if c.abandoned],
            "overflow": [c.key for c in conns if c.overflow],
            "failed": dict(self.failed),
            "latency": self.latency.tobytes(),
        }


def _worker_main(pipe, in_flight: int) -> None:
    _Worker(pipe, in_flight).run()


class ChannelPool(WorkerProcesses):
    """``workers`` subscriber processes; stream ``key`` lives in worker ``key % workers``.

    An item is ``(key, host, port, request bytes, marker)``: the stream counts as connected
    at its response head when ``marker`` is None, else once ``marker`` has arrived too.
    ``in_flight`` bounds each worker's streams sent but not yet connected.
    """

    def __init__(self, workers: int = 2, in_flight: int = 100) -> None:
        super().__init__(_worker_main, [(in_flight,)] * workers)

    def _dealt(self, command: str, entries: list, key_of) -> None:
        shares: list[list] = [[] for _ in self._pipes]
        for entry in entries:
            shares[key_of(entry) % len(shares)].append(entry)
        for pipe, share in zip(self._pipes, shares):
            pipe.send((command, share))
        for pipe in self._pipes:
            pipe.recv()

    def open(self, items: list) -> None:
        """Start opening ``items`` (each worker keeps ``in_flight`` of its own on the way)."""
        self._dealt("open", items, lambda item: item[0])

    def plan(self, entries: list) -> None:
        """Churn entries ``(due ns, "close", key)`` / ``(due ns, "open", item)``, each run by
        the worker that holds (or will hold) the stream, at its due time."""
        self._dealt("plan", entries, lambda entry: entry[2] if entry[1] == "close" else entry[2][0])

    def status(self) -> dict:
        total: dict[str, Any] = {
            "ready": 0,
            "waiting": 0,
            "scheduled": 0,
            "failed": Counter(),
            "last_ready_ns": 0,
            "received": 0,
        }
        for part in self._all("status"):
            for name in ("ready", "waiting", "scheduled", "received"):
                total[name] += part[name]
            total["failed"].update(part["failed"])
            total["last_ready_ns"] = max(total["last_ready_ns"], part["last_ready_ns"])
        return total

    def reset(self) -> None:
        self._all("reset")

    def report(self) -> dict:
        """Every stream's count and connect time (ms), the keys cut by the server, closed
        unconnected (``abandoned``) and sent ``overflow``, failures, delivery latencies (ms)."""
        total: dict[str, Any] = {
            "counts": {},
            "ready_ms": {},
            "cut": set(),
            "overflow": set(),
            "abandoned": set(),
            "failed": Counter(),
            "latency_ms": array("d"),
        }
        for part in self._all("report"):
            total["counts"].update(part["counts"])
            total["ready_ms"].update(part["ready_ms"])
            for name in ("cut", "overflow", "abandoned"):
                total[name].update(part[name])
            total["failed"].update(part["failed"])
            total["latency_ms"].extend(array("d", part["latency"]))
        return total

    def close_all(self) -> None:
        self._all("close_all")
