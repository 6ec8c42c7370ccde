"""Ingest's batch writer (logstream.services.ingest.batch_writer) against a real nats-server.

A batch is written to the connection in one go and its acks are matched by reply subject;
what matters is what JetStream really holds afterwards: every record, in order, once per id,
and a 503 (never a 202) when the broker does not confirm in time.
"""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest

from logstream.services.ingest.batch_writer import BatchWriter, OutMessage, msg_id_header
from logstream.services.ingest.publisher import message_id
from logstream.shared.nats_link import settle
from logstream.shared.nats_names import REJECTED_SUBJECT, STREAM_NAME, inbox_prefix
from tests.support.jetstream import stored
from tests.support.nats_source import connect_as
from tests.support.processes import ServiceProcess

PUBLISH = "/api/logs/publish"
ETL_TOKEN = "l5-etl-token"
ETL = {"Authorization": f"Bearer {ETL_TOKEN}"}
BATCH = 1000
# Generous on a loaded 2-core machine: no assertion here is about speed.
ANSWER_WITHIN_S = 30.0
# The paused-broker test's ingest waits this long for acks before its 503.
SHORT_PUBLISH_TIMEOUT_S = 1.0


async def post(client: httpx.AsyncClient, records: list[dict]) -> httpx.Response:
    return await client.post(PUBLISH, json=records, headers=ETL)


async def test_a_batch_of_1000_records_is_stored_in_order_and_answered_with_its_seqs(
    stack, nc, unique_id
):
    channel = f"logs:etl:{unique_id}:batch"
    records = [
        {"channel": channel, "message": f"m{index:04d}", "id": f"{unique_id}-{index}"}
        for index in range(BATCH)
    ]
    async with httpx.AsyncClient(base_url=stack.ingest.url, timeout=ANSWER_WITHIN_S) as client:
        response = await post(client, records)
    assert response.status_code == 202, response.text
    seqs = response.json()["seqs"]
    assert response.json()["accepted"] == BATCH and seqs == sorted(seqs)
    found = await stored(nc.jetstream(), f"logs.etl.{unique_id}.batch")
    assert [seq for seq, _, _ in found] == seqs
    assert [record["message"] for _, _, record in found] == [r["message"] for r in records]
    assert [record["id"] for _, _, record in found] == [r["id"] for r in records]


async def test_a_repeated_id_inside_a_batch_and_across_batches_is_stored_once(stack, nc, unique_id):
    channel = f"logs:etl:{unique_id}"

    def record(record_id: str, message: str) -> dict:
        return {"channel": channel, "message": message, "id": record_id}

    async with httpx.AsyncClient(base_url=stack.ingest.url, timeout=ANSWER_WITHIN_S) as client:
        first = await post(client, [record("a", "a1"), record("b", "b1"), record("a", "a2")])
        second = await post(client, [record("b", "b2"), record("c", "c1")])
    assert first.status_code == 202 and second.status_code == 202, (first.text, second.text)
    a, b, a_again = first.json()["seqs"]
    b_again, c = second.json()["seqs"]
    assert a_again == a and b_again == b and len({a, b, c}) == 3
    found = await stored(nc.jetstream(), f"logs.etl.{unique_id}")
    assert [(seq, r["message"]) for seq, _, r in found] == [(a, "a1"), (b, "b1"), (c, "c1")]


async def test_an_id_with_line_breaks_cannot_break_the_header_and_still_deduplicates(
    stack, nc, unique_id
):
    channel = f"logs:etl:{unique_id}"
    sneaky = f"x\r\nPUB logs.etl.{unique_id}.injected 1\r\nz"
    body = {"channel": channel, "message": "m", "id": sneaky}
    async with httpx.AsyncClient(base_url=stack.ingest.url, timeout=ANSWER_WITHIN_S) as client:
        first = await post(client, [body])
        again = await post(client, [body])
    assert first.status_code == 202 and again.status_code == 202, (first.text, again.text)
    assert first.json()["seqs"] == again.json()["seqs"]
    js = nc.jetstream()
    [(seq, _, record)] = await stored(js, f"logs.etl.{unique_id}")
    assert record["id"] == sneaky
    assert await stored(js, f"logs.etl.{unique_id}.>") == []  # nothing injected
    raw = await js.get_msg(STREAM_NAME, seq=seq)
    assert raw.headers["Nats-Msg-Id"] == message_id(ETL_TOKEN, sneaky).replace("\r", " ").replace(
        "\n", " "
    )


async def test_the_writer_replies_under_its_own_inbox_prefix_without_permission_errors(
    nats_server, unique_id
):
    errors: list[Exception] = []

    async def collect(exc: Exception) -> None:
        errors.append(exc)

    nc = await connect_as(nats_server.url, "ingest", error_cb=collect)
    try:
        writer = BatchWriter(nc)
        await writer.start()
        [subscription] = [
            sub for sub in nc._subs.values() if sub.subject.startswith(inbox_prefix("ingest") + ".")
        ]
        subject = f"logs.etl.{unique_id}".encode()
        messages = [
            OutMessage(subject, msg_id_header(f"test:{unique_id}-{n}"), b'{"n":%d}' % n)
            for n in range(50)
        ]
        seqs = await writer.write(messages, ANSWER_WITHIN_S)
        assert len(seqs) == 50 and seqs == sorted(seqs) and len(set(seqs)) == 50
        assert await writer.write(messages[:2], ANSWER_WITHIN_S) == seqs[:2]  # dedup
        assert subscription.subject.endswith(".*.*") and writer.pending == 0
        assert errors == []
    finally:
        await nc.close()


async def test_a_write_nobody_acknowledges_times_out_and_is_forgotten(nats_server):
    """``ingest.rejected`` is no stream's subject: with a plain subscriber on it (so the broker
    has a responder and sends no 503), no ack ever comes."""
    listener = await connect_as(nats_server.url, "admin")
    nc = await connect_as(nats_server.url, "ingest")
    try:
        heard = await listener.subscribe(REJECTED_SUBJECT)
        await settle(listener)
        writer = BatchWriter(nc)
        await writer.start()
        with pytest.raises(asyncio.TimeoutError):
            await writer.write([OutMessage(REJECTED_SUBJECT.encode(), None, b"{}")], 0.5)
        assert writer.pending == 0
        assert (await heard.next_msg(timeout=ANSWER_WITHIN_S)).data == b"{}"
        await asyncio.wait_for(writer.drained(), ANSWER_WITHIN_S)
    finally:
        await nc.close()
        await listener.close()


async def test_a_paused_broker_answers_503_with_retry_after_and_a_retry_is_stored_once(
    own_broker, log_dir, unique_id
):
    ingest = ServiceProcess(
        "ingest",
        nats_url=own_broker.url,
        log_dir=log_dir,
        env={"LOGSTREAM_PUBLISH_TIMEOUT": str(SHORT_PUBLISH_TIMEOUT_S)},
    ).start()
    channel = f"logs:etl:{unique_id}"
    records = [
        {"channel": channel, "message": f"m{n}", "id": f"{unique_id}-{n}"} for n in range(10)
    ]
    paused = False
    try:
        async with httpx.AsyncClient(base_url=ingest.url, timeout=ANSWER_WITHIN_S) as client:
            os.kill(own_broker.process.pid, signal.SIGSTOP)
            paused = True
            refused = await post(client, records)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "broker_unavailable"
            assert "did not confirm" in refused.json()["message"]
            assert int(refused.headers["Retry-After"]) >= 1
            os.kill(own_broker.process.pid, signal.SIGCONT)
            paused = False
            retried = await post(client, records)
            assert retried.status_code == 202, retried.text
        nc = await connect_as(own_broker.url, "gateway")
        try:
            found = await stored(nc.jetstream(), f"logs.etl.{unique_id}")
        finally:
            await nc.close()
        assert [seq for seq, _, _ in found] == retried.json()["seqs"]
        assert [r["message"] for _, _, r in found] == [r["message"] for r in records]
    finally:
        if paused:
            os.kill(own_broker.process.pid, signal.SIGCONT)
        ingest.stop()
