"""``POST /api/logs/publish`` against a real ingest process and a real nats-server.

Every claim about storage is checked by reading the LOGS stream back, never by trusting the 202.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.jetstream import stored
from tests.support.processes import ServiceProcess

PUBLISH = "/api/logs/publish"
ETL = {"Authorization": "Bearer l5-etl-token"}


# Each token's budget here: far above what the other tests publish. The burst defaults to one
# full batch (1,000 records, more than 2 x RATE), so one full batch empties the bucket and a
# second batch of HALF_BATCH needs seconds of refill: the 429 test does not race the clock.
RATE = 100
HALF_BATCH = 500


@pytest.fixture(scope="module")
def ingest(nats_server, log_dir):
    service = ServiceProcess(
        "ingest", nats_url=nats_server.url, log_dir=log_dir, args=["--publish-rate", str(RATE)]
    ).start()
    yield service
    service.stop()


@pytest.fixture
async def client(ingest):
    async with httpx.AsyncClient(base_url=ingest.url, timeout=10) as http:
        yield http


@pytest.fixture
def js(nc):
    return nc.jetstream()


def rec(channel: str, message: str = "hello", **extra) -> dict:
    return {"channel": channel, "message": message, **extra}


async def test_a_published_record_is_in_jetstream_with_its_seq_when_202_answers(
    client, js, unique_id
):
    body = rec(
        f"logs:etl:{unique_id}:wf1",
        "started",
        level="WARNING",
        timestamp=1767225600000,
        source="etl.runner",
        fields={"rows": 3},
    )
    response = await client.post(PUBLISH, json=body, headers=ETL)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1
    [seq] = response.json()["seqs"]
    [(stored_seq, subject, record)] = await stored(js, f"logs.etl.{unique_id}.>")
    assert (stored_seq, subject) == (seq, f"logs.etl.{unique_id}.wf1")
    assert record["channel"] == f"logs:etl:{unique_id}:wf1"
    assert record["level"] == "warn"
    assert record["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert record["publisher"] == "l5-etl-token"
    assert record["received_at"].endswith("Z") and "T" in record["received_at"]
    assert record["fields"] == {"rows": 3} and record["source"] == "etl.runner"


async def test_an_rfc3339_timestamp_with_an_offset_is_stored_in_utc(client, js, unique_id):
    body = rec(f"logs:etl:{unique_id}", timestamp="2026-01-31T12:00:00+02:00")
    assert (await client.post(PUBLISH, json=body, headers=ETL)).status_code == 202
    [(_, _, record)] = await stored(js, f"logs.etl.{unique_id}")
    assert record["timestamp"] == "2026-01-31T10:00:00.000Z"
    assert record["level"] == "info"


async def test_an_array_batch_is_stored_in_order(client, js, unique_id):
    batch = [rec(f"logs:etl:{unique_id}:wf{i % 2}", f"line {i}") for i in range(5)]
    response = await client.post(PUBLISH, json=batch, headers=ETL)
    assert response.status_code == 202, response.text
    seqs = response.json()["seqs"]
    assert response.json()["accepted"] == 5 and seqs == sorted(seqs)
    records = await stored(js, f"logs.etl.{unique_id}.*")
    assert [r["message"] for _, _, r in records] == [f"line {i}" for i in range(5)]
    assert [s for s, _, _ in records] == seqs


async def test_ndjson_is_one_record_per_line(client, js, unique_id):
    lines = [json.dumps(rec(f"logs:etl:{unique_id}", f"n{i}")) for i in range(3)]
    response = await client.post(
        PUBLISH,
        content="\n".join(lines) + "\n",
        headers={**ETL, "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 202, response.text
    assert [r["message"] for _, _, r in await stored(js, f"logs.etl.{unique_id}")] == [
        "n0",
        "n1",
        "n2",
    ]


async def test_the_x_service_token_header_is_a_credential(client, js, unique_id):
    response = await client.post(
        PUBLISH, json=rec(f"logs:faas:{unique_id}:fn"), headers={"X-Service-Token": "faas-token"}
    )
    assert response.status_code == 202, response.text
    [(_, _, record)] = await stored(js, f"logs.faas.{unique_id}.fn")
    assert record["publisher"] == "faas-token"


INVALID = [
    pytest.param({"colour": "red"}, "colour", id="unknown-key"),
    pytest.param({"channel": None}, "channel", id="missing-channel"),
    pytest.param({"channel": "log:etl:{u}"}, "channel", id="channel-prefix"),
    pytest.param({"channel": "logs:shipping:{u}"}, "channel", id="channel-service"),
    pytest.param({"channel": "logs:etl:bad.ws"}, "channel", id="channel-workspace"),
    pytest.param({"channel": "logs:etl:{u}:res*"}, "channel", id="channel-resource"),
    pytest.param({"channel": "logs:etl"}, "channel", id="channel-too-short"),
    pytest.param({"channel": "logs:etl:{u}:a:b"}, "channel", id="channel-too-long"),
    pytest.param({"level": "loud"}, "level", id="level"),
    pytest.param({"message": "x" * (64 * 1024 + 1)}, "message", id="message-over-64KiB"),
    pytest.param({"message": 42}, "message", id="message-not-a-string"),
    pytest.param({"fields": {"blob": "y" * (16 * 1024)}}, "fields", id="fields-over-16KiB"),
    pytest.param({"timestamp": "yesterday"}, "timestamp", id="timestamp-text"),
    pytest.param({"timestamp": "2026-01-31T12:00:00"}, "timestamp", id="timestamp-no-offset"),
    pytest.param({"timestamp": -5}, "timestamp", id="timestamp-negative-epoch"),
    pytest.param({"source": "s" * 129}, "source", id="source-over-128"),
    pytest.param({"id": "i" * 129}, "id", id="id-over-128"),
]


@pytest.mark.parametrize(("change", "field"), INVALID)
async def test_an_invalid_record_is_a_400_naming_index_and_field_and_nothing_is_stored(
    client, js, unique_id, change, field
):
    bad = rec(f"logs:etl:{unique_id}:bad")
    for key, value in change.items():
        if value is None:
            bad.pop(key)
        else:
            bad[key] = value.replace("{u}", unique_id) if isinstance(value, str) else value
    batch = [rec(f"logs:etl:{unique_id}:good"), bad]
    response = await client.post(PUBLISH, json=batch, headers=ETL)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] in ("invalid_request", "invalid_channel")
    assert [(d["index"], d["field"]) for d in body["details"]] == [(1, field)]
    assert body["message"]
    assert await stored(js, f"logs.etl.{unique_id}.>") == []


async def test_a_bad_channel_message_names_the_bad_part(client, unique_id):
    response = await client.post(PUBLISH, json=rec(f"logs:etl:{unique_id}:no.dots"), headers=ETL)
    assert response.status_code == 400
    assert "resource segment" in response.json()["details"][0]["message"]


@pytest.mark.parametrize("content", [b"{not json", b"", b"[]", b"7"])
async def test_a_body_that_holds_no_records_is_a_400(client, content):
    response = await client.post(
        PUBLISH, content=content, headers={**ETL, "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-credential"),
        pytest.param({"Authorization": "Bearer wrong-token"}, id="wrong-bearer"),
        pytest.param({"X-Service-Token": "wrong-token"}, id="wrong-service-token"),
        pytest.param({"Authorization": "Basic bDUtZXRsLXRva2Vu"}, id="not-bearer"),
    ],
)
async def test_a_missing_or_wrong_credential_is_a_401_and_nothing_is_stored(
    client, js, unique_id, headers
):
    response = await client.post(PUBLISH, json=rec(f"logs:etl:{unique_id}"), headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthenticated"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await stored(js, f"logs.etl.{unique_id}") == []


async def test_channels_outside_the_grants_are_a_403_listing_them_and_nothing_is_stored(
    client, js, unique_id
):
    batch = [
        rec(f"logs:etl:{unique_id}:ok"),
        rec(f"logs:faas:{unique_id}:fn"),
        rec(f"logs:faas:{unique_id}:fn"),
        rec(f"logs:platform:{unique_id}"),
    ]
    response = await client.post(PUBLISH, json=batch, headers=ETL)
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "forbidden"
    assert body["details"] == [
        {"channel": f"logs:faas:{unique_id}:fn"},
        {"channel": f"logs:platform:{unique_id}"},
    ]
    for subjects in (
        f"logs.etl.{unique_id}.>",
        f"logs.faas.{unique_id}.>",
        f"logs.platform.{unique_id}",
    ):
        assert await stored(js, subjects) == []


async def test_a_body_over_the_size_limit_is_a_413(client):
    response = await client.post(
        PUBLISH,
        content=b" " * (1024 * 1024 + 1),
        headers={**ETL, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


async def test_a_chunked_body_is_cut_off_at_the_size_limit(client):
    async def chunks():
        for _ in range(40):
            yield b" " * 64 * 1024

    response = await client.post(
        PUBLISH, content=chunks(), headers={**ETL, "Content-Type": "application/json"}
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


async def test_more_than_a_thousand_records_is_a_413_and_nothing_is_stored(client, js, unique_id):
    batch = [{"channel": f"logs:etl:{unique_id}", "message": "m"}] * 1001
    response = await client.post(PUBLISH, json=batch, headers=ETL)
    assert response.status_code == 413
    assert "1000" in response.json()["message"]
    assert await stored(js, f"logs.etl.{unique_id}") == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
async def test_a_body_that_is_not_json_or_ndjson_is_a_415(client, content_type):
    headers = dict(ETL)
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.post(
        PUBLISH, content=b'{"channel":"logs:etl:w","message":"m"}', headers=headers
    )
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


async def test_a_charset_parameter_is_accepted(client, js, unique_id):
    response = await client.post(
        PUBLISH,
        content=json.dumps(rec(f"logs:etl:{unique_id}")).encode(),
        headers={**ETL, "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 202, response.text
    assert len(await stored(js, f"logs.etl.{unique_id}")) == 1


async def test_a_repeated_id_is_stored_once_and_answered_with_the_same_seq(client, js, unique_id):
    body = rec(f"logs:etl:{unique_id}", id=f"retry-{unique_id}")
    first = await client.post(PUBLISH, json=body, headers=ETL)
    again = await client.post(PUBLISH, json=body, headers=ETL)
    assert first.status_code == again.status_code == 202
    assert first.json()["seqs"] == again.json()["seqs"]
    [(seq, _, record)] = await stored(js, f"logs.etl.{unique_id}")
    assert [seq] == first.json()["seqs"] and record["id"] == f"retry-{unique_id}"


async def test_the_service_routes_answer(client, ingest):
    assert (await client.get("/health")).json()["status"] == "ok"
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    await client.post(PUBLISH, json={}, headers=ETL)
    metrics = (await client.get("/metrics")).text
    for name in (
        "logstream_ingest_records_accepted_total",
        "logstream_ingest_requests_total",
        "logstream_ingest_publish_seconds_bucket",
        "logstream_ingest_rejected_republished_total",
    ):
        assert name in metrics
    assert any(
        line.startswith("logstream_ingest_requests_total{")
        and 'status="400"' in line
        and 'transport="http"' in line
        for line in metrics.splitlines()
    )
    schema = (await client.get("/schema/openapi.json")).json()
    assert "202" in schema["paths"][PUBLISH]["post"]["responses"]
    assert "403" in schema["paths"][PUBLISH]["post"]["responses"]


async def test_a_token_over_its_rate_gets_a_429_with_retry_after_and_nothing_is_stored(
    client, js, unique_id
):
    platform = {"Authorization": "Bearer platform-token"}  # no other test spends its budget
    batch = [rec(f"logs:platform:{unique_id}", f"m{i}") for i in range(1000)]
    assert (await client.post(PUBLISH, json=batch, headers=platform)).status_code == 202
    response = await client.post(PUBLISH, json=batch[:HALF_BATCH], headers=platform)
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "rate_limited"
    assert "'platform-token'" in body["message"] and f"{RATE} records/s" in body["message"]
    # Seconds until HALF_BATCH records fit again: at most HALF_BATCH / RATE, at least 1.
    assert 1 <= int(response.headers["Retry-After"]) <= HALF_BATCH // RATE
    records = await stored(js, f"logs.platform.{unique_id}")
    assert len(records) == 1000
