"""Fault injection on the reading side, counting every record sent and received: none may be lost.

Real processes and sockets: a gateway killed mid-stream, a client reconnecting in a tight loop,
a long replay next to a live reader, and 200 connections on one channel.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support import ledger
from tests.support.metrics import metric_value
from tests.support.processes import ServiceProcess
from tests.support.sse_client import open_stream

TOKENS = UserTokens(DEV_JWT_SECRET)
TOKEN = TOKENS.issue("user123", ["workspace123"])


@pytest.fixture(scope="module")
def gateways(nats_server, log_dir, js_writer):
    pair = [
        ServiceProcess(
            "gateway",
            nats_url=nats_server.url,
            log_dir=log_dir,
            args=["--max-connections-per-user", "250"],
        ).start()
        for _ in range(2)
    ]
    yield pair
    for gateway in pair:
        gateway.stop()


def stream_url(gateway, channel: str) -> str:
    return f"{gateway.url}/api/logs/stream?channels={channel}"


class Publisher:
    """Publishes to one channel in the background until stopped; remembers every seq."""

    def __init__(self, js_writer, channel: str, pause: float = 0.002) -> None:
        self.sent: list[int] = []
        self._stop = asyncio.Event()

        async def run():
            while not self._stop.is_set():
                self.sent.append(await js_writer.put(channel, f"r{len(self.sent)}"))
                await asyncio.sleep(pause)

        self._task = asyncio.create_task(run())

    async def stop(self) -> list[int]:
        self._stop.set()
        await self._task
        return self.sent


async def read_rest(gateway, channel: str, last: int, sent: list[int]) -> list[int]:
    rest = [seq for seq in sent if seq > last]
    if not rest:
        return []
    async with open_stream(
        stream_url(gateway, channel), token=TOKEN, headers={"Last-Event-ID": str(last)}
    ) as stream:
        return [r["seq"] for r in await stream.logs(len(rest), timeout=60)]


async def test_a_gateway_killed_mid_stream_loses_nothing_for_a_client_resuming_on_another(
    nats_server, log_dir, gateways, js_writer, unique_id
):
    victim = ServiceProcess("gateway", nats_url=nats_server.url, log_dir=log_dir).start()
    channel = f"logs:etl:workspace123:{unique_id}"
    publisher = Publisher(js_writer, channel)
    received: list[int] = []
    try:
        async with open_stream(stream_url(victim, channel), token=TOKEN) as stream:
            cursor = int((await stream.next_of("connected")).id)
            received += [r["seq"] for r in await stream.logs(50)]
            victim.kill()  # SIGKILL: no drain, no final frame
            try:
                while True:
                    received += [r["seq"] for r in await stream.logs(1, timeout=5)]
            except (EOFError, TimeoutError, httpx.HTTPError):
                pass  # the connection died with the gateway
    finally:
        victim.kill()
    async with asyncio.timeout(30):  # records keep coming while the client is away
        while len(publisher.sent) < len(received) + 200:
            await asyncio.sleep(0.01)
    sent = await publisher.stop()
    received += await read_rest(gateways[0], channel, received[-1], sent)
    expected = [seq for seq in sent if seq > cursor]
    ledger.account("gateway killed -9 mid-stream, resumed on another", expected, received)
    assert received == expected, f"sent {len(expected)}, received {len(received)}"


async def test_a_client_reconnecting_in_a_tight_loop_misses_and_repeats_nothing(
    gateways, js_writer, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    publisher = Publisher(js_writer, channel, pause=0.001)
    received: list[int] = []
    last = None
    for attempt in range(60):
        headers = {"Last-Event-ID": str(last)} if last is not None else {}
        async with open_stream(
            stream_url(gateways[attempt % 2], channel), token=TOKEN, headers=headers
        ) as stream:
            connected = await stream.next_of("connected")
            if last is None:
                cursor = last = int(connected.id)
            if attempt % 3 == 0:  # some connections leave before their first record
                got = [r["seq"] for r in await stream.logs(1)]
                received += got
                last = got[-1]
    sent = await publisher.stop()
    received += await read_rest(gateways[1], channel, last, sent)
    expected = [seq for seq in sent if seq > cursor]
    ledger.account("client reconnecting in a tight loop (60 connections)", expected, received)
    assert received == expected, f"sent {len(expected)}, received {len(received)}"
    async with httpx.AsyncClient() as client:
        for gateway in gateways:  # every one of those connections was released
            async with asyncio.timeout(15):
                while (
                    channel
                    in (await client.get(f"{gateway.url}/admin/logs/stats")).json()["channels"]
                ):
                    await asyncio.sleep(0.05)


async def test_a_100k_replay_delivers_everything_once_without_stalling_live_readers(
    gateways, js_writer, unique_id
):
    long_channel = f"logs:etl:workspace123:{unique_id}"
    live_channel = f"logs:faas:workspace123:{unique_id}"
    sent = await js_writer.put_many(long_channel, 100_000, size=20)
    gateway = gateways[0]
    async with open_stream(stream_url(gateway, live_channel), token=TOKEN) as live:
        await live.next_of("connected")
        async with open_stream(
            stream_url(gateway, long_channel),
            token=TOKEN,
            headers={"Last-Event-ID": str(sent[0] - 1)},
        ) as replay:
            await replay.next_of("connected")
            first = await replay.logs(1000, timeout=60)
            live_seq = await js_writer.put(live_channel, "while replaying")
            [fresh] = await live.logs(1, timeout=30)
            rest = await replay.logs(len(sent) - 1000, timeout=240)
    received = [r["seq"] for r in first + rest]
    ledger.account("replay of 100k records beside a live reader", sent, received)
    assert received == sent, f"sent {len(sent)}, received {len(received)}"
    assert fresh["seq"] == live_seq
    assert fresh["seq"] > sent[-1]  # the live reader got it while the replay was under way


async def test_200_connections_on_one_channel_cost_one_nats_read_per_record(
    gateways, js_writer, unique_id
):
    gateway, channel = gateways[1], f"logs:etl:workspace123:{unique_id}"

    def records_read() -> float:
        return metric_value(gateway.url, "logstream_gateway_records_read_total")

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None), limits=limits) as client:
        responses = []
        try:
            for _ in range(200):
                response = await client.send(
                    client.build_request(
                        "GET",
                        stream_url(gateway, channel),
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    ),
                    stream=True,
                )
                assert response.status_code == 200
                responses.append((response, response.aiter_lines()))
            for _, lines in responses:
                async with asyncio.timeout(30):
                    while not (await lines.__anext__()).startswith("data: "):
                        pass
            before = records_read()
            sent = [await js_writer.put(channel, f"to all {i}") for i in range(5)]
            for _, lines in responses:
                got = []
                async with asyncio.timeout(30):
                    while len(got) < len(sent):
                        line = await lines.__anext__()
                        if line.startswith("data: "):
                            got.append(json.loads(line[6:])["seq"])
                assert got == sent
            assert records_read() - before == len(sent)
        finally:
            for response, _ in responses:
                await response.aclose()
