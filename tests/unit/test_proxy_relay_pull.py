"""``StreamRelay`` where no direct sink exists (another ASGI server): every byte goes through
``send``. The gateway is a scripted asyncio server on a real socket; the client side is an ASGI
``send``/``receive`` pair recorded in memory."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from prometheus_client import CollectorRegistry, Gauge

from logstream.services.proxy.relay import OpenRelays, StreamRelay
from logstream.services.proxy.upstream import open_gateway_stream

DEADLINE_S = 10.0
HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
FRAME = b"id: 1\nevent: log\ndata: {}\n\n"


class Client:
    """The ASGI side: what the relay sent, and a disconnect the test can trigger."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.received = asyncio.Event()
        self.left = asyncio.Event()
        self._asked = False

    async def receive(self) -> dict:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.messages.append(message)
        self.received.set()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    @property
    def finished(self) -> bool:
        return self.messages[-1].get("more_body") is False


@contextlib.asynccontextmanager
async def relay_of(*pieces: bytes, draining: asyncio.Event | None = None):
    """A relay on a scripted gateway that writes ``pieces``, then waits for the hang-up (set
    in the yielded event)."""
    hung_up = asyncio.Event()

    async def serve(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
        await reader.read()
        hung_up.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    upstream = await open_gateway_stream(httpx.Request("GET", base + "/api/logs/stream"))
    gauge = Gauge("streams_open", "test", registry=CollectorRegistry())
    relays = OpenRelays(draining or asyncio.Event())
    relay = StreamRelay(upstream, relays, open_gauge=gauge, route="etl", channel="logs:a:b")
    try:
        yield relay, relays, gauge, hung_up
    finally:
        server.close()


async def test_without_a_direct_sink_the_relay_sends_every_byte_in_order_until_the_end():
    body = FRAME * 300
    wire = (
        HEAD
        + b"".join(
            b"%x\r\n%b\r\n" % (len(body[i : i + 700]), body[i : i + 700])
            for i in range(0, len(body), 700)
        )
        + b"0\r\n\r\n"
    )
    client = Client()
    async with relay_of(wire[:50], wire[50:5000], wire[5000:]) as (relay, relays, gauge, _):
        await asyncio.wait_for(relay({"type": "http"}, client.receive, client.send), DEADLINE_S)
    assert client.messages[0]["status"] == 200
    assert client.body == body and client.finished
    assert relays.relayed_bytes() == len(body) and gauge.collect()[0].samples[0].value == 0


async def test_a_client_that_leaves_ends_the_relay_and_closes_the_gateway_connection():
    client = Client()
    async with relay_of(HEAD, b"%x\r\n%b\r\n" % (len(FRAME), FRAME)) as (relay, _, _, hung_up):
        running = asyncio.ensure_future(relay({"type": "http"}, client.receive, client.send))
        while client.body != FRAME:
            client.received.clear()
            await asyncio.wait_for(client.received.wait(), DEADLINE_S)
        client.left.set()
        await asyncio.wait_for(running, DEADLINE_S)
        await asyncio.wait_for(hung_up.wait(), DEADLINE_S)


async def test_a_drain_ends_after_the_last_whole_frame_with_a_retry_hint():
    draining, client = asyncio.Event(), Client()
    async with relay_of(HEAD, b"%x\r\n%b\r\n" % (len(FRAME), FRAME), draining=draining) as (
        relay,
        relays,
        _,
        hung_up,
    ):
        watch = asyncio.ensure_future(relays.watch())
        running = asyncio.ensure_future(relay({"type": "http"}, client.receive, client.send))
        while client.body != FRAME:
            client.received.clear()
            await asyncio.wait_for(client.received.wait(), DEADLINE_S)
        draining.set()
        await asyncio.wait_for(running, DEADLINE_S)
        await asyncio.wait_for(watch, DEADLINE_S)
        await asyncio.wait_for(hung_up.wait(), DEADLINE_S)
    assert client.body == FRAME + b"retry: 2000\n\n" and client.finished


async def test_a_relay_that_starts_while_draining_sends_only_the_retry_hint():
    draining, client = asyncio.Event(), Client()
    draining.set()
    async with relay_of(HEAD, draining=draining) as (relay, _, _, _):
        await asyncio.wait_for(relay({"type": "http"}, client.receive, client.send), DEADLINE_S)
    assert client.body == b"retry: 2000\n\n" and client.finished
