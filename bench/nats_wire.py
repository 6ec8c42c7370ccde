"""A minimal NATS client for load: many requests pipelined in one write, replies on one inbox.

nats-py spends tens of microseconds per publish; at 50k JetStream publishes/s that alone would
fill a core of this 2-core machine and measure the load generator, not the system. Here a batch
of requests is one ``PUB``/``HPUB`` blob and each reply costs one line split.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from urllib.parse import urlparse

__all__ = ["NatsWire"]

# A request batch not answered in this time counts as failed (the broker or ingest is stuck).
REPLY_TIMEOUT_S = 30.0
_READ_BYTES = 256 * 1024


def _status_body(message: bytes, header_bytes: int) -> bytes:
    """An HMSG's payload, or a JSON error naming its status (e.g. 503 no responders)."""
    status = message[9:12] if message.startswith(b"NATS/1.0 ") else b""
    return message[header_bytes:] or b'{"error":"status %s"}' % status


class _Batch:
    __slots__ = ("done", "remaining", "replies")

    def __init__(self, size: int) -> None:
        self.replies: list[bytes | None] = [None] * size
        self.remaining = size
        self.done = asyncio.Event()


class NatsWire:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, inbox: str
    ) -> None:
        self._reader, self._writer = reader, writer
        self._inbox = inbox
        self._tokens = itertools.count()
        self._waiting: dict[bytes, tuple[_Batch, int]] = {}
        self.error: str | None = None
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, user_pass: tuple[str, str], inbox_prefix: str):
        address = urlparse(url.split(",")[0])
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        await reader.readline()  # INFO
        inbox = f"{inbox_prefix}.bench{os.getpid()}x{id(writer):x}"
        options = {
            "user": user_pass[0],
            "pass": user_pass[1],
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "protocol": 1,
            "name": "logstream-bench",
        }
        writer.write(
            b"CONNECT %s\r\nSUB %s.* 1\r\nPING\r\n" % (json.dumps(options).encode(), inbox.encode())
        )
        while True:
            line = await asyncio.wait_for(reader.readline(), 10)
            if line.startswith(b"-ERR") or not line:
                writer.close()
                raise ConnectionError(f"NATS refused the bench's connection: {line!r}")
            if line.startswith(b"PONG"):
                return cls(reader, writer, inbox)

    async def request_many(
        self, subject: str, payloads: list[bytes], headers: dict[str, str] | None = None
    ) -> list[bytes | None]:
        """Send every payload as a request to ``subject`` in one write; their replies, in order
        (``None`` for a request that got no reply within ``REPLY_TIMEOUT_S``)."""
        batch = _Batch(len(payloads))
        head = b""
        if headers:
            head = (
                "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            ).encode()
        parts = []
        subject_b, inbox_b = subject.encode(), self._inbox.encode()
        for index, payload in enumerate(payloads):
            token = b"%d" % next(self._tokens)
            self._waiting[token] = (batch, index)
            if head:
                parts.append(
                    b"HPUB %s %s.%s %d %d\r\n%s%s\r\n"
                    % (
                        subject_b,
                        inbox_b,
                        token,
                        len(head),
                        len(head) + len(payload),
                        head,
                        payload,
                    )
                )
            else:
                parts.append(
                    b"PUB %s %s.%s %d\r\n%s\r\n"
                    % (subject_b, inbox_b, token, len(payload), payload)
                )
        return await self._sent(batch, b"".join(parts))

    async def request_each(self, requests: list[tuple[bytes, bytes]]) -> list[bytes | None]:
        """Like ``request_many``, each ``(subject, payload)`` to its own subject (no headers)."""
        batch = _Batch(len(requests))
        parts = []
        inbox_b = self._inbox.encode()
        for index, (subject, payload) in enumerate(requests):
            token = b"%d" % next(self._tokens)
            self._waiting[token] = (batch, index)
            parts.append(
                b"PUB %s %s.%s %d\r\n%s\r\n" % (subject, inbox_b, token, len(payload), payload)
            )
        return await self._sent(batch, b"".join(parts))

    async def _sent(self, batch: _Batch, blob: bytes) -> list[bytes | None]:
        self._writer.write(blob)
        try:
            await asyncio.wait_for(batch.done.wait(), REPLY_TIMEOUT_S)
        except TimeoutError:
            pass
        if self.error:
            raise ConnectionError(self.error)
        return batch.replies

    async def _read(self) -> None:
        try:
            await self._read_until_closed()
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.error = str(exc) or type(exc).__name__
        self.error = self.error or "NATS closed the connection"
        for batch, _ in list(self._waiting.values()):  # nothing more will come: wake them
            batch.done.set()

    async def _read_until_closed(self) -> None:
        """Parse whole buffers of protocol lines: one ``read`` takes many replies."""
        reader, writer = self._reader, self._writer
        buffer = b""
        while True:
            chunk = await reader.read(_READ_BYTES)
            if not chunk:
                return
            buffer += chunk
            position = 0
            while True:
                end = buffer.find(b"\r\n", position)
                if end < 0:
                    break
                line = buffer[position:end]
                if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                    fields = line.split()
                    stop = end + 2 + int(fields[-1])
                    if stop + 2 > len(buffer):
                        break  # the payload is not all here yet
                    body = buffer[end + 2 : stop]
                    if fields[0] == b"HMSG":
                        body = _status_body(body, int(fields[-2]))
                    self._answer(fields[1], body)
                    position = stop + 2
                    continue
                if line.startswith(b"PING"):
                    writer.write(b"PONG\r\n")
                elif line.startswith(b"-ERR"):
                    raise ConnectionError(f"NATS: {line.decode().strip()}")
                position = end + 2
            buffer = buffer[position:]

    def _answer(self, subject: bytes, body: bytes) -> None:
        waiting = self._waiting.pop(subject.rpartition(b".")[2], None)
        if waiting is None:
            return
        batch, index = waiting
        batch.replies[index] = body
        batch.remaining -= 1
        if batch.remaining == 0:
            batch.done.set()

    async def close(self) -> None:
        self._task.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass
