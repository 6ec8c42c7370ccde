"""Resume and history: every record after the cursor, once, in order, then live (docs/reference/stream.md)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.nats_link import ensure_stream
from logstream.shared.user_tokens import UserTokens
from tests.support import ledger
from tests.support.nats_source import connect_as
from tests.support.processes import ServiceProcess
from tests.support.sse_client import open_stream

TOKEN = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"])


@pytest.fixture(scope="module")
def gateways(nats_server, log_dir, js_writer):
    pair = [
        ServiceProcess("gateway", nats_url=nats_server.url, log_dir=log_dir).start()
        for _ in range(2)
    ]
    yield pair
    for gateway in pair:
        gateway.stop()


def url(gateway, *channels: str, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{gateway.url}/api/logs/stream?channels={','.join(channels)}" + (
        "&" + query if query else ""
    )


async def test_last_event_id_replays_every_later_record_then_goes_live(
    gateways, js_writer, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    seqs = [await js_writer.put(channel, f"old {i}") for i in range(10)]
    async with open_stream(
        url(gateways[0], channel), token=TOKEN, headers={"Last-Event-ID": str(seqs[2])}
    ) as stream:
        connected = await stream.next_of("connected")
        assert int(connected.id) == seqs[2]
        replayed = await stream.logs(7)
        live = await js_writer.put(channel, "new")
        [fresh] = await stream.logs(1)
    assert [r["seq"] for r in replayed] == seqs[3:]
    assert fresh["seq"] == live


async def test_the_query_parameter_resumes_like_the_header(gateways, js_writer, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    seqs = [await js_writer.put(channel) for _ in range(3)]
    async with open_stream(url(gateways[1], channel, last_event_id=seqs[0]), token=TOKEN) as stream:
        records = await stream.logs(2)
    assert [r["seq"] for r in records] == seqs[1:]


async def test_resume_covers_several_channels_and_wildcards_in_seq_order(
    gateways, js_writer, unique_id
):
    a, b = f"logs:etl:workspace123:{unique_id}", f"logs:faas:workspace123:{unique_id}"
    start = await js_writer.put(a, "before")
    sent = [await js_writer.put(c) for c in [a, b, a, b, b]]
    await js_writer.put(f"logs:etl:workspace456:{unique_id}", "someone else's")
    async with open_stream(
        url(gateways[0], "logs:etl:workspace123:*", b),
        token=TOKEN,
        headers={"Last-Event-ID": str(start)},
    ) as stream:
        received = []
        while len(received) < len(sent) or received[-1]["seq"] < sent[-1]:
            received += await stream.logs(1)
    mine = [r["seq"] for r in received if unique_id in r["channel"]]
    assert mine == sent
    assert all(r["channel"].split(":")[2] == "workspace123" for r in received)


async def test_a_client_that_reconnects_to_another_gateway_misses_and_repeats_nothing(
    gateways, js_writer, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    sent: list[int] = []
    stop = asyncio.Event()

    async def publish():
        while not stop.is_set() and len(sent) < 400:
            sent.append(await js_writer.put(channel, f"r{len(sent)}"))
            await asyncio.sleep(0.002)

    publisher = asyncio.create_task(publish())
    received: list[int] = []
    last = None
    for round_ in range(4):  # four connections, alternating gateways, each cut mid-stream
        headers = {"Last-Event-ID": str(last)} if last is not None else {}
        async with open_stream(
            url(gateways[round_ % 2], channel), token=TOKEN, headers=headers
        ) as stream:
            connected = await stream.next_of("connected")
            if last is None:
                first_cursor = int(connected.id)
            received += [r["seq"] for r in await stream.logs(40)]
            last = received[-1]
    stop.set()
    await publisher
    async with open_stream(
        url(gateways[0], channel), token=TOKEN, headers={"Last-Event-ID": str(last)}
    ) as stream:
        rest = [s for s in sent if s > last]
        if rest:
            received += [r["seq"] for r in await stream.logs(len(rest))]
    expected = [s for s in sent if s > first_cursor]
    ledger.account("four cuts, alternating two gateways", expected, received)
    assert received == expected, f"sent {len(expected)}, received {len(received)}"


async def test_tail_replays_the_last_n_records_of_the_channels(gateways, js_writer, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    seqs = [await js_writer.put(channel, f"m{i}") for i in range(30)]
    await js_writer.put(f"logs:etl:workspace123:other{unique_id}", "not mine")
    async with open_stream(url(gateways[0], channel, tail=5), token=TOKEN) as stream:
        records = await stream.logs(5)
        live = await js_writer.put(channel, "live")
        [fresh] = await stream.logs(1)
    assert [r["seq"] for r in records] == seqs[-5:]
    assert fresh["seq"] == live


async def test_tail_larger_than_the_history_replays_all_of_it(gateways, js_writer, unique_id):
    channel = f"logs:faas:workspace123:{unique_id}"
    seqs = [await js_writer.put(channel) for _ in range(3)]
    async with open_stream(url(gateways[1], channel, tail=100), token=TOKEN) as stream:
        records = await stream.logs(3)
    assert [r["seq"] for r in records] == seqs


async def test_since_replays_records_newer_than_the_duration(gateways, js_writer, unique_id):
    channel = f"logs:analytics:{unique_id}"
    token = UserTokens(DEV_JWT_SECRET).issue("u", [unique_id])
    seqs = [await js_writer.put(channel) for _ in range(4)]
    async with open_stream(url(gateways[0], channel, since="10m"), token=token) as stream:
        records = await stream.logs(4)
    assert [r["seq"] for r in records] == seqs


async def test_since_in_the_future_replays_nothing_and_goes_live(gateways, js_writer, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    await js_writer.put(channel, "old")
    async with open_stream(
        url(gateways[0], channel, since="2999-01-01T00:00:00Z"), token=TOKEN
    ) as stream:
        await stream.next_of("connected")
        live = await js_writer.put(channel, "live")
        [record] = await stream.logs(1)
    assert record["seq"] == live


async def test_a_resume_point_that_aged_out_starts_with_a_gap_event(own_broker, log_dir):
    broker = own_broker
    client = await connect_as(broker.url, "ingest")
    js = client.jetstream()
    await ensure_stream(js, max_age_s=600, max_bytes=1 << 24, duplicate_window_s=60)
    record = json.dumps({"channel": "logs:etl:workspace123:gap", "message": "m"}).encode()
    seqs = [(await js.publish("logs.etl.workspace123.gap", record)).seq for _ in range(10)]
    admin = await connect_as(broker.url, "admin")  # no service may purge: only an operator
    await admin.jetstream().purge_stream("LOGS", seq=seqs[6])  # seqs[0..5] age out
    await admin.close()
    gateway = ServiceProcess("gateway", nats_url=broker.url, log_dir=log_dir).start()
    try:
        async with open_stream(
            f"{gateway.url}/api/logs/stream?channels=logs:etl:workspace123:gap",
            token=TOKEN,
            headers={"Last-Event-ID": str(seqs[1])},
        ) as stream:
            gap = await stream.next_of("gap")
            records = await stream.logs(4)
    finally:
        gateway.stop()
        await client.close()
    assert json.loads(gap.data) == {"from": seqs[2], "to": seqs[5]}
    assert [r["seq"] for r in records] == seqs[6:]


def test_a_bad_last_event_id_header_is_400(gateways):
    response = httpx.get(
        url(gateways[0], "logs:etl:workspace123"),
        headers={"Authorization": f"Bearer {TOKEN}", "Last-Event-ID": "x1"},
    )
    assert response.status_code == 400
    assert "last_event_id" in response.json()["message"]
