"""The ingest pipeline's rules and their order, with an in-memory record store.

Claims about storage in JetStream live in the integration tests; here the store is a double
that records what it was asked to store.
"""

from __future__ import annotations

import json
from typing import Sequence

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from shared.errors import (
    BrokerUnavailable,
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    UnsupportedMediaType,
)
from shared.identities import bearer_token
from shared.service_tokens import TokenRegistry
from shared.records import ValidRecord
from shared.settings import load_settings
from services.ingest.metrics import HTTP, NATS, IngestMetrics
from services.ingest.nats_ingest import REPORT_PAYLOAD_CHARS, rejection_report
from services.ingest.pipeline import (
    IngestPipeline,
    IngestRequest,
    body_in_memory,
    media_type_of,
)
from services.ingest.publisher import message_id
from services.ingest.rate_limit import RecordRateLimiter
from services.ingest.settings import Settings

ETL_TOKEN = "l5-etl-token"


class MemoryStore:
    def __init__(self, fail: Exception | None = None) -> None:
        self.batches: list[tuple[list[ValidRecord], str]] = []
        self.fail = fail

    async def store(self, records: Sequence[ValidRecord], publisher: str) -> list[int]:
        if self.fail:
            raise self.fail
        first = sum(len(batch) for batch, _ in self.batches) + 1
        self.batches.append((list(records), publisher))
        return list(range(first, first + len(records)))


class Harness:
    def __init__(self, **overrides) -> None:
        self.settings = load_settings(Settings, {}, env="dev", **overrides)
        self.registry = CollectorRegistry()
        self.store = MemoryStore()
        self.pipeline = IngestPipeline(self.settings, TokenRegistry.dev(), self.store,
                                       IngestMetrics(self.registry))

    async def publish(self, body, *, token: str | None = ETL_TOKEN,
                      content_type: str | None = "application/json",
                      declared_length: int | None = None, transport: str = HTTP):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.pipeline.publish(IngestRequest(
            transport=transport, content_type=content_type, declared_length=declared_length,
            credential=token, read_body=body_in_memory(raw),
        ))

    def metric(self, name: str, **labels) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def record(channel: str = "logs:etl:ws1:wf1", **extra) -> dict:
    return {"channel": channel, "message": "hello", **extra}


async def test_a_valid_batch_is_stored_normalised_and_answered_with_its_seqs():
    harness = Harness()
    accepted = await harness.publish([
        record(level="WARNING", timestamp=0),
        record(level="Error", source="etl.job"),
    ])
    assert accepted.accepted == 2 and accepted.seqs == [1, 2]
    [(stored, publisher)] = harness.store.batches
    assert publisher == ETL_TOKEN
    assert [v.record.level for v in stored] == ["warn", "error"]
    assert stored[0].record.timestamp == "1970-01-01T00:00:00.000Z"
    assert all(v.record.publisher == ETL_TOKEN and v.record.received_at for v in stored)
    assert harness.metric("logstream_ingest_records_accepted_total", transport="http") == 2


async def test_ndjson_lines_are_records():
    harness = Harness()
    body = b"\n".join(json.dumps(record(message=f"m{i}")).encode() for i in range(3)) + b"\n"
    accepted = await harness.publish(body, content_type="application/x-ndjson")
    assert accepted.accepted == 3


async def test_a_media_type_with_a_charset_is_accepted():
    harness = Harness()
    accepted = await harness.publish(record(), content_type="Application/JSON; charset=utf-8")
    assert accepted.accepted == 1


async def test_the_media_type_is_checked_before_the_credential():
    harness = Harness()
    with pytest.raises(UnsupportedMediaType):
        await harness.publish(record(), token=None, content_type="text/plain")
    with pytest.raises(UnsupportedMediaType):
        await harness.publish(record(), content_type=None)


async def test_a_declared_oversize_body_is_refused_before_the_credential_is_checked():
    harness = Harness()
    with pytest.raises(PayloadTooLarge):
        await harness.publish(record(), token=None,
                              declared_length=harness.settings.max_body_bytes + 1)


async def test_a_body_over_the_limit_is_refused_while_it_is_read():
    harness = Harness(max_body_bytes=2048)
    with pytest.raises(PayloadTooLarge):
        await harness.publish(b" " * 2049)
    assert harness.store.batches == []


@pytest.mark.parametrize("token", [None, "", "not-a-token"])
async def test_a_missing_or_unknown_token_is_unauthenticated(token):
    harness = Harness()
    with pytest.raises(Unauthenticated):
        await harness.publish(record(), token=token)
    assert harness.metric("logstream_ingest_requests_total", transport="http",
                          status="401") == 1


async def test_an_invalid_record_fails_the_whole_batch_and_names_index_and_field():
    harness = Harness()
    with pytest.raises(InvalidRequest) as caught:
        await harness.publish([record(), record(level="loud")])
    assert caught.value.details == [{"index": 1, "field": "level",
                                     "message": caught.value.details[0]["message"]}]
    assert harness.store.batches == []
    assert harness.metric("logstream_ingest_records_rejected_total", transport="http",
                          reason="invalid_request") == 2


async def test_too_many_records_is_payload_too_large():
    harness = Harness(max_batch_records=3)
    with pytest.raises(PayloadTooLarge):
        await harness.publish([record()] * 4)


async def test_channels_outside_the_grants_are_forbidden_listed_once_and_nothing_is_stored():
    harness = Harness()
    with pytest.raises(Forbidden) as caught:
        await harness.publish([record(), record("logs:faas:ws1:f"), record("logs:faas:ws1:f"),
                               record("logs:platform:ws1")])
    assert caught.value.details == [{"channel": "logs:faas:ws1:f"}, {"channel": "logs:platform:ws1"}]
    assert harness.store.batches == []


async def test_a_token_over_its_rate_is_limited_and_nothing_is_stored():
    harness = Harness(rate_limit=2)
    await harness.publish([record()] * 4)
    with pytest.raises(RateLimited) as caught:
        await harness.publish(record())
    assert caught.value.retry_after >= 1
    assert len(harness.store.batches) == 1


async def test_an_unavailable_broker_is_counted_and_propagated():
    harness = Harness()
    harness.store.fail = BrokerUnavailable("down")
    with pytest.raises(BrokerUnavailable):
        await harness.publish(record(), transport=NATS)
    assert harness.metric("logstream_ingest_requests_total", transport="nats",
                          status="503") == 1


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None),
    (None, None), ("", None),
])
def test_only_bearer_authorization_carries_a_token(header, token):
    assert bearer_token(header) == token


def test_media_types_other_than_json_and_ndjson_are_unsupported():
    assert media_type_of("application/x-ndjson; charset=utf-8") == "application/x-ndjson"
    with pytest.raises(UnsupportedMediaType):
        media_type_of("application/xml")


def test_a_message_id_is_scoped_to_the_publisher():
    assert message_id("faas-token", "x1") != message_id("l5-etl-token", "x1")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limiter_allows_a_burst_of_twice_the_rate_then_refills():
    clock = FakeClock()
    limiter = RecordRateLimiter(5, clock=clock)
    limiter.take("a", 10)
    with pytest.raises(RateLimited):
        limiter.take("a", 1)
    limiter.take("b", 1)  # budgets are per token
    clock.now += 0.2
    limiter.take("a", 1)


def test_a_batch_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_debt():
    clock = FakeClock()
    limiter = RecordRateLimiter(5, clock=clock)
    limiter.take("a", 25)
    clock.now += 2.0  # refilled 10, still 5 in debt
    with pytest.raises(RateLimited) as caught:
        limiter.take("a", 1)
    assert caught.value.retry_after == 2


def test_a_rejection_report_carries_the_reason_and_a_truncated_payload():
    reply = {"status": 400, "error": "invalid_request", "message": "bad", "details": [1]}
    report = msgspec.json.decode(
        rejection_report(reply, "ingest.logs", b"x" * (REPORT_PAYLOAD_CHARS + 10)))
    assert report["status"] == 400 and report["details"] == [1]
    assert len(report["payload"]) == REPORT_PAYLOAD_CHARS and report["payload_truncated"]
    assert report["payload_bytes"] == REPORT_PAYLOAD_CHARS + 10
