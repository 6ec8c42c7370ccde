"""Relaying one open gateway stream to one client.

``StreamRelay`` is what a stream route returns once the gateway said 200. Litestar hands it
the connection's ``send`` and ``receive``; it sends the answer head, then copies the
``GatewayStream``'s body bytes to the client, byte for byte. Two ways, one at a time:

- push (the usual one, under uvicorn's httptools server): each read from the gateway is
  written to the client's socket from inside ``data_received``, as one HTTP/1.1 chunk, through
  a ``DirectSink`` (``logstream.shared.uvicorn_adapter``). No task wakes, no ``send`` per
  read: the proxy's cost per read is a parse and a write.
- pull: the relay task waits for body bytes and sends everything buffered as one ``send``.
  It takes over while the client is behind (a direct write would pass ``PUSH_BACKLOG_LIMIT``:
  ``send`` then waits for the client, and the gateway connection stops being read at
  ``PAUSE_READING_AT``), and where no direct sink exists (another ASGI server).

Nothing races per chunk: one long-lived task per connection waits for the client to leave, and
one per proxy (``OpenRelays.watch``) tells every relay when the proxy drains. Either wakes the
relay task, which then ends: on a drain, after the last complete frame, with a ``retry:``
hint; when the client left, at once. Whatever ends it closes the gateway connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from litestar import Response
from prometheus_client import Gauge

from logstream.services.proxy.upstream import GatewayStream
from logstream.shared.sse import SSE_START_HEADERS, sse_frame
from logstream.shared.uvicorn_adapter import DirectSink, chunk, connection_of

__all__ = ["DRAIN_RETRY_MS", "OpenRelays", "StreamRelay", "complete_frames"]

# Sent when the proxy drains (SIGTERM): the gateway's default reconnect delay.
DRAIN_RETRY_MS = 2000
# Unsent bytes a client may have in the proxy's socket buffer before direct writes stop and
# the relay task waits for it instead: uvicorn's own write high-water mark (64 KiB), past which
# its ``send`` would wait too.
PUSH_BACKLOG_LIMIT = 64 * 1024
FRAME_END = b"\n\n"

log = logging.getLogger("logstream.proxy")


def complete_frames(sent_tail: bytes, data: bytes) -> int:
    """How many leading bytes of ``data`` end the stream at a frame boundary (-1: none do).

    ``sent_tail`` is the last two bytes already sent (``b"\\n\\n"`` before any): a boundary may
    straddle the two, one newline each side.
    """
    carry = sent_tail[-1:]
    end = (carry + data).rfind(FRAME_END)
    if end >= 0:
        return end + len(FRAME_END) - len(carry)
    return 0 if sent_tail.endswith(FRAME_END) else -1


class OpenRelays:
    """The relays running now: told to end when the proxy drains, and counted for metrics."""

    def __init__(self, draining: asyncio.Event) -> None:
        self._draining = draining
        self._relays: set[StreamRelay] = set()
        self._ended_bytes = 0

    def add(self, relay: StreamRelay) -> None:
        self._relays.add(relay)
        if self._draining.is_set():
            relay.drain()

    def discard(self, relay: StreamRelay) -> None:
        if relay in self._relays:
            self._relays.remove(relay)
            self._ended_bytes += relay.relayed

    def relayed_bytes(self) -> int:
        """Body bytes relayed so far by every relay, ended or running (read at each scrape, so
        that no relay pays for a metric per chunk)."""
        return self._ended_bytes + sum(relay.relayed for relay in self._relays)

    async def watch(self) -> None:
        """Wait for the drain, then end every relay (one task per proxy, not per stream)."""
        await self._draining.wait()
        for relay in list(self._relays):
            relay.drain()


class StreamRelay(Response):
    """A 200 ``text/event-stream`` answer whose body is the gateway stream's, byte for byte."""

    def __init__(
        self,
        upstream: GatewayStream,
        relays: OpenRelays,
        *,
        open_gauge: Gauge,
        route: str,
        channel: str,
    ) -> None:
        super().__init__(content=None, status_code=200, media_type="text/event-stream")
        self._upstream = upstream
        self._relays = relays
        self._open_gauge = open_gauge
        self._route, self._channel = route, channel
        self._sink: DirectSink | None = None
        self._draining = False
        self._client_left = False
        self._tail = FRAME_END  # the last two bytes sent: a drain must know if mid-frame
        self.relayed = 0

    # Litestar only calls the result as an ASGI app, but annotates it as its own ASGIResponse.
    def to_asgi_response(self, *args: Any, **kwargs: Any) -> StreamRelay:  # type: ignore[override]
        return self  # this answer is its own ASGI app: no Litestar body machinery per chunk

    def drain(self) -> None:
        self._draining = True
        self._upstream.wake()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        watcher = asyncio.ensure_future(self._watch_client(receive))
        self._relays.add(self)
        self._open_gauge.inc()
        started = time.monotonic()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_START_HEADERS})
            connection = connection_of(scope)
            self._sink = connection.direct_sink(PUSH_BACKLOG_LIMIT) if connection else None
            await self._copy(send)
        finally:
            watcher.cancel()
            self._upstream.push_to(None)
            self._upstream.close()
            self._relays.discard(self)
            self._open_gauge.dec()
            log.info(
                "stream relayed",
                extra={
                    "route": self._route,
                    "channel": self._channel,
                    "bytes": self.relayed,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )

    async def _copy(self, send: Any) -> None:
        """Relay until the gateway ends, the proxy drains or the client leaves."""
        upstream = self._upstream
        while True:
            if self._sink is not None and not upstream.buffered:
                upstream.push_to(self._push)  # caught up: writes go direct again
            if not (self._draining or self._client_left):
                await upstream.wait()  # pushing: only an end, a drain, a leave or a backlog
            if self._client_left:
                return
            data = upstream.take()
            if self._draining:
                await send(_last_message(self._drained_body(data)))
                return
            if data:
                upstream.push_to(None)  # bytes in order: none pushed while these wait
                await send({"type": "http.response.body", "body": data, "more_body": True})
                self._sent(data)
            elif upstream.ended:
                await send(_last_message(b""))
                return

    def _push(self, data: bytes) -> None:
        """One read's body, written straight to the client's socket (in ``data_received``)."""
        if self._sink.write(chunk(data)):  # type: ignore[union-attr]
            self._sent(data)
        elif self._sink.gone:  # type: ignore[union-attr]
            self._client_left = True
            self._upstream.wake()
        else:  # the client is behind: the relay task sends it when the client can take it
            self._upstream.give_back(data)

    def _sent(self, data: bytes) -> None:
        # Two bytes, not the whole piece: an idle stream must not keep its last burst alive.
        self._tail = data[-2:] if len(data) >= 2 else (self._tail + data)[-2:]
        self.relayed += len(data)

    def _drained_body(self, data: bytes) -> bytes:
        """The complete frames of ``data`` and a retry hint; nothing more when mid-frame (a
        reader drops an unfinished event)."""
        complete = complete_frames(self._tail, data)
        return b"" if complete < 0 else data[:complete] + sse_frame(retry=DRAIN_RETRY_MS)

    async def _watch_client(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._client_left = True
        self._upstream.wake()


def _last_message(body: bytes) -> dict:
    return {"type": "http.response.body", "body": body, "more_body": False}
