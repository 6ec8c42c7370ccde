"""Ingest over NATS (``ingest.logs``) against real ingest processes and a real nats-server.

This module runs its own nats-server (configured like the embedded one: a user per role) so
that its two ingest processes are the only members of the ``ingest`` queue group:
the suite's shared NATS may carry other ingest processes with other settings. Producers
connect as the ``producer`` NATS user, as real ones do; the stream is read as ``gateway``, and
``ingest.rejected``, which no service reads, as the test superuser (an operator's tool).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from logstream.shared.nats_link import settle
from logstream.shared.nats_names import INGEST_SUBJECT, REJECTED_SUBJECT
from tests.support.jetstream import stored
from tests.support.nats_source import connect_as, embedded_for_tests, free_port
from tests.support.processes import ServiceProcess

ETL = {"Authorization": "Bearer l5-etl-token"}
PLATFORM = {"Authorization": "Bearer platform-token"}
MAX_BODY = 8192
MAX_RECORDS = 10
# Per-token budget of each ingest here: generous for the other tests (which publish a few
# records with the ETL token), small enough that the 429 test exhausts it quickly.
RATE = 20
REPLY_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    server = embedded_for_tests(port=free_port(), store_dir=tmp_path_factory.mktemp("nats-ingest"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ingests(broker, log_dir):
    args = [
        "--max-body-bytes",
        str(MAX_BODY),
        "--max-batch-records",
        str(MAX_RECORDS),
        "--publish-rate",
        str(RATE),
    ]
    services = [
        ServiceProcess("ingest", nats_url=broker.url, log_dir=log_dir, args=args) for _ in range(2)
    ]
    for service in services:  # start both, then wait: the imports overlap
        service.start(wait=False)
    try:
        for service in services:
            service.wait_healthy()
        yield services
    finally:
        for service in services:
            service.stop()


@pytest.fixture
async def producer(broker, ingests):
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    client = await connect_as(broker.url, "producer", error_cb=on_error)
    client.errors = errors
    yield client
    await client.close()


@pytest.fixture
async def service_nc(broker):
    """Reads the stream, as the gateway's user."""
    client = await connect_as(broker.url, "gateway")
    yield client
    await client.close()


@pytest.fixture
async def operator(broker):
    """Watches ingest.rejected: no service user may, an operator's tool does."""
    client = await connect_as(broker.url, "admin")
    yield client
    await client.close()


async def request(producer, body, headers=None) -> tuple[dict, dict]:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await producer.request(
        INGEST_SUBJECT, payload, headers=headers, timeout=REPLY_TIMEOUT_S
    )
    return json.loads(reply.data), reply.headers or {}


def rec(channel: str, message: str = "hello", **extra) -> dict:
    return {"channel": channel, "message": message, **extra}


def metric_sum(ingests, name: str, **labels: str) -> float:
    """The sum over ``ingests`` of the samples of ``name`` carrying ``labels``."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    total = 0.0
    for service in ingests:
        for line in httpx.get(service.url + "/metrics", timeout=5).text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample.split("{")[0] == name and all(label in sample for label in wanted):
                total += float(value)
    return total


async def test_a_request_is_answered_202_with_seqs_once_stored(producer, service_nc, unique_id):
    reply, _ = await request(
        producer,
        [rec(f"logs:etl:{unique_id}:wf", "a", level="ERROR"), rec(f"logs:etl:{unique_id}:wf", "b")],
        ETL,
    )
    assert reply["status"] == 202 and reply["accepted"] == 2, reply
    records = await stored(service_nc.jetstream(), f"logs.etl.{unique_id}.wf")
    assert [seq for seq, _, _ in records] == reply["seqs"]
    assert [(r["message"], r["level"], r["publisher"]) for _, _, r in records] == [
        ("a", "error", "l5-etl-token"),
        ("b", "info", "l5-etl-token"),
    ]


async def test_ndjson_is_accepted_with_a_content_type_header(producer, service_nc, unique_id):
    body = "\n".join(json.dumps(rec(f"logs:etl:{unique_id}", f"n{i}")) for i in range(2))
    reply, _ = await request(
        producer, body.encode(), {**ETL, "Content-Type": "application/x-ndjson"}
    )
    assert reply["status"] == 202, reply
    assert len(await stored(service_nc.jetstream(), f"logs.etl.{unique_id}")) == 2


async def test_an_invalid_record_is_answered_400_naming_index_and_field(
    producer, service_nc, unique_id
):
    reply, _ = await request(
        producer, [rec(f"logs:etl:{unique_id}"), rec(f"logs:etl:{unique_id}", level="loud")], ETL
    )
    assert reply["status"] == 400 and reply["error"] == "invalid_request"
    assert [(d["index"], d["field"]) for d in reply["details"]] == [(1, "level")]
    assert await stored(service_nc.jetstream(), f"logs.etl.{unique_id}") == []


@pytest.mark.parametrize(
    "headers", [None, {"Authorization": "Bearer wrong"}, {"Authorization": "l5-etl-token"}]
)
async def test_a_missing_or_wrong_credential_is_answered_401(producer, unique_id, headers):
    reply, _ = await request(producer, rec(f"logs:etl:{unique_id}"), headers)
    assert reply["status"] == 401 and reply["error"] == "unauthenticated"


async def test_channels_outside_the_grants_are_answered_403_and_nothing_is_stored(
    producer, service_nc, unique_id
):
    reply, _ = await request(
        producer, [rec(f"logs:etl:{unique_id}"), rec(f"logs:analytics:{unique_id}")], ETL
    )
    assert reply["status"] == 403
    assert reply["details"] == [{"channel": f"logs:analytics:{unique_id}"}]
    assert await stored(service_nc.jetstream(), f"logs.*.{unique_id}") == []


async def test_a_body_over_the_limit_is_answered_413(producer, unique_id):
    reply, _ = await request(producer, rec(f"logs:etl:{unique_id}", "x" * MAX_BODY), ETL)
    assert reply["status"] == 413 and reply["error"] == "payload_too_large"


async def test_too_many_records_is_answered_413(producer, unique_id):
    reply, _ = await request(producer, [rec(f"logs:etl:{unique_id}")] * (MAX_RECORDS + 1), ETL)
    assert reply["status"] == 413 and str(MAX_RECORDS) in reply["message"]


async def test_a_content_type_other_than_json_or_ndjson_is_answered_415(producer, unique_id):
    reply, _ = await request(
        producer, rec(f"logs:etl:{unique_id}"), {**ETL, "Content-Type": "text/plain"}
    )
    assert reply["status"] == 415 and reply["error"] == "unsupported_media_type"


async def test_a_token_over_its_rate_is_answered_429_with_retry_after(
    producer, service_nc, unique_id
):
    # Each ingest keeps its own budget; the queue group spreads requests over both, so keep
    # sending full batches until both are spent (2 x burst of 2 x RATE records at most).
    batch = [rec(f"logs:analytics:{unique_id}", f"m{i}") for i in range(MAX_RECORDS)]
    headers = {"Authorization": "Bearer analytics-token"}
    accepted = 0
    for _ in range(4 * 2 * RATE // MAX_RECORDS + 4):
        reply, reply_headers = await request(producer, batch, headers)
        if reply["status"] == 429:
            break
        assert reply["status"] == 202, reply
        accepted += reply["accepted"]
    assert reply["status"] == 429 and reply["error"] == "rate_limited"
    assert int(reply_headers["Retry-After"]) >= 1
    assert len(await stored(service_nc.jetstream(), f"logs.analytics.{unique_id}")) == accepted


async def test_a_repeated_id_is_stored_once(producer, service_nc, unique_id):
    body = rec(f"logs:etl:{unique_id}", id="same")
    first, _ = await request(producer, body, ETL)
    again, _ = await request(producer, body, ETL)
    assert first["status"] == again["status"] == 202 and first["seqs"] == again["seqs"]
    assert len(await stored(service_nc.jetstream(), f"logs.etl.{unique_id}")) == 1


async def test_a_rejected_message_without_reply_subject_is_republished_with_its_reason(
    producer, operator, ingests, unique_id
):
    before = metric_sum(ingests, "logstream_ingest_rejected_republished_total")
    rejected = await operator.subscribe(REJECTED_SUBJECT)
    await settle(operator)
    payload = json.dumps(rec(f"logs:faas:{unique_id}")).encode()
    await producer.publish(INGEST_SUBJECT, payload, headers=ETL)
    await producer.flush()
    report = json.loads((await rejected.next_msg(timeout=REPLY_TIMEOUT_S)).data)
    await rejected.unsubscribe()
    assert report["status"] == 403 and report["error"] == "forbidden"
    assert report["details"] == [{"channel": f"logs:faas:{unique_id}"}]
    assert report["payload"] == payload.decode()
    assert "l5-etl-token" not in json.dumps(
        {k: v for k, v in report.items() if k not in ("message",)}
    )
    assert metric_sum(ingests, "logstream_ingest_rejected_republished_total") == before + 1


async def test_an_accepted_message_without_reply_subject_is_stored_and_not_reported(
    producer, service_nc, operator, unique_id
):
    rejected = await operator.subscribe(REJECTED_SUBJECT)
    await settle(operator)
    await producer.publish(
        INGEST_SUBJECT, json.dumps(rec(f"logs:etl:{unique_id}")).encode(), headers=ETL
    )
    await producer.flush()
    deadline = asyncio.get_running_loop().time() + REPLY_TIMEOUT_S
    while not await stored(service_nc.jetstream(), f"logs.etl.{unique_id}"):
        assert asyncio.get_running_loop().time() < deadline, "record never stored"
        await asyncio.sleep(0.05)
    assert rejected.pending_msgs == 0
    await rejected.unsubscribe()


async def test_the_queue_group_handles_each_message_once_across_instances(
    producer, service_nc, ingests, unique_id
):
    sent = 20  # within one instance's burst, so the rate limit never interferes

    def handled_by_each() -> list[float]:
        return [
            metric_sum([service], "logstream_ingest_requests_total", status="202", transport="nats")
            for service in ingests
        ]

    before = handled_by_each()
    replies = await asyncio.gather(
        *(
            request(producer, rec(f"logs:platform:{unique_id}", f"q{i}"), PLATFORM)
            for i in range(sent)
        )
    )
    assert all(reply["status"] == 202 for reply, _ in replies)
    records = await stored(service_nc.jetstream(), f"logs.platform.{unique_id}")
    assert sorted(r["message"] for _, _, r in records) == sorted(f"q{i}" for i in range(sent))
    handled = [after - earlier for after, earlier in zip(handled_by_each(), before)]
    assert sum(handled) == sent
    # Both instances took a share (all 20 on one would have probability 2 ** -19).
    assert all(count > 0 for count in handled), handled


async def test_the_producer_user_may_not_publish_to_log_subjects(producer, service_nc, unique_id):
    await producer.publish(f"logs.etl.{unique_id}", b'{"channel":"x","message":"forged"}')
    await producer.flush()
    deadline = asyncio.get_running_loop().time() + REPLY_TIMEOUT_S
    while not producer.errors:
        assert asyncio.get_running_loop().time() < deadline, "no permissions violation seen"
        await asyncio.sleep(0.02)
    assert "permissions violation" in str(producer.errors[0]).lower()
    assert await stored(service_nc.jetstream(), f"logs.etl.{unique_id}") == []
