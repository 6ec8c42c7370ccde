"""``logstream.services.proxy.upstream``: one gateway request on a plain asyncio connection.

The "gateway" here is an asyncio server in the test's own loop that writes scripted bytes, so
the parser sees real socket reads split wherever the script splits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import httpx
import pytest

from logstream.services.proxy.upstream import GatewayUnreachable, open_gateway_stream
from tests.support.nats_source import free_port

DEADLINE_S = 10.0
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunked(*bodies: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(body), body) for body in bodies) + b"0\r\n\r\n"


@contextlib.asynccontextmanager
async def scripted_server(*pieces: bytes, close: bool = True):
    """A server that reads one request head, then writes ``pieces`` as separate writes."""
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)  # let each piece leave as its own segment
        if close:
            writer.close()
        else:
            await reader.read()  # until the client hangs up

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", requests
    finally:
        server.close()


def get(base: str, **headers: str) -> httpx.Request:
    return httpx.Request(
        "GET", base + "/api/logs/stream", params={"channels": "logs:a:b"}, headers=headers
    )


async def body_of(stream) -> bytes:
    parts = []
    while True:
        await asyncio.wait_for(stream.wait(), DEADLINE_S)
        parts.append(stream.take())
        if stream.ended:
            parts.append(stream.take())
            return b"".join(parts)


async def test_a_chunked_body_split_anywhere_is_read_back_byte_exact():
    body = b"".join(b'id: %d\nevent: log\ndata: {"seq":%d}\n\n' % (i, i) for i in range(50))
    wire = HEAD + chunked(body[:7], body[7:300], body[300:301], body[301:])
    cuts = [0, 5, len(HEAD) + 1, len(HEAD) + 3, 200, 201, 402, len(wire) - 2, len(wire)]
    pieces = [wire[a:b] for a, b in itertools.pairwise(cuts)]
    async with scripted_server(*pieces) as (base, _):
        stream = await open_gateway_stream(get(base))
        assert stream.status == 200
        assert (b"content-type", b"text/event-stream") in stream.headers
        assert await body_of(stream) == body
        stream.close()


async def test_the_request_carries_its_path_query_and_headers():
    async with scripted_server(HEAD + chunked(b"x")) as (base, requests):
        stream = await open_gateway_stream(get(base, **{"Last-Event-ID": "7"}))
        await body_of(stream)
        stream.close()
    (head,) = requests
    assert head.startswith(b"GET /api/logs/stream?channels=logs%3Aa%3Ab HTTP/1.1\r\n")
    assert b"\r\nLast-Event-ID: 7\r\n" in head and b"\r\nHost: 127.0.0.1:" in head


async def test_pushed_reads_reach_the_consumer_in_order_and_nothing_is_buffered():
    frames = [b"data: %d\n\n" % i for i in range(20)]
    async with scripted_server(
        HEAD, *(b"%x\r\n%b\r\n" % (len(f), f) for f in frames), b"0\r\n\r\n"
    ) as (base, _):
        stream = await open_gateway_stream(get(base))
        got: list[bytes] = []
        stream.push_to(got.append)
        while not stream.ended:
            await asyncio.wait_for(stream.wait(), DEADLINE_S)
        assert b"".join(got) == b"".join(frames) and stream.buffered == 0
        stream.close()


async def test_bytes_given_back_are_buffered_ahead_of_newer_ones():
    async with scripted_server(HEAD, b"5\r\nfirst\r\n", close=False) as (base, _):
        stream = await open_gateway_stream(get(base))
        stream.push_to(lambda data: stream.give_back(data))
        await asyncio.wait_for(stream.wait(), DEADLINE_S)
        assert stream.take() == b"first"
        stream.close()


async def test_an_error_answer_is_read_with_its_status_reason_and_headers():
    error = b'{"error":"rate_limited","message":"slow down","details":[]}'
    wire = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\ncontent-length: %d\r\n\r\n%b" % (
        len(error),
        error,
    )
    async with scripted_server(wire[:20], wire[20:]) as (base, _):
        stream = await open_gateway_stream(get(base))
        assert (stream.status, stream.reason) == (429, b"Too Many Requests")
        assert (b"retry-after", b"5") in stream.headers
        assert await stream.read_body(64 * 1024) == error
        stream.close()


async def test_a_refused_connection_is_unreachable():
    with pytest.raises(GatewayUnreachable):
        await open_gateway_stream(get(f"http://127.0.0.1:{free_port()}"))


@pytest.mark.parametrize("answer", [b"", b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 200 OK\r\n"])
async def test_a_gateway_that_hangs_up_or_speaks_no_http_before_its_head_is_unreachable(answer):
    async with scripted_server(answer) as (base, _):
        with pytest.raises(GatewayUnreachable):
            await asyncio.wait_for(open_gateway_stream(get(base)), DEADLINE_S)


async def test_a_connection_lost_after_the_head_just_ends_the_body():
    async with scripted_server(HEAD + b"5\r\nhello\r\n") as (base, _):
        stream = await open_gateway_stream(get(base))
        assert await body_of(stream) == b"hello"
        stream.close()
