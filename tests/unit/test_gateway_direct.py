"""Direct writes to caught-up connections (logstream.services.gateway.direct), against an in-memory
transport standing in for uvicorn's: framing, coalescing, the byte limit, a client gone."""

from __future__ import annotations

import asyncio
import json

from logstream.services.gateway.direct import Coalescer
from logstream.services.gateway.hub import Hub
from logstream.services.gateway.live import MemoryLiveFeed
from logstream.services.gateway.outbox import Outbox
from logstream.services.gateway.source import MemoryLogSource
from logstream.services.gateway.subscription import Subscription
from logstream.shared.channels import parse_pattern
from logstream.shared.uvicorn_adapter import DirectSink, chunk, connection_of


class Transport:
    def __init__(self, unread: int = 0) -> None:
        self.written: list[bytes] = []
        self.unread = unread  # bytes the client has not read yet (the write buffer)
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.unread


class Cycle:
    disconnected = False


def caught_up(*channels: str, limit: int = 1 << 20, unread: int = 0, **kw):
    patterns = tuple(parse_pattern(c) for c in channels)
    sub = Subscription("c" + str(id(patterns)), "u", patterns, Outbox(limit), **kw)
    transport = Transport(unread)
    sub.go_direct(DirectSink(Cycle(), transport, limit))
    return sub, transport


def frame(n: int) -> bytes:
    return b"id: %d\nevent: log\ndata: {}\n\n" % n


def test_a_chunk_is_framed_as_uvicorn_frames_a_body_message():
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 300).startswith(b"12c\r\n")


def test_the_frames_of_one_batch_reach_each_connection_in_one_write_in_order():
    async def scenario():
        coalescer = Coalescer()
        (a, ta), (b, tb) = caught_up("logs:etl:ws"), caught_up("logs:etl:ws")
        for n in (1, 2, 3):
            a.deliver(n, frame(n), coalescer)
            b.deliver(n, frame(n), coalescer)
        coalescer.flush()
        return ta.written, tb.written, a.written_at

    written_a, written_b, when = asyncio.run(scenario())
    assert written_a == written_b == [chunk(frame(1) + frame(2) + frame(3))]
    assert when > 0


def test_frames_left_pending_are_written_on_the_next_loop_turn_without_a_flush_call():
    async def scenario():
        coalescer = Coalescer()
        sub, transport = caught_up("logs:etl:ws")
        sub.deliver(7, frame(7), coalescer)
        assert transport.written == []
        await asyncio.sleep(0)
        return transport.written

    assert asyncio.run(scenario()) == [chunk(frame(7))]


def test_a_write_past_the_limit_is_refused_and_ends_the_connection_with_overflow():
    async def scenario():
        coalescer = Coalescer()
        sub, transport = caught_up("logs:etl:ws", limit=4096, unread=4000)
        sub.deliver(1, frame(1) * 10, coalescer)
        coalescer.flush()
        return sub, transport

    sub, transport = asyncio.run(scenario())
    assert transport.written == []
    assert sub.sink is None and sub.outbox.overflowed and sub.outbox.ready.is_set()
    assert not sub.gone


def test_a_client_gone_is_noticed_on_write_and_its_writer_woken_to_end():
    async def scenario():
        coalescer = Coalescer()
        sub, transport = caught_up("logs:etl:ws")
        transport.closing = True
        sub.deliver(1, frame(1), coalescer)
        coalescer.flush()
        return sub, transport

    sub, transport = asyncio.run(scenario())
    assert transport.written == [] and sub.sink is None
    assert sub.gone and sub.outbox.ready.is_set() and not sub.outbox.overflowed


def test_a_connection_taken_back_before_the_flush_gets_nothing_more():
    async def scenario():
        coalescer = Coalescer()
        sub, transport = caught_up("logs:etl:ws")
        sub.deliver(1, frame(1), coalescer)
        sub.take_back_sink()  # its writer is ending it (drain, expiry): the final frame is last
        coalescer.flush()
        return transport.written

    assert asyncio.run(scenario()) == []


def test_a_request_served_without_logstreams_http_protocol_has_no_connection_to_write_to():
    assert connection_of({"type": "http"}) is None
    assert connection_of({"type": "http", "logstream.connection": "not one"}) is None


def test_the_hub_writes_caught_up_connections_directly_and_filters_them_too():
    async def scenario():
        source = MemoryLogSource()
        live = MemoryLiveFeed()
        source.live_feeds.append(live)
        hub = Hub(source, live)
        plain, t_plain = caught_up("logs:etl:ws")
        errors, t_errors = caught_up("logs:etl:ws", min_level=3)
        for sub in (plain, errors):
            await hub.subscribe(sub)
        for n, level in enumerate(("info", "error", "info")):
            body = json.dumps({"channel": "logs:etl:ws", "message": f"m{n}", "level": level})
            await source.publish("logs.etl.ws", body.encode())
        async with asyncio.timeout(5):
            while len(b"".join(t_plain.written).split(b"event: log")) < 4:
                await asyncio.sleep(0.01)  # the hub's follow task runs on this loop
        await hub.close()
        return t_plain.written, t_errors.written, hub.delivered_total

    plain, errors, delivered = asyncio.run(scenario())
    assert b"".join(plain).count(b"event: log") == 3
    assert b"".join(errors).count(b"event: log") == 1
    assert b"m1" in b"".join(errors) and b"m0" not in b"".join(errors)
    assert delivered == 4
