"""SSE streams over plain asyncio sockets, for tests that hold hundreds of streams at once (an
httpx client per stream would make such a test slow).

``RawSse.open`` sends one HTTP/1.1 GET and reads the response head; ``frames()`` de-chunks the
body and yields each SSE frame as the spec reads it (``event``, ``id``, ``data`` joined by LF,
comments). A refusal (any status but 200) raises ``RawRefused`` with the status and body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["Frame", "RawRefused", "RawSse"]

# Bounds the response head of a failing test; a healthy gateway answers in milliseconds.
HEAD_TIMEOUT_S = 30.0


@dataclass
class Frame:
    event: str = "message"
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)


class RawRefused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"{status}: {body[:300]!r}")
        self.status, self.body = status, body


def _frame(raw: bytes) -> Frame:
    frame, data = Frame(), []
    for line in raw.decode().split("\n"):
        if line.startswith(":"):
            frame.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            frame.event = value
        elif name == "id":
            frame.id = value
        elif name == "data":
            data.append(value)
    frame.data = "\n".join(data)
    return frame


class RawSse:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(
        cls, host: str, port: int, path: str, headers: dict[str, str], *, timeout=HEAD_TIMEOUT_S
    ) -> RawSse:
        reader, writer = await asyncio.open_connection(host, port)
        stream = cls(reader, writer)
        try:
            lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{lines}\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await asyncio.wait_for(reader.readexactly(length), timeout)
                raise RawRefused(status, body)
        except BaseException:
            await stream.close()
            raise
        return stream

    async def frames(self) -> AsyncIterator[Frame]:
        """Every frame until the body ends or the connection breaks (then it simply stops)."""
        reader, pending = self._reader, b""
        try:
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                if size == 0:
                    return
                pending += (await reader.readexactly(size + 2))[:-2]
                *complete, pending = pending.split(b"\n\n")
                for raw in complete:
                    yield _frame(raw)
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
