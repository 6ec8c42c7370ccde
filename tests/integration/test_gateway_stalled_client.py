"""A client that stops reading for good is let go after ``send_timeout``: its connection is
closed, and what it held (its slot under ``max_connections_per_user``, its queued bytes, its
descriptor) comes back. Before this, the gateway ended such a stream with ``overflow`` and then
waited for ever to write that last frame (the soak in bench/ found 81 stalled readers all still
held, one for 29 minutes).
"""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support.processes import ServiceProcess

SEND_TIMEOUT_S = 2.0
# Bounds the wait for the slot to come back (it is due SEND_TIMEOUT_S after the overflow).
DEADLINE_S = 60.0
TOKEN = UserTokens(DEV_JWT_SECRET).issue("stalled-user", ["workspace123"])


@pytest.fixture(scope="module")
def gateway(nats_server, log_dir, js_writer):
    service = ServiceProcess(
        "gateway",
        nats_url=nats_server.url,
        log_dir=log_dir,
        args=[
            "--send-timeout",
            str(SEND_TIMEOUT_S),
            "--max-connections-per-user",
            "1",
        ],
    )
    yield service.start()
    service.stop()


def _stalled_stream(port: int, channel: str) -> socket.socket:
    """A stream request on a socket with a tiny receive buffer that is then never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /api/logs/stream?channels={channel} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    return sock


async def _connections(client: httpx.AsyncClient, gateway) -> int:
    """The gateway's open HTTP connections (this scrape's own included)."""
    metrics = (await client.get(f"{gateway.url}/metrics")).text
    line = next(x for x in metrics.splitlines() if x.startswith("logstream_http_connections "))
    return int(float(line.split()[1]))


async def test_a_client_that_never_reads_is_let_go_and_its_connection_closed(
    gateway, js_writer, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    url = f"{gateway.url}/api/logs/stream?channels={channel}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=10, limits=fresh) as client:
        before = await _connections(client, gateway)
        stalled = _stalled_stream(gateway.port, channel)
        try:
            # Its one slot is taken by the stalled stream (once the gateway has opened it).
            deadline = time.monotonic() + DEADLINE_S
            while (await client.get(url, headers=headers)).status_code != 429:
                assert time.monotonic() < deadline, "the stalled stream never took its slot"
                await asyncio.sleep(0.05)
            # Far more than its outbox and the socket buffers: the stream overflows, and its
            # last frames cannot be written either.
            await js_writer.put_many(channel, 8000, size=1024)
            # Let go: its slot is free and its connection is closed by the gateway.
            deadline = time.monotonic() + DEADLINE_S
            while await _connections(client, gateway) > before:
                assert time.monotonic() < deadline, "the stalled reader's connection stays open"
                await asyncio.sleep(0.2)
            async with client.stream("GET", url, headers=headers) as answer:
                assert answer.status_code == 200
        finally:
            stalled.close()
    assert "whose client stopped reading" in gateway.log()
