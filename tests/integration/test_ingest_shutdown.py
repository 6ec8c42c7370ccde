"""SIGTERM under load: ingest finishes what it acknowledged, and every 202 is in the stream."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import nats as nats_py

from tests.support import ledger
from tests.support.processes import ServiceProcess

CHANNEL = "logs:etl:workspace123:shutdown"


async def test_sigterm_loses_no_acknowledged_record_and_exits_quickly(
    nats_server, log_dir, unique_id
):
    ingest = ServiceProcess("ingest", nats_url=nats_server.url, log_dir=log_dir).start()
    acknowledged: dict[str, int] = {}
    refused = 0

    async def producer(client: httpx.AsyncClient, worker: int) -> None:
        nonlocal refused
        for batch in range(10_000):
            body = [
                {"channel": CHANNEL, "message": "m", "id": f"{unique_id}-{worker}-{batch}-{i}"}
                for i in range(100)
            ]
            try:
                response = await client.post(
                    f"{ingest.url}/api/logs/publish",
                    json=body,
                    headers={"Authorization": "Bearer l5-etl-token"},
                )
            except httpx.HTTPError:
                refused += 1
                return  # the server has gone: this producer is done
            if response.status_code != 202:
                refused += 1
                return
            acknowledged.update(zip((r["id"] for r in body), response.json()["seqs"]))

    async with httpx.AsyncClient(timeout=10) as client:
        producers = [asyncio.create_task(producer(client, w)) for w in range(4)]
        async with asyncio.timeout(30):
            while len(acknowledged) < 2000:
                await asyncio.sleep(0.01)
        started = time.monotonic()
        ingest.process.terminate()
        await asyncio.gather(*producers)
        code = await asyncio.to_thread(ingest.process.wait, 10)
    assert code is not None and time.monotonic() - started < 5
    stored = await _stored_ids(nats_server, unique_id)
    ledger.account(
        "ingest SIGTERM under load (acknowledged vs stored)",
        list(acknowledged.values()),
        [stored[i] for i in acknowledged if i in stored],
    )
    missing = {i for i in acknowledged if i not in stored}
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged records missing"
    assert all(stored[i] == seq for i, seq in acknowledged.items())


async def _stored_ids(nats_server, unique_id: str) -> dict[str, int]:
    client = await nats_server.connect("gateway")
    js = client.jetstream()
    sub = await js.subscribe(
        CHANNEL.replace(":", "."),
        stream="LOGS",
        ordered_consumer=True,
        deliver_policy=nats_py.js.api.DeliverPolicy.ALL,
    )
    ids: dict[str, int] = {}
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=2)
            except nats_py.errors.TimeoutError:
                return ids
            record = json.loads(msg.data)
            if record["id"].startswith(unique_id):
                ids[record["id"]] = msg.metadata.sequence.stream
    finally:
        await client.close()
