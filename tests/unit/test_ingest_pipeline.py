"""The ingest pipeline's rules and their order, with an in-memory record store.

Claims about storage in JetStream live in the integration tests; here the store is a double
that records what it was asked to store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from logstream.services.ingest.metrics import HTTP, NATS, IngestMetrics
from logstream.services.ingest.nats_ingest import REPORT_PAYLOAD_CHARS, rejection_report
from logstream.services.ingest.pipeline import (
    IngestPipeline,
    IngestRequest,
    body_in_memory,
    media_type_of,
)
from logstream.services.ingest.publisher import message_id
from logstream.services.ingest.rate_limit import RecordRateLimiter
from logstream.services.ingest.settings import Settings
from logstream.shared.errors import (
    BrokerUnavailable,
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    SettingsError,
    Unauthenticated,
    UnsupportedMediaType,
)
from logstream.shared.identities import bearer_token
from logstream.shared.records import ValidRecord
from logstream.shared.service_tokens import TokenRegistry, hash_secret
from logstream.shared.settings import load_settings

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
        self.pipeline = IngestPipeline(
            self.settings, TokenRegistry.dev(), self.store, IngestMetrics(self.registry)
        )

    async def publish(
        self,
        body,
        *,
        token: str | None = ETL_TOKEN,
        content_type: str | None = "application/json",
        declared_length: int | None = None,
        transport: str = HTTP,
    ):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.pipeline.publish(
            IngestRequest(
                transport=transport,
                content_type=content_type,
                declared_length=declared_length,
                credential=token,
                read_body=body_in_memory(raw),
            )
        )

    def metric(self, name: str, **labels) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def record(channel: str = "logs:etl:ws1:wf1", **extra) -> dict:
    return {"channel": channel, "message": "hello", **extra}


async def test_a_valid_batch_is_stored_normalised_and_answered_with_its_seqs():
    harness = Harness()
    accepted = await harness.publish(
        [
            record(level="WARNING", timestamp=0),
            record(level="Error", source="etl.job"),
        ]
    )
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
        await harness.publish(
            record(), token=None, declared_length=harness.settings.max_body_bytes + 1
        )


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
    assert harness.metric("logstream_ingest_requests_total", transport="http", status="401") == 1


async def test_an_invalid_record_fails_the_whole_batch_and_names_index_and_field():
    harness = Harness()
    with pytest.raises(InvalidRequest) as caught:
        await harness.publish([record(), record(level="loud")])
    assert caught.value.details == [
        {"index": 1, "field": "level", "message": caught.value.details[0]["message"]}
    ]
    assert harness.store.batches == []
    assert (
        harness.metric(
            "logstream_ingest_records_rejected_total", transport="http", reason="invalid_request"
        )
        == 2
    )


async def test_too_many_records_is_payload_too_large():
    harness = Harness(max_batch_records=3)
    with pytest.raises(PayloadTooLarge):
        await harness.publish([record()] * 4)


async def test_channels_outside_the_grants_are_forbidden_listed_once_and_nothing_is_stored():
    harness = Harness()
    with pytest.raises(Forbidden) as caught:
        await harness.publish(
            [
                record(),
                record("logs:faas:ws1:f"),
                record("logs:faas:ws1:f"),
                record("logs:platform:ws1"),
            ]
        )
    assert caught.value.details == [
        {"channel": "logs:faas:ws1:f"},
        {"channel": "logs:platform:ws1"},
    ]
    assert harness.store.batches == []


async def test_a_token_over_its_rate_is_limited_and_nothing_is_stored():
    harness = Harness(publish_rate=2, publish_burst=4)
    await harness.publish([record()] * 4)
    with pytest.raises(RateLimited) as caught:
        await harness.publish(record())
    assert caught.value.retry_after >= 1 and caught.value.rule == "publish_rate"
    assert "'l5-etl-token'" in caught.value.message and "2 records/s" in caught.value.message
    assert len(harness.store.batches) == 1


async def test_a_batch_larger_than_the_burst_is_too_large_even_on_a_full_bucket():
    harness = Harness(publish_rate=2, publish_burst=4)
    with pytest.raises(PayloadTooLarge) as caught:
        await harness.publish([record()] * 5)
    assert caught.value.rule == "publish_burst" and "burst of 4" in caught.value.message
    assert harness.store.batches == []
    await harness.publish([record()] * 4)  # the refused batch spent nothing


async def test_a_batch_the_broker_did_not_confirm_gives_its_budget_back():
    harness = Harness(publish_rate=1, publish_burst=3)
    harness.store.fail = BrokerUnavailable("down")
    with pytest.raises(BrokerUnavailable):
        await harness.publish([record()] * 3)
    harness.store.fail = None
    assert (await harness.publish([record()] * 3)).accepted == 3  # the retry finds it whole


async def test_without_a_publish_rate_there_is_no_limit():
    harness = Harness()
    for _ in range(3):
        await harness.publish([record()] * 1000)
    assert len(harness.store.batches) == 3


async def test_the_caller_is_told_the_token_name_once_it_verifies_and_not_before():
    harness = Harness()
    seen: list[str] = []
    raw = json.dumps(record()).encode()

    def request(token):
        return IngestRequest(
            transport=HTTP,
            content_type="application/json",
            declared_length=None,
            credential=token,
            read_body=body_in_memory(raw),
            identified=seen.append,
        )

    with pytest.raises(Unauthenticated):
        await harness.pipeline.publish(request("wrong"))
    assert seen == []
    await harness.pipeline.publish(request(ETL_TOKEN))
    assert seen == [ETL_TOKEN]


@pytest.mark.parametrize(
    ("token", "rule"), [(None, "no_credential"), ("", "no_credential"), ("wrong", "token_invalid")]
)
async def test_a_credential_refusal_names_its_rule(token, rule):
    with pytest.raises(Unauthenticated) as caught:
        await Harness().publish(record(), token=token)
    assert caught.value.rule == rule


async def test_a_grant_refusal_names_its_rule():
    with pytest.raises(Forbidden) as caught:
        await Harness().publish(record("logs:faas:ws1"))
    assert caught.value.rule == "grant"


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
async def test_a_body_that_is_not_utf8_is_a_400_not_a_crash(content_type):
    harness = Harness()
    with pytest.raises(InvalidRequest, match="UTF-8"):
        await harness.publish(
            b'{"channel": "logs:etl:ws1", "message": "caf\xe9"}', content_type=content_type
        )
    assert harness.store.batches == []


async def test_a_token_from_a_file_publishes_under_its_name_not_its_secret(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    {
                        "name": "billing-prod",
                        "sha256": hash_secret("s3cret-value"),
                        "grants": ["logs:etl"],
                    }
                ]
            }
        )
    )
    harness = Harness()
    harness.pipeline = IngestPipeline(
        harness.settings,
        TokenRegistry.from_file(path),
        harness.store,
        IngestMetrics(CollectorRegistry()),
    )
    await harness.publish(record(), token="s3cret-value")
    [(stored, publisher)] = harness.store.batches
    assert publisher == "billing-prod" and stored[0].record.publisher == "billing-prod"
    assert "s3cret-value" not in msgspec.json.encode(stored[0].record).decode()


async def test_an_unavailable_broker_is_counted_and_propagated():
    harness = Harness()
    harness.store.fail = BrokerUnavailable("down")
    with pytest.raises(BrokerUnavailable):
        await harness.publish(record(), transport=NATS)
    assert harness.metric("logstream_ingest_requests_total", transport="nats", status="503") == 1


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
        ("", None),
    ],
)
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


def test_the_rate_limiter_allows_its_burst_then_refills_at_the_rate():
    clock = FakeClock()
    limiter = RecordRateLimiter(5, 10, clock=clock)
    limiter.take("a", 10)
    with pytest.raises(RateLimited):
        limiter.take("a", 1)
    limiter.take("b", 1)  # budgets are per token
    clock.now += 0.2
    limiter.take("a", 1)


def test_the_bucket_never_holds_more_than_the_burst():
    clock = FakeClock()
    limiter = RecordRateLimiter(5, 10, clock=clock)
    limiter.take("a", 1)
    clock.now += 3600
    limiter.take("a", 10)
    with pytest.raises(RateLimited):
        limiter.take("a", 1)


@pytest.mark.parametrize(
    ("asked", "retry_after"),
    [
        (1, 1),  # 0.2 s away: still at least one second
        (10, 2),  # 2 s away exactly
        (6, 2),  # 1.2 s away, rounded up
    ],
)
def test_retry_after_is_the_whole_seconds_until_the_batch_fits(asked, retry_after):
    clock = FakeClock()
    limiter = RecordRateLimiter(5, 10, clock=clock)
    limiter.take("a", 10)
    with pytest.raises(RateLimited) as caught:
        limiter.take("a", asked)
    assert caught.value.retry_after == retry_after
    assert caught.value.details == [{"token": "a", "publish_rate": 5.0, "publish_burst": 10}]


def test_a_batch_larger_than_the_burst_can_never_pass_and_spends_nothing():
    clock = FakeClock()
    limiter = RecordRateLimiter(5, 10, clock=clock)
    with pytest.raises(PayloadTooLarge) as caught:
        limiter.take("a", 11)
    assert caught.value.rule == "publish_burst"
    assert caught.value.details == [{"records": 11, "publish_burst": 10}]
    limiter.take("a", 10)


def test_a_budget_given_back_is_capped_at_the_burst():
    clock = FakeClock()
    limiter = RecordRateLimiter(5, 10, clock=clock)
    limiter.take("a", 4)
    limiter.give_back("a", 40)
    limiter.take("a", 10)
    with pytest.raises(RateLimited):
        limiter.take("a", 1)
    limiter.give_back("never-seen", 3)  # no bucket yet: nothing to give back


def test_the_burst_defaults_to_two_seconds_of_rate_but_never_below_a_full_batch():
    def burst(**overrides) -> int:
        return load_settings(Settings, {}, env="dev", **overrides).burst

    assert burst(publish_rate=2000) == 4000
    assert burst(publish_rate=0.5) == 1000
    assert burst(publish_rate=10, max_batch_records=50) == 50
    assert burst(publish_rate=10, publish_burst=7) == 7


def test_a_burst_without_a_rate_is_refused_at_start_naming_both_settings():
    with pytest.raises(SettingsError) as caught:
        load_settings(Settings, {"LOGSTREAM_PUBLISH_BURST": "50"}, env="dev")
    assert "LOGSTREAM_PUBLISH_BURST" in caught.value.message
    assert "LOGSTREAM_PUBLISH_RATE" in caught.value.message


def test_a_rejection_report_carries_the_reason_and_a_truncated_payload():
    reply = {"status": 400, "error": "invalid_request", "message": "bad", "details": [1]}
    report = msgspec.json.decode(
        rejection_report(reply, "ingest.logs", b"x" * (REPORT_PAYLOAD_CHARS + 10))
    )
    assert report["status"] == 400 and report["details"] == [1]
    assert len(report["payload"]) == REPORT_PAYLOAD_CHARS and report["payload_truncated"]
    assert report["payload_bytes"] == REPORT_PAYLOAD_CHARS + 10
