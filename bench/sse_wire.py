"""A small asyncio SSE client over a raw connection, for the soak: one GET, the answer's head,
then its body (chunked, sized or until close) split into SSE frames.

No HTTP library: the soak opens 50 streams a second for half an hour and keeps its own client
cheap and predictable (every socket closed by us, nothing pooled). Also: a *stalled* reader (a
socket that sent its request and is never read) and the check whether the server still holds
its end of such a connection (``/proc/net/tcp`` and the server's ``/proc/PID/fd``).
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass

__all__ = [
    "SseAnswer",
    "SseEvent",
    "StalledSocket",
    "open_sse",
    "server_holds_socket",
    "stream_request",
]

_READ_BYTES = 64 * 1024
_HEAD_LIMIT = 64 * 1024


@dataclass(slots=True)
class SseEvent:
    event: str  # "message" when the frame names none
    id: str | None
    data: str


def stream_request(path: str, token: str, last_event_id: int | None = None) -> bytes:
    resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Accept: text/event-stream\r\n{resume}\r\n"
    ).encode()


class SseAnswer:
    """An answered GET: ``status``, ``headers``; for a 200, ``events()`` until the body ends."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str],
    ) -> None:
        self._reader, self._writer = reader, writer
        self.status, self.headers = status, headers
        self._frames = bytearray()
        self.ended = False  # the body ended (final chunk, or the server closed)

    async def body(self, timeout: float = 5.0) -> bytes:
        """The whole body of a sized answer (an error's JSON)."""
        length = int(self.headers.get("content-length", "0"))
        try:
            return await asyncio.wait_for(self._reader.readexactly(length), timeout)
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            return b""

    async def _read(self) -> bytes:
        """The next piece of the body; b"" when it ended."""
        if self.ended:
            return b""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            line = await self._reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                self.ended = True
                return b""
            data = await self._reader.readexactly(size + 2)
            return data[:-2]
        data = await self._reader.read(_READ_BYTES)
        if not data:
            self.ended = True
        return data

    async def next_events(self) -> list[SseEvent] | None:
        """The complete frames of the next piece of the body (possibly none); ``None`` once the
        body ended or the connection broke."""
        try:
            data = await self._read()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            self.ended = True
            return None
        if not data:
            return None
        self._frames += data.replace(b"\r\n", b"\n")
        events: list[SseEvent] = []
        while True:
            end = self._frames.find(b"\n\n")
            if end < 0:
                return events
            frame = bytes(self._frames[:end])
            del self._frames[: end + 2]
            event = _parse_frame(frame)
            if event is not None:
                events.append(event)

    def close(self) -> None:
        """Close at once (a reset if unread bytes remain: what a browser tab closing does)."""
        transport = self._writer.transport
        transport.abort()


def _parse_frame(frame: bytes) -> SseEvent | None:
    kind, ident, data = "message", None, []
    for line in frame.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"event":
            kind = value.decode()
        elif name == b"id":
            ident = value.decode()
        elif name == b"data":
            data.append(value.decode())
    if not data and ident is None and kind == "message":
        return None  # retry: only, or comments (heartbeats)
    return SseEvent(kind, ident, "\n".join(data))


async def open_sse(host: str, port: int, request: bytes, timeout: float = 10.0) -> SseAnswer:
    """Connect, send ``request``, read the answer's head. ``OSError``/``TimeoutError`` when the
    connection fails or no head comes within ``timeout``."""

    async def connect() -> SseAnswer:
        reader, writer = await asyncio.open_connection(host, port, limit=_HEAD_LIMIT)
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        except BaseException:
            writer.transport.abort()
            raise
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        return SseAnswer(reader, writer, status, headers)

    try:
        return await asyncio.wait_for(connect(), timeout)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise ConnectionError(f"no answer head: {exc}") from None


class StalledSocket:
    """A stream request on a socket that is then never read: the client of a stuck tab. The
    receive buffer is made small before connecting, so the server's bytes pile up on its side."""

    def __init__(self, sock: socket.socket, client_port: int) -> None:
        self.sock, self.client_port = sock, client_port

    @classmethod
    async def open(cls, host: str, port: int, request: bytes, rcvbuf: int = 4096) -> StalledSocket:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), 10)
            await asyncio.wait_for(loop.sock_sendall(sock, request), 10)
        except BaseException:
            sock.close()
            raise
        return cls(sock, sock.getsockname()[1])

    async def drain(self, timeout: float, marker: bytes) -> tuple[int, bool, bool, int]:
        """Read everything now: (bytes read, whether ``marker`` was seen, whether the server
        closed within ``timeout``, the answer's status or 0)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        total, seen, closed, status = 0, False, False, 0
        tail = b""
        while True:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, _READ_BYTES), left)
            except TimeoutError:
                break
            except OSError:  # reset by the server: it let go of its end too
                closed = True
                break
            if not data:
                closed = True
                break
            if not total and data.startswith(b"HTTP/1."):
                status = int(data[9:12])
            total += len(data)
            window = tail + data
            seen = seen or marker in window
            tail = window[-len(marker) :]
        return total, seen, closed, status

    def close(self) -> None:
        self.sock.close()


def _tcp_entries() -> list[list[str]]:
    rows: list[list[str]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                rows.extend(line.split() for line in lines)
        except OSError:
            continue
    return rows


def server_holds_socket(pid: int, server_port: int, client_port: int) -> bool:
    """Whether process ``pid`` still has a descriptor on the server end of the connection from
    local ``client_port`` to ``server_port`` (an orphaned socket the kernel still flushes, with
    no descriptor, does not count)."""
    inode = None
    for row in _tcp_entries():
        local, remote = row[1], row[2]
        if int(local.rsplit(":", 1)[1], 16) == server_port and (
            int(remote.rsplit(":", 1)[1], 16) == client_port
        ):
            inode = row[9]
            break
    if inode is None or inode == "0":
        return False
    wanted = f"socket:[{inode}]"
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False
