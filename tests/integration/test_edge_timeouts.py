"""Slow headers at the HTTP edge: a client that never finishes its headers loses its connection.

uvicorn has no header read timeout, so before this a connection that sent half a header line
stayed open for ever (4,000 of them were all still open 20 s later). Every service now answers
408 and closes such a connection after ``header_timeout`` (logstream.shared.uvicorn_adapter).
Here against a real ingest with a 1 s deadline, over raw sockets (an HTTP client library cannot
send half a request), while a well-behaved client is served on other connections.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.support.processes import ServiceProcess

HEADER_TIMEOUT_S = 1.0
# Bounds a failing wait only: the answer is due after HEADER_TIMEOUT_S.
ANSWER_WITHIN_S = 20.0
SLOW_CLIENTS = 200


@pytest.fixture(scope="module")
def ingest(nats_server, log_dir):
    service = ServiceProcess(
        "ingest",
        nats_url=nats_server.url,
        log_dir=log_dir,
        args=["--header-timeout", str(HEADER_TIMEOUT_S)],
    ).start()
    service.started_at = time.monotonic()
    yield service
    service.stop()


async def _open(service: ServiceProcess):
    return await asyncio.open_connection("127.0.0.1", service.port)


async def _answer_then_close(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), ANSWER_WITHIN_S)


async def test_half_sent_headers_get_408_and_the_connection_closes(ingest):
    reader, writer = await _open(ingest)
    writer.write(b"POST /api/logs/publish HTTP/1.1\r\nHost: x\r\nX-Half: ab")
    await writer.drain()
    answer = await _answer_then_close(reader)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"] == "request_timeout"


async def test_a_connection_that_sends_nothing_is_closed_too(ingest):
    reader, writer = await _open(ingest)
    answer = await _answer_then_close(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_a_kept_alive_connections_next_request_has_its_own_deadline(ingest):
    reader, writer = await _open(ingest)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b'"ingest"}'), ANSWER_WITHIN_S)
    assert first.startswith(b"HTTP/1.1 200 "), first
    writer.write(b"GET /health HTTP/1.1\r\nHost:")  # the next request, never finished
    await writer.drain()
    answer = await _answer_then_close(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_headers_sent_in_pieces_within_the_deadline_are_served(ingest):
    reader, writer = await _open(ingest)
    for piece in (b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n\r\n"):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(HEADER_TIMEOUT_S / 10)  # the client's pace, not a synchronisation
    answer = await _answer_then_close(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer


async def test_many_slow_clients_are_all_dropped_a_good_client_is_served_and_audited_once(
    ingest,
):
    slow = [await _open(ingest) for _ in range(SLOW_CLIENTS)]
    for _, writer in slow:
        writer.write(b"POST /api/logs/publish HTTP/1.1\r\nHost: x\r\nX-Half: ab")
    async with httpx.AsyncClient(base_url=ingest.url, timeout=10) as client:
        # Served while the slow ones hold their connections, and after they are dropped.
        assert (await client.get("/health")).status_code == 200
        answers = await asyncio.gather(*(_answer_then_close(reader) for reader, _ in slow))
        assert (await client.get("/health")).status_code == 200
    for _, writer in slow:
        writer.close()
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)
    # One audit line per address per minute, however many late clients it had (this module's
    # earlier tests came from the same address: one line in all, unless a busy machine made
    # the module outlast a minute).
    lines = [
        json.loads(line) for line in ingest.log_path.read_text().splitlines() if line[:1] == "{"
    ]
    audited = [line for line in lines if line.get("rule") == "header_timeout"]
    minutes = int((time.monotonic() - ingest.started_at) // 60)
    assert 1 <= len(audited) <= 1 + minutes, audited
    assert audited[0]["status"] == 408 and audited[0]["remote"] == "127.0.0.1"
