"""Caught-up connections get their records written straight to the socket (logstream.services.gateway.direct).

What a reader notices: every record once and in order whatever mix of filters and channels
shares a read batch, the HTTP framing stays valid (the keep-alive connection serves the next
request after the stream's last frame), and the final frame is the last thing sent.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import pytest

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support.processes import ServiceProcess
from tests.support.sse_client import open_stream
from tests.support.waiting import wait_until

TOKENS = UserTokens(DEV_JWT_SECRET)
ADMIN = {"Authorization": "Bearer " + TOKENS.issue("ops", ["*"], roles=["admin"])}
DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def gateway(nats_server, log_dir, js_writer):
    service = ServiceProcess(
        "gateway",
        nats_url=nats_server.url,
        log_dir=log_dir,
        args=["--heartbeat", "0.5", "--jwt-leeway", "0"],
    )
    yield service.start()
    service.stop()


async def stats(gateway) -> dict:
    async with httpx.AsyncClient(headers=ADMIN, timeout=10) as client:
        return (await client.get(f"{gateway.url}/admin/logs/stats")).json()


async def direct_connections_at_least(gateway, count: int) -> bool:
    return (await stats(gateway))["direct_connections"] >= count


async def channel_count_is(gateway, channel: str, count: int | None) -> bool:
    """Whether the gateway counts ``count`` connections on ``channel`` (None: it has let the
    channel go)."""
    return (await stats(gateway))["channels"].get(channel) == count


def url(gateway, *channels: str, **params) -> str:
    query = "".join(f"&{k}={v}" for k, v in params.items())
    return f"{gateway.url}/api/logs/stream?channels={','.join(channels)}{query}"


async def test_streams_with_filters_and_several_channels_each_get_their_records_in_order(
    gateway, js_writer, unique_id
):
    one, two = f"logs:etl:{unique_id}:one", f"logs:etl:{unique_id}:two"
    token = TOKENS.issue("reader", [unique_id])
    async with (
        open_stream(url(gateway, one), token=token) as plain,
        open_stream(url(gateway, one, level="error"), token=token) as errors,
        open_stream(url(gateway, one, two), token=token) as both,
    ):
        for stream in (plain, errors, both):
            await stream.next_of("connected")
        await wait_until(
            lambda: direct_connections_at_least(gateway, 3),
            "the three caught-up streams to be written directly",
            timeout=DEADLINE_S,
        )
        sent = await js_writer.put_many(one, 300)  # concurrent acks: large read batches
        other = [await js_writer.put(two, f"two {i}") for i in range(5)]
        failed = [await js_writer.put(one, f"bad {i}", level="error") for i in range(3)]
        got_plain = await plain.logs(303)
        got_errors = await errors.logs(3)
        got_both = await both.logs(308)
    assert [r["seq"] for r in got_plain] == sent + failed
    assert [r["message"] for r in got_errors] == [f"bad {i}" for i in range(3)]
    assert [r["seq"] for r in got_both] == sorted(sent + other + failed)


async def test_after_the_last_frame_the_keep_alive_connection_serves_the_next_request(
    gateway, js_writer, unique_id
):
    """Records keep coming while the token expires: no stray chunk may follow the stream's
    terminating chunk, or the next response on the same connection would be garbage."""
    channel = f"logs:etl:{unique_id}:expiring"
    token = jwt.encode(
        {"sub": "brief", "workspaces": [unique_id], "exp": int(time.time()) + 2},
        DEV_JWT_SECRET,
        algorithm="HS256",
    )
    stop = asyncio.Event()

    async def publish() -> None:
        while not stop.is_set():  # as fast as JetStream acks: records in every read batch
            await js_writer.put_many(channel, 50, size=20)

    async with httpx.AsyncClient(
        timeout=httpx.Timeout(DEADLINE_S), limits=httpx.Limits(max_connections=1)
    ) as client:
        publisher = asyncio.create_task(publish())
        try:
            async with client.stream(
                "GET", url(gateway, channel), headers={"Authorization": f"Bearer {token}"}
            ) as response:
                body = await asyncio.wait_for(response.aread(), DEADLINE_S)
        finally:
            stop.set()
            await publisher
        after = await client.get(f"{gateway.url}/health")
    events = body.decode().split("\n\n")
    assert "event: auth-expired" in events[-2]
    assert sum("event: log" in e for e in events) > 0
    assert after.status_code == 200 and after.json()["status"] == "ok"


async def test_a_client_that_leaves_a_caught_up_stream_is_let_go(gateway, js_writer, unique_id):
    channel = f"logs:etl:{unique_id}:leaving"
    token = TOKENS.issue("leaver", [unique_id])
    async with open_stream(url(gateway, channel), token=token) as stream:
        await stream.next_of("connected")
        await wait_until(
            lambda: channel_count_is(gateway, channel, 1),
            "the gateway to count the stream on its channel",
            timeout=DEADLINE_S,
        )
        await wait_until(
            lambda: direct_connections_at_least(gateway, 1),
            "the caught-up stream to be written directly",
            timeout=DEADLINE_S,
        )
    for i in range(3):  # writes to the closed socket are refused, nothing is raised
        await js_writer.put(channel, f"after {i}")
    await wait_until(
        lambda: channel_count_is(gateway, channel, None),
        "the gateway to let the channel go after the client left",
        timeout=DEADLINE_S,
    )
