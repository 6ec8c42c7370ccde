"""Live records by interest (logstream.services.gateway.live, the hub) against a real nats-server.

The feed alone first (order, seqs, one copy per matching pattern, permissions), then gateway
processes: a gateway reads only what its streams watch, a connect on a channel it already
follows asks the broker nothing, and the no-loss ledger under churn, a cut broker link, and a
channel served by two gateways.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import nats.errors
import pytest

from logstream.services.gateway.live import MISSED, NatsLiveFeed
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.nats_link import ensure_stream, settle
from logstream.shared.nats_names import LIVE_SUBJECTS, STREAM_NAME
from logstream.shared.user_tokens import UserTokens
from tests.support import ledger
from tests.support.metrics import metric_value
from tests.support.nats_source import connect_as
from tests.support.processes import ServiceProcess
from tests.support.sse_client import open_stream
from tests.support.tcp_cut import CuttableLink

TOKEN = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"])
# Generous: a loaded machine running the whole suite; a passing test returns at once.
DEADLINE_S = 20.0


def stream_url(gateway, *channels: str) -> str:
    return f"{gateway.url}/api/logs/stream?channels={','.join(channels)}"


async def stats(gateway) -> dict:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{gateway.url}/admin/logs/stats")
        response.raise_for_status()
        return response.json()


async def records_read(gateway) -> float:
    return await asyncio.to_thread(
        metric_value, gateway.url, "logstream_gateway_records_read_total"
    )


@pytest.fixture(scope="module")
def gateway_pair(nats_server, log_dir, js_writer):
    pair = [
        ServiceProcess(
            "gateway",
            nats_url=nats_server.url,
            log_dir=log_dir,
            args=["--max-connections-per-user", "500"],
        ).start()
        for _ in range(2)
    ]
    yield pair
    for gateway in pair:
        gateway.stop()


# -- the feed ---------------------------------------------------------------------------------


async def test_the_feed_carries_each_stored_record_in_order_with_its_seq_and_the_previous_one(
    nats_server, js_writer, unique_id
):
    client = await nats_server.connect("gateway")
    feed = NatsLiveFeed(client)
    a, b = f"logs.etl.workspace123.{unique_id}a", f"logs.etl.workspace123.{unique_id}b"
    try:
        await feed.add(a)
        await feed.add(b)
        await feed.add(f"logs.etl.workspace123.{unique_id}*".rsplit(".", 1)[0] + ".*")
        await settle(client)
        sent = [
            await js_writer.put(subject.replace(".", ":"), f"m{i}")
            for i, subject in enumerate([a, b, a, a])
        ]
        got = []
        async with asyncio.timeout(DEADLINE_S):
            while len(got) < 8:  # each record matches its own subject and the wildcard
                got += await feed.next_batch(100)
        assert MISSED not in got
        assert [m.seq for m in got] == [s for s in sent for _ in range(2)]
        assert [m.subject for m in got[::2]] == [a, b, a, a]
        assert [m.previous for m in got[::2]] == [0, 0, sent[0], sent[2]]
        assert json.loads(got[0].data)["message"] == "m0"
        await feed.remove(a)
        await feed.remove(b)
        await settle(client)
        only_wild = await js_writer.put(a.replace(".", ":"), "after")
        async with asyncio.timeout(DEADLINE_S):
            after = await feed.next_batch(100)
        assert [m.seq for m in after] == [only_wild]
    finally:
        await client.close()


async def test_ingest_gives_a_stream_made_before_live_republish_its_republish(own_broker):
    admin = await connect_as(own_broker.url, "admin")
    js = admin.jetstream()
    try:
        await js.add_stream(name=STREAM_NAME, subjects=["logs.>"])  # as an older ingest left it
        assert (await js.stream_info(STREAM_NAME)).config.republish is None
        await ensure_stream(js, max_age_s=60, max_bytes=1 << 20, duplicate_window_s=10)
        republish = (await js.stream_info(STREAM_NAME)).config.republish
        assert (republish.src, republish.dest) == ("logs.>", LIVE_SUBJECTS)
    finally:
        await admin.close()


async def test_the_live_stream_has_its_republish_on_the_shared_broker(nats_server, js_writer):
    admin = await nats_server.connect("admin")
    try:
        republish = (await admin.jetstream().stream_info(STREAM_NAME)).config.republish
        assert (republish.src, republish.dest) == ("logs.>", LIVE_SUBJECTS)
    finally:
        await admin.close()


@pytest.mark.parametrize("role", ["producer", "ingest"])
async def test_only_the_gateway_may_read_live_records(nats_server, role):
    if not nats_server.with_users:
        pytest.skip("this broker has no users (NATS_URL or a container)")
    refused = asyncio.Event()

    async def on_error(exc):
        if "permissions violation" in str(exc).lower():
            refused.set()

    client = await nats_server.connect(role, error_cb=on_error)
    try:
        await client.subscribe(LIVE_SUBJECTS)
        await client.flush()
        await asyncio.wait_for(refused.wait(), DEADLINE_S)
    finally:
        await client.close()


async def test_nobody_can_forge_a_live_record(nats_server):
    if not nats_server.with_users:
        pytest.skip("this broker has no users (NATS_URL or a container)")
    for role in ("producer", "ingest", "gateway"):
        refused = asyncio.Event()

        async def on_error(exc, refused=refused):
            if "permissions violation" in str(exc).lower():
                refused.set()

        client = await nats_server.connect(role, error_cb=on_error)
        try:
            await client.publish("live.logs.etl.workspace123.forged", b"{}")
            await client.flush()
            await asyncio.wait_for(refused.wait(), DEADLINE_S)
        except nats.errors.Error:
            pass
        finally:
            await client.close()


# -- a gateway's read cost --------------------------------------------------------------------


async def test_a_gateway_reads_only_the_records_its_streams_watch(
    gateway_pair, js_writer, unique_id
):
    gateway = gateway_pair[0]
    watched = f"logs:etl:workspace123:{unique_id}"
    async with open_stream(stream_url(gateway, watched), token=TOKEN) as stream:
        await stream.next_of("connected")
        before = await records_read(gateway)
        for index in range(50):
            await js_writer.put(f"logs:etl:workspace123:{unique_id}other{index % 5}")
        wanted = [await js_writer.put(watched, f"w{i}") for i in range(5)]
        assert [r["seq"] for r in await stream.logs(5)] == wanted
        assert await records_read(gateway) - before == 5


async def test_a_connect_on_a_channel_the_gateway_follows_asks_the_broker_nothing(
    gateway_pair, js_writer, unique_id
):
    gateway = gateway_pair[0]
    channel = f"logs:etl:workspace123:{unique_id}"
    async with open_stream(stream_url(gateway, channel), token=TOKEN) as first:
        await first.next_of("connected")
        before = (await stats(gateway))["broker"]
        async with open_stream(stream_url(gateway, channel), token=TOKEN) as second:
            await second.next_of("connected")
            seq = await js_writer.put(channel)
            assert [r["seq"] for r in await second.logs(1)] == [seq]
            assert [r["seq"] for r in await first.logs(1)] == [seq]
        assert (await stats(gateway))["broker"] == before


async def test_a_client_that_leaves_lets_go_of_its_stream_at_once(gateway_pair, unique_id):
    gateway = gateway_pair[1]
    channel = f"logs:etl:workspace123:{unique_id}"
    async with open_stream(stream_url(gateway, channel), token=TOKEN) as stream:
        connected = json.loads((await stream.next_of("connected")).data)
    # No record and no heartbeat is due: only the closed socket tells the gateway.
    async with asyncio.timeout(DEADLINE_S):
        while (
            connected["connection_id"] in json.dumps(await stats(gateway))
            or channel in (await stats(gateway))["channels"]
        ):
            await asyncio.sleep(0.01)


# -- the ledger -------------------------------------------------------------------------------


async def test_streams_that_stay_open_lose_nothing_while_others_churn(
    gateway_pair, js_writer, unique_id
):
    gateway = gateway_pair[0]
    stable = [f"logs:etl:workspace123:{unique_id}s{i}" for i in range(10)]
    sent: dict[str, list[int]] = {c: [] for c in stable}
    received: dict[str, list[int]] = {c: [] for c in stable}
    stop = asyncio.Event()

    async def publish():
        index = 0
        while not stop.is_set():
            channel = stable[index % len(stable)]
            sent[channel].append(await js_writer.put(channel, f"r{index}"))
            index += 1
            await asyncio.sleep(0.001)

    async def churn():
        for index in range(60):  # each on a channel the gateway has never seen
            url = stream_url(gateway, f"logs:etl:workspace123:{unique_id}c{index}")
            async with open_stream(url, token=TOKEN) as stream:
                await stream.next_of("connected")

    async def read(channel, stream):
        async for event in stream.events:
            if event.event == "log":
                received[channel].append(json.loads(event.data)["seq"])

    def all_arrived() -> bool:
        return all(len(received[c]) >= len(sent[c]) for c in stable)

    streams = [open_stream(stream_url(gateway, c), token=TOKEN) for c in stable]
    opened = [await s.__aenter__() for s in streams]
    try:
        for stream in opened:
            await stream.next_of("connected")
        readers = [asyncio.create_task(read(c, s)) for c, s in zip(stable, opened)]
        publisher = asyncio.create_task(publish())
        await churn()
        stop.set()
        await publisher
        try:
            async with asyncio.timeout(DEADLINE_S):
                while not all_arrived():
                    await asyncio.sleep(0.01)
        finally:
            for reader in readers:
                reader.cancel()
    finally:
        for stream in streams:
            await stream.__aexit__(None, None, None)
    all_sent = sorted(s for seqs in sent.values() for s in seqs)
    all_received = sorted(s for seqs in received.values() for s in seqs)
    ledger.account(
        "10 streams open while 60 others open and close on new channels", all_sent, all_received
    )
    assert received == sent


async def test_a_cut_broker_link_under_steady_publishing_loses_and_repeats_nothing(
    nats_server, log_dir, js_writer, unique_id
):
    channels = [f"logs:etl:workspace123:{unique_id}{name}" for name in ("a", "b")]
    async with CuttableLink(nats_server.url) as link:
        gateway = ServiceProcess("gateway", nats_url=link.url, log_dir=log_dir)
        await asyncio.to_thread(gateway.start)
        sent: list[int] = []
        received: list[int] = []
        try:
            async with open_stream(stream_url(gateway, *channels), token=TOKEN) as stream:
                await stream.next_of("connected")

                async def publish(count: int):
                    for index in range(count):
                        sent.append(await js_writer.put(channels[index % 2], f"r{index}"))
                        await asyncio.sleep(0.002)

                await publish(50)
                for cut in range(3):
                    cut_during = asyncio.create_task(publish(100))
                    await asyncio.sleep(0.05)
                    link.cut()
                    await cut_during
                    async with asyncio.timeout(DEADLINE_S):  # the gateway is back
                        while link.connections < cut + 2:
                            await asyncio.sleep(0.01)
                await publish(50)
                received += [r["seq"] for r in await stream.logs(len(sent), timeout=60)]
            catch_ups = (await stats(gateway))["broker"]["catch_ups"]
        finally:
            await asyncio.to_thread(gateway.stop)
    ledger.account(
        "a gateway's broker link cut 3 times under steady publishing (one stream, no reconnect)",
        sent,
        received,
    )
    assert received == sent
    assert link.connections >= 4 and catch_ups >= 3


async def test_a_channel_two_gateways_serve_reaches_both_and_resumes_on_either(
    gateway_pair, js_writer, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    one, two = gateway_pair
    async with (
        open_stream(stream_url(one, channel), token=TOKEN) as first,
        open_stream(stream_url(two, channel), token=TOKEN) as second,
    ):
        await first.next_of("connected")
        await second.next_of("connected")
        sent = [await js_writer.put(channel, f"r{i}") for i in range(20)]
        got_one = [r["seq"] for r in await first.logs(20)]
        got_two = [r["seq"] for r in await second.logs(10)]
    more = [await js_writer.put(channel, f"s{i}") for i in range(10)]
    async with open_stream(
        stream_url(one, channel), token=TOKEN, headers={"Last-Event-ID": str(got_two[-1])}
    ) as resumed:
        got_two += [r["seq"] for r in await resumed.logs(20)]
    ledger.account(
        "one channel on two gateways, the second resumed on the first", sent + more, got_two
    )
    assert got_one == sent
    assert got_two == sent + more


async def test_a_gateway_on_a_stream_without_live_republish_is_not_ready_and_says_why(
    own_broker, log_dir
):
    admin = await connect_as(own_broker.url, "admin")
    js = admin.jetstream()
    await js.add_stream(name=STREAM_NAME, subjects=["logs.>"])  # as an older ingest left it
    gateway = ServiceProcess("gateway", nats_url=own_broker.url, log_dir=log_dir)
    await asyncio.to_thread(gateway.start)
    try:
        async with httpx.AsyncClient() as client:
            async with asyncio.timeout(DEADLINE_S):
                while (answer := await client.get(f"{gateway.url}/ready")).status_code == 200:
                    await asyncio.sleep(0.05)
            assert answer.status_code == 503
            assert "republish" in answer.text
            await ensure_stream(js, max_age_s=60, max_bytes=1 << 20, duplicate_window_s=10)
            async with asyncio.timeout(DEADLINE_S):  # an ingest of this version started
                while (await client.get(f"{gateway.url}/ready")).status_code != 200:
                    await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(gateway.stop)
        await admin.close()


async def test_a_user_at_the_cap_who_reloads_is_let_back_in_at_once(
    nats_server, log_dir, js_writer, unique_id
):
    """The old stream's slot is free as soon as the gateway has seen its socket close: the
    reload's request, sent after that, finds it free (no waiting for a probe or a heartbeat)."""
    gateway = ServiceProcess(
        "gateway",
        nats_url=nats_server.url,
        log_dir=log_dir,
        args=["--max-connections-per-user", "1", "--heartbeat", "60"],
    )
    await asyncio.to_thread(gateway.start)
    token = UserTokens(DEV_JWT_SECRET).issue(f"reloader-{unique_id}", ["workspace123"])
    path = f"/api/logs/stream?channels=logs:etl:workspace123:{unique_id}"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    try:
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(request)
            async with asyncio.timeout(DEADLINE_S):
                head = b""
                while b"event: connected" not in head:
                    data = await reader.read(4096)
                    assert data, head
                    head += data
                assert head.startswith(b"HTTP/1.1 200"), head[:200]
                writer.write_eof()  # the tab closes...
                while await reader.read(4096):  # ...and the gateway has seen it go
                    pass
            writer.close()
            async with open_stream(f"{gateway.url}{path}", token=token) as again:  # reload
                assert (await again.next()).event == "connected"
    finally:
        await asyncio.to_thread(gateway.stop)
