"""One stream request to a gateway, read straight off the socket.

The relay is the proxy's hot path: at 50k deliveries/s, every Python layer between the
gateway's socket and the browser's costs a core. So a stream request does not go through
httpx: ``open_gateway_stream`` writes the request an ``httpx.Request`` describes on a plain
asyncio connection, and httptools' response parser (the one uvicorn serves with) undoes the
HTTP/1.1 chunked framing inside ``data_received``. The body bytes of each read are either
pushed to a consumer right there (the relay writing them to the client's socket: no task wakes
per read), or wait in a list until the relay takes them all at once, so bytes that arrive
together leave together. The connection carries this one request and is closed after it (no
pool: streams are long-lived).

Errors: ``GatewayUnreachable`` when no answer head arrives (connect refused or timed out,
TLS failure, the gateway closed or spoke something other than HTTP/1.x first): the caller
tries the next gateway. Once the head is in, a broken connection just ends the body.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable

import httptools
import httpx

__all__ = ["GatewayStream", "GatewayUnreachable", "open_gateway_stream"]

# A gateway that does not accept a TCP connection within 2 s is treated as down; a stream
# itself has no read timeout (the gateway's heartbeats keep it alive).
CONNECT_TIMEOUT_S = 2.0
# Body bytes held for a client that reads slower than the gateway writes: past this, the proxy
# stops reading the gateway's socket, TCP pushes back, and the gateway applies its own
# slow-consumer policy. 256 KiB is about 600 records: a burst, not a backlog.
PAUSE_READING_AT = 256 * 1024


class GatewayUnreachable(ConnectionError):
    """The gateway gave no HTTP answer head: try another one."""


class GatewayStream(asyncio.Protocol):
    """The client side of one request: its answer head, then body pieces as they arrive."""

    def __init__(self, request_head: bytes) -> None:
        self._request_head = request_head
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._pieces: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._push: Callable[[bytes], None] | None = None
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.ended = False  # the body is complete, or the connection is gone

    # -- reading, for the relay --------------------------------------------------------------

    async def head(self) -> None:
        """Wait for the answer's status line and headers."""
        await self._head

    @property
    def buffered(self) -> int:
        return self._buffered

    async def wait(self) -> None:
        """Until a body piece is buffered, the body ends, or ``wake`` is called."""
        if self._pieces or self.ended:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def take(self) -> bytes:
        """Every body byte buffered so far, as one piece (no copy when only one is there)."""
        data = b"".join(self._pieces)
        self._pieces.clear()
        self._buffered = 0
        if self._paused and self._transport is not None and not self.ended:
            self._paused = False
            self._transport.resume_reading()
        return data

    def push_to(self, consumer: Callable[[bytes], None] | None) -> None:
        """Hand each read's body bytes to ``consumer`` inside ``data_received`` (no task wakes
        per read) instead of buffering them for ``take``; None goes back to buffering. The
        consumer may call ``give_back`` to buffer what it could not use."""
        self._push = consumer

    def give_back(self, data: bytes) -> None:
        """Buffer ``data`` ahead of anything newer, stop pushing, and wake the reader."""
        self._push = None
        self._pieces.insert(0, data)
        self._buffered += len(data)
        self._check_pause()
        self.wake()

    def close(self) -> None:
        """Drop the connection (idempotent): the gateway sees its client leave."""
        self.ended = True
        if self._transport is not None:
            self._transport.close()
        self.wake()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        transport.write(self._request_head)  # type: ignore[attr-defined]
        self._request_head = b""  # sent: an idle stream keeps no copy

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(GatewayUnreachable(f"gateway answer is not HTTP/1.x: {exc}"))
            self.close()
        if self._push is not None and self._pieces:
            self._push(self.take())

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {exc!r}" if exc is not None else " before answering"
        self._end(GatewayUnreachable(f"gateway closed the connection{why}"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)
        self._buffered += len(body)
        if self._push is None:  # else data_received pushes the whole read at its end
            self._check_pause()
            self.wake()

    def _check_pause(self) -> None:
        if self._buffered >= PAUSE_READING_AT and not self._paused and not self.ended:
            self._paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        self._end(GatewayUnreachable("gateway answer ended before its head"))

    async def read_body(self, limit: int) -> bytes:
        """The whole body, or its first ``limit`` bytes or so (an error answer, not a stream)."""
        parts, size = [], 0
        while True:
            parts.append(self.take())
            size += len(parts[-1])
            if self.ended or size >= limit:
                return b"".join(parts)
            await self.wait()

    def _end(self, unanswered: Exception) -> None:
        self.ended = True
        if not self._head.done():
            self._head.set_exception(unanswered)
        self.wake()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's context (certifi's CA bundle, verification on): as the health checks use."""
    return httpx.create_ssl_context()


def _request_head(request: httpx.Request) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
    lines.extend(name + b": " + value for name, value in request.headers.raw)
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def open_gateway_stream(request: httpx.Request) -> GatewayStream:
    """Send ``request`` (a bodiless GET) on a new connection and wait for the answer head."""
    url = request.url
    tls = url.scheme == "https"
    stream = GatewayStream(_request_head(request))
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await loop.create_connection(
                lambda: stream,
                url.host,
                url.port or (443 if tls else 80),
                ssl=_tls_context() if tls else None,
                server_hostname=url.host if tls else None,
            )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise GatewayUnreachable(f"cannot connect to {url.host}:{url.port}: {exc!r}") from exc
    try:
        await stream.head()
    except BaseException:
        stream.close()
        raise
    return stream
