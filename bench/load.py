"""The SSE load client: subscriber processes, each holding many raw connections on one epoll.

A worker counts messages by counting ``MARK`` in the bytes it receives (``bytearray.count`` on
one reused buffer: nothing allocated, nothing parsed). Two kinds of worker share the streams:

- *reactive* workers read as soon as bytes arrive and parse every send time they see: they
  measure latency, on one stream in ``sample_every``;
- *bulk* workers poll every ``coalesce_s`` so that one ``recv`` takes many frames, and only
  count: the cost of the client stays a fraction of the server's, and their late reading adds
  nothing to the latency figures (the server writes into socket buffers either way).
"""

from __future__ import annotations

import multiprocessing
import os
import select
import socket
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field

from bench.messages import MARK, stamp_at

__all__ = ["PoolReport", "SubscriberPool", "WorkerProcesses"]

# Below glibc's mmap threshold (128 KiB): a larger recv buffer costs an mmap per call.
_RECV_BYTES = 64 * 1024
# Latency samples one worker keeps per window: enough for a p99, bounded memory.
_MAX_SAMPLES = 400_000
_OVERFLOW = b"event: overflow"


class _Conn:
    __slots__ = ("count", "head", "ready", "sock", "tail")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ready, self.head, self.count, self.tail = False, b"", 0, b""


class _Worker:
    def __init__(self, pipe, reactive: bool, coalesce_s: float) -> None:
        self.pipe, self.sampled = pipe, reactive
        self.coalesce_s = 0.0 if reactive else coalesce_s
        self.buffer = bytearray(_RECV_BYTES)
        self.view = memoryview(self.buffer)
        self.epoll = select.epoll()
        self.conns: dict[int, _Conn] = {}
        self.opened: list[_Conn] = []
        self.failed: Counter[str] = Counter()
        self.reset()

    def reset(self) -> None:
        for conn in self.opened:
            conn.count = 0
        self.overflows, self.closed = 0, 0
        self.latency = array("d")
        self.cpu_mark, self.wall_mark = _cpu(), time.monotonic()

    def run(self) -> None:
        while True:
            if self.pipe.poll():
                command, *args = self.pipe.recv()
                if command == "exit":
                    return
                self.pipe.send(getattr(self, command)(*args))
            self.pump(0.05)
            if self.coalesce_s:
                time.sleep(self.coalesce_s)

    def open(self, targets: list[tuple[str, int, bytes]], wave: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        for start in range(0, len(targets), wave):
            batch = [self._connect(*target) for target in targets[start : start + wave]]
            while any(c and not c.ready and c.sock.fileno() in self.conns for c in batch):
                if time.monotonic() > deadline:
                    break
                self.pump(0.05)
        return {"ready": sum(c.ready for c in self.opened), "failed": dict(self.failed)}

    def _connect(self, host: str, port: int, request: bytes) -> _Conn | None:
        sock = socket.socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(10)
        try:
            sock.connect((host, port))
            sock.sendall(request)
        except OSError as exc:
            self.failed[f"connect: {type(exc).__name__}"] += 1
            sock.close()
            return None
        sock.setblocking(False)
        conn = _Conn(sock)
        self.opened.append(conn)
        self.conns[sock.fileno()] = conn
        self.epoll.register(sock.fileno(), select.EPOLLIN)
        return conn

    def pump(self, timeout: float) -> None:
        events = self.epoll.poll(timeout, len(self.conns) + 1)
        now = time.monotonic_ns()
        buffer, view = self.buffer, self.view
        for fd, _ in events:
            conn = self.conns.get(fd)
            if conn is None:
                continue
            try:
                size = conn.sock.recv_into(buffer)
            except BlockingIOError:
                continue
            except OSError:
                size = 0
            if not size:
                self._drop(fd, conn)
                continue
            start = 0
            if not conn.ready:
                start = self._headers(fd, conn, bytes(view[:size]))
                if start < 0:
                    continue
            found = buffer.count(MARK, start, size) + (conn.tail + view[start : start + 2]).count(
                MARK
            )
            conn.tail = bytes(view[size - 2 : size])
            conn.count += found
            if found and self.sampled and len(self.latency) < _MAX_SAMPLES:
                self._sample(bytes(view[start:size]), now)
            if buffer.find(_OVERFLOW, start, size) >= 0:
                self.overflows += 1

    def _sample(self, data: bytes, now: int) -> None:
        index = data.find(MARK)
        while index >= 0:
            stamp = stamp_at(data, index)
            if stamp is not None:
                self.latency.append((now - stamp) / 1e6)
            index = data.find(MARK, index + 1)

    def _headers(self, fd: int, conn: _Conn, data: bytes) -> int:
        """Where the body starts in ``data`` once the response head is complete, else -1."""
        held = len(conn.head)
        joined = conn.head + data
        end = joined.find(b"\r\n\r\n")
        if end < 0:
            conn.head = joined
            return -1
        status = int(joined[9:12])
        if status != 200:
            self.failed[f"HTTP {status}"] += 1
            self.opened.remove(conn)
            self._drop(fd, conn, counted=False)
            return -1
        conn.ready, conn.head = True, b""
        return end + 4 - held

    def _drop(self, fd: int, conn: _Conn, counted: bool = True) -> None:
        self.epoll.unregister(fd)
        del self.conns[fd]
        conn.sock.close()
        self.closed += counted and conn.ready

    def report(self, with_latency: bool = True) -> dict:
        counts = [conn.count for conn in self.opened]
        return {
            "received": sum(counts),
            "min": min(counts, default=0),
            "max": max(counts, default=0),
            "connections": len(self.opened),
            "live": len(self.conns),
            "closed": self.closed,
            "overflows": self.overflows,
            "failed": dict(self.failed),
            "latency": self.latency.tobytes() if with_latency else b"",
            "cpu_s": _cpu() - self.cpu_mark,
            "wall_s": time.monotonic() - self.wall_mark,
        }

    def close_all(self) -> int:
        for fd, conn in list(self.conns.items()):
            self._drop(fd, conn, counted=False)
        self.opened.clear()
        self.failed.clear()
        return 0


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _worker_main(pipe, reactive: bool, coalesce_s: float) -> None:
    _Worker(pipe, reactive, coalesce_s).run()


@dataclass
class PoolReport:
    received: int = 0
    min_per_connection: int = 0
    max_per_connection: int = 0
    connections: int = 0
    live: int = 0
    closed: int = 0
    overflows: int = 0
    failed: Counter = field(default_factory=Counter)
    latency_ms: list[float] = field(default_factory=list)
    cpu_shares: list[float] = field(default_factory=list)  # each worker, share of one core

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu_shares)


class WorkerProcesses:
    """Worker processes (spawned), each answering commands sent down its pipe: the plumbing both
    subscriber pools share."""

    def __init__(self, target, args_per_worker: list[tuple]) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes, self._procs = [], []
        for args in args_per_worker:
            parent, child = context.Pipe()
            proc = context.Process(target=target, args=(child, *args), daemon=True)
            proc.start()
            self._pipes.append(parent)
            self._procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs if proc.pid is not None]  # all started

    def _all(self, *command) -> list:
        for pipe in self._pipes:
            pipe.send(command)
        return [pipe.recv() for pipe in self._pipes]

    def shutdown(self) -> None:
        """Ask each worker process to exit; kill one that has not within 5 s."""
        for pipe in self._pipes:
            try:
                pipe.send(("exit",))
            except OSError:
                pass
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


class SubscriberPool(WorkerProcesses):
    """``reactive`` latency-measuring workers and ``bulk`` counting workers (module docstring).

    Stream ``i`` goes to target ``i % len(targets)``; one stream in ``sample_every`` of each
    target goes to a reactive worker, the rest to bulk workers, round-robin within each kind.
    """

    def __init__(self, *, reactive: int = 1, bulk: int = 2, coalesce_s: float = 0.02) -> None:
        super().__init__(
            _worker_main, [(index < reactive, coalesce_s) for index in range(reactive + bulk)]
        )
        self._reactive = reactive

    def open(
        self,
        targets: list[tuple[str, int, bytes]],
        count: int,
        *,
        sample_every: int = 1,
        wave: int = 100,
        timeout: float = 120.0,
    ) -> tuple[int, Counter]:
        """Open ``count`` streams; (how many answered 200, failures by reason)."""
        shares: list[list] = [[] for _ in self._procs]
        reactive = range(self._reactive) or range(len(self._procs))
        bulk = range(self._reactive, len(self._procs)) or reactive
        dealt: Counter[int] = Counter()
        for index in range(count):
            kind = reactive if (index // len(targets)) % sample_every == 0 else bulk
            worker = kind[dealt[kind.start] % len(kind)]
            dealt[kind.start] += 1
            shares[worker].append(targets[index % len(targets)])
        for pipe, share in zip(self._pipes, shares):
            pipe.send(("open", share, wave, timeout))
        replies = [pipe.recv() for pipe in self._pipes]
        failed: Counter[str] = Counter()
        for reply in replies:
            failed.update(reply["failed"])
        return sum(reply["ready"] for reply in replies), failed

    def reset(self) -> None:
        self._all("reset")

    def report(self, with_latency: bool = True) -> PoolReport:
        total = PoolReport(min_per_connection=-1)
        for part in self._all("report", with_latency):
            total.received += part["received"]
            if part["connections"]:
                low = part["min"]
                total.min_per_connection = (
                    low if total.min_per_connection < 0 else min(low, total.min_per_connection)
                )
            total.max_per_connection = max(total.max_per_connection, part["max"])
            for name in ("connections", "live", "closed", "overflows"):
                setattr(total, name, getattr(total, name) + part[name])
            total.failed.update(part["failed"])
            total.latency_ms.extend(array("d", part["latency"]))
            total.cpu_shares.append(part["cpu_s"] / max(part["wall_s"], 1e-9))
        total.min_per_connection = max(total.min_per_connection, 0)
        return total

    def close_connections(self) -> None:
        self._all("close_all")
