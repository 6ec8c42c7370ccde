"""A minimal keep-alive HTTP/1.1 client for load: requests pipelined, responses read in order.

Enough for Nchan's publisher and Logstream's ingest (responses with ``Content-Length``). httpx
costs about 100 microseconds per request, which would make the client the bottleneck.
"""

from __future__ import annotations

import asyncio

__all__ = ["HttpWire", "post_request"]


def post_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


_READ_BYTES = 256 * 1024


def _response_at(buffer: bytes, start: int) -> tuple[tuple[int, bytes], int] | None:
    """The response starting at ``start`` and where the next one starts, or None if it is not
    all in ``buffer`` yet."""
    head_end = buffer.find(b"\r\n\r\n", start)
    if head_end < 0:
        return None
    head = buffer[start:head_end]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise ValueError("chunked responses are not supported by this load client")
    end = head_end + 4 + length
    if end > len(buffer):
        return None
    return (int(head[9:12]), buffer[head_end + 4 : end]), end


class HttpWire:
    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._left = b""  # bytes read past the last response answered

    @classmethod
    async def connect(cls, host: str, port: int) -> HttpWire:
        wire = cls(host, port)
        await wire._open()
        return wire

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self._reader, self._writer = await asyncio.open_connection(*self._address)
        self._left = b""
        return self._reader, self._writer

    def _streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert self._reader is not None and self._writer is not None, "connect() opens them"
        return self._reader, self._writer

    async def pipeline(self, requests: list[bytes]) -> list[tuple[int, bytes]]:
        """Send every request in one write; (status, body) of each response, in order.

        A connection the server closed while idle (uvicorn: after 5 s) is opened again first.
        """
        reader, writer = self._streams()
        if writer.is_closing() or reader.at_eof():
            writer.close()
            reader, writer = await self._open()
        writer.write(b"".join(requests))
        answers: list[tuple[int, bytes]] = []
        buffer, position = self._left, 0
        while len(answers) < len(requests):
            parsed = _response_at(buffer, position)
            if parsed is None:
                chunk = await reader.read(_READ_BYTES)
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                buffer, position = buffer[position:] + chunk, 0
                continue
            answers.append(parsed[0])
            position = parsed[1]
        self._left = buffer[position:]
        return answers

    async def close(self) -> None:
        _, writer = self._streams()
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
