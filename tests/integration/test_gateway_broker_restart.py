"""kill -9 the own_broker under open streams: after it returns, nothing acknowledged is lost."""

from __future__ import annotations

import json
import shutil

from logstream.shared.embedded_nats import EmbeddedNats
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.nats_link import ensure_stream
from logstream.shared.user_tokens import UserTokens
from tests.support import ledger
from tests.support.nats_source import connect_as
from tests.support.processes import ServiceProcess
from tests.support.sse_client import open_stream

TOKEN = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"])
CHANNEL = "logs:etl:workspace123:restart"


async def publish(broker: EmbeddedNats, count: int, start: int) -> list[int]:
    client = await connect_as(broker.url, "ingest")
    js = client.jetstream()
    await ensure_stream(js, max_age_s=600, max_bytes=1 << 26, duplicate_window_s=60)
    seqs = []
    for index in range(start, start + count):
        body = json.dumps({"channel": CHANNEL, "message": f"r{index}"}).encode()
        seqs.append((await js.publish(CHANNEL.replace(":", "."), body)).seq)
    await client.close()
    return seqs


async def test_streams_survive_a_broker_kill_and_lose_nothing(own_broker, log_dir):
    sent = await publish(own_broker, 5, 0)
    gateway = ServiceProcess("gateway", nats_url=own_broker.url, log_dir=log_dir).start()
    received: list[int] = []
    try:
        url = f"{gateway.url}/api/logs/stream?channels={CHANNEL}"
        async with open_stream(url, token=TOKEN, headers={"Last-Event-ID": "0"}) as stream:
            received += [r["seq"] for r in await stream.logs(5)]
            own_broker.kill()
            own_broker.start()
            sent += await publish(own_broker, 500, 5)
            try:
                received += [r["seq"] for r in await stream.logs(500, timeout=30)]
            except (EOFError, TimeoutError) as exc:
                print("stream did not continue:", type(exc).__name__)
        if len(received) < len(sent):
            async with open_stream(
                url, token=TOKEN, headers={"Last-Event-ID": str(received[-1])}
            ) as stream:
                rest = len(sent) - len(received)
                received += [r["seq"] for r in await stream.logs(rest, timeout=30)]
    finally:
        gateway.stop()
    ledger.account("nats-server killed -9 and restarted under an open stream", sent, received)
    assert received == sent


async def test_a_broker_back_with_an_empty_store_does_not_silence_the_gateway(own_broker, log_dir):
    old = await publish(own_broker, 5, 0)
    gateway = ServiceProcess("gateway", nats_url=own_broker.url, log_dir=log_dir).start()
    url = f"{gateway.url}/api/logs/stream?channels={CHANNEL}"
    try:
        async with open_stream(url, token=TOKEN) as stream:
            await stream.next_of("connected")
            own_broker.kill()
            shutil.rmtree(own_broker.store_dir / "jetstream")  # the store is gone: seqs restart
            own_broker.start()
            await publish(own_broker, 2, 0)  # the new stream's seqs 1 and 2
            await stream.next_of("overflow", timeout=30)  # told to resume
        async with open_stream(url, token=TOKEN, headers={"Last-Event-ID": str(old[-1])}) as stream:
            await stream.next_of("connected")
            [seq] = await publish(own_broker, 1, 2)
            [record] = await stream.logs(1, timeout=30)
    finally:
        gateway.stop()
    assert record["seq"] == seq == 3
