"""Ingest when NATS or JetStream goes away, and when it comes back, without restarting ingest.

Each test here owns a nats-server (killed and restarted on the same port and store) and an
ingest process on it, so the rest of the suite never sees the outage.
"""

from __future__ import annotations

import json

import httpx
import pytest
from nats.js.errors import NotFoundError

from logstream.shared.embedded_nats import EmbeddedNats
from logstream.shared.nats_names import INGEST_SUBJECT, STREAM_NAME
from tests.support.nats_source import connect_as, embedded_for_tests
from tests.support.processes import ServiceProcess
from tests.support.waiting import wait_until

PUBLISH = "/api/logs/publish"
ETL = {"Authorization": "Bearer l5-etl-token"}
# ingest's publish_timeout is 2 s: a request during an outage must be answered well within this.
ANSWER_WITHIN_S = 6.0
# How long NATS reconnection and recovery may take on a loaded machine.
RECOVERY_S = 30.0


@pytest.fixture
def ingest(own_broker, log_dir):
    service = ServiceProcess("ingest", nats_url=own_broker.url, log_dir=log_dir).start()
    yield service
    service.stop()


async def stored(own_broker, subjects: str) -> list[dict]:
    nc = await connect_as(own_broker.url, "gateway")
    try:
        js, seq = nc.jetstream(), 0
        found: list[dict] = []
        while True:
            try:
                msg = await js.get_msg(STREAM_NAME, seq=seq + 1, subject=subjects, next=True)
            except NotFoundError:
                return found
            assert msg.seq is not None and msg.data is not None  # a stored message has both
            found.append({"seq": msg.seq, **json.loads(msg.data)})
            seq = msg.seq
    finally:
        await nc.close()


async def test_a_down_broker_answers_503_at_once_and_ingest_recovers_when_it_returns(
    own_broker, ingest, unique_id
):
    channel = f"logs:etl:{unique_id}"
    retry = {"channel": channel, "message": "during", "id": f"retry-{unique_id}"}
    restarted: EmbeddedNats | None = None
    try:
        async with httpx.AsyncClient(base_url=ingest.url, timeout=ANSWER_WITHIN_S) as client:
            before = await client.post(
                PUBLISH, json={"channel": channel, "message": "before"}, headers=ETL
            )
            assert before.status_code == 202

            own_broker.kill()
            during = await client.post(PUBLISH, json=retry, headers=ETL)
            assert during.status_code == 503, during.text
            assert during.json()["error"] == "broker_unavailable"
            assert int(during.headers["Retry-After"]) >= 1

            async def not_ready():
                return (await client.get("/ready")).status_code == 503

            await wait_until(
                not_ready, "/ready to answer 503 while NATS is down", timeout=RECOVERY_S
            )
            still_down = await client.post(PUBLISH, json=retry, headers=ETL)
            assert still_down.status_code == 503

            restarted = embedded_for_tests(
                port=own_broker.port, store_dir=own_broker.store_dir
            ).start()

            async def accepted():
                response = await client.post(PUBLISH, json=retry, headers=ETL)
                assert response.status_code in (202, 503), response.text
                return response if response.status_code == 202 else None

            after = await wait_until(
                accepted, "publishing to work again after NATS restarts", timeout=RECOVERY_S
            )

            async def ready():
                return (await client.get("/ready")).status_code == 200

            await wait_until(ready, "/ready to answer 200 again", timeout=RECOVERY_S)
        records = await stored(own_broker, f"logs.etl.{unique_id}")
        # The retried id is stored exactly once, however many 503s left it buffered meanwhile.
        assert [r["message"] for r in records] == ["before", "during"]
        assert records[1]["seq"] == after.json()["seqs"][0]
    finally:
        if restarted is not None:
            restarted.stop()


async def test_a_missing_stream_answers_503_on_both_transports_and_is_recreated(
    own_broker, ingest, unique_id
):
    nc = await connect_as(own_broker.url, "admin")  # deletes the stream, as only an operator may
    producer = await connect_as(own_broker.url, "producer")
    js = nc.jetstream()
    body = {"channel": f"logs:etl:{unique_id}", "message": "m"}

    async def stream_exists():
        try:
            return await js.stream_info(STREAM_NAME)
        except NotFoundError:
            return None

    try:
        async with httpx.AsyncClient(base_url=ingest.url, timeout=ANSWER_WITHIN_S) as client:
            await wait_until(stream_exists, "ingest to create the stream", timeout=RECOVERY_S)
            await js.delete_stream(STREAM_NAME)
            response = await client.post(PUBLISH, json=body, headers=ETL)
            assert response.status_code == 503, response.text
            assert int(response.headers["Retry-After"]) >= 1
            await wait_until(
                stream_exists,
                "ingest to recreate the stream after a refused publish",
                timeout=RECOVERY_S,
            )

            await js.delete_stream(STREAM_NAME)
            reply = await producer.request(
                INGEST_SUBJECT, json.dumps(body).encode(), headers=ETL, timeout=ANSWER_WITHIN_S
            )
            answer = json.loads(reply.data)
            assert answer["status"] == 503 and answer["error"] == "broker_unavailable"
            assert int(reply.headers["Retry-After"]) >= 1

            async def accepted():
                return (await client.post(PUBLISH, json=body, headers=ETL)).status_code == 202

            await wait_until(
                accepted,
                "publishing to work again once the stream is recreated",
                timeout=RECOVERY_S,
            )
        assert len(await stored(own_broker, f"logs.etl.{unique_id}")) == 1
    finally:
        await producer.close()
        await nc.close()
