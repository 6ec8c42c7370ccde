"""LogPublisher against an in-memory ingest double: batching, ids, retries, failures, the queue.

What reaches a real ingest (HTTP and NATS) is checked in tests/integration/test_clients.py;
here the double scripts each answer (202, 429, 503, 403, no answer) exactly.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime

import pytest

from logstream import LogPublisher
from logstream.publisher import (
    FlushTimeout,
    InvalidRecord,
    PublisherClosed,
    PublishFailed,
    PublishQueueFull,
)
from logstream.sender import retry_delay
from logstream.shared.errors import LogstreamError
from logstream.shared.ingest_client import Reply, TransportFailed
from tests.support.waiting import wait_until_blocking

CHANNEL = "logs:etl:workspace123:workflow456"
# Only bounds a failing test: a passing one returns as soon as the double has answered.
DEADLINE_S = 10.0


class ScriptedIngest:
    """Answers from a script, then 202; keeps every request's ids and stores records by id
    (once per id, as JetStream's duplicate window does)."""

    name = "scripted"
    max_batch_bytes = 768 * 1024
    in_flight = 1

    def __init__(self, *script, max_batch_records: int = 100) -> None:
        self.script = list(script)
        self.max_batch_records = max_batch_records
        self.calls: list[list[str]] = []
        self.tokens: list[str] = []
        self.stored: dict[str, dict] = {}
        self.release = threading.Event()
        self.release.set()
        self.closed = False
        self.arrived = 0

    async def publish(self, token: str, body: bytes) -> Reply:
        self.arrived += 1
        await asyncio.to_thread(self.release.wait, DEADLINE_S)
        records = json.loads(body)
        self.calls.append([record["id"] for record in records])
        self.tokens.append(token)
        answer = self.script.pop(0) if self.script else Reply(202, {"accepted": len(records)})
        if isinstance(answer, Exception):
            raise answer
        if answer.status == 202:
            for record in records:
                self.stored.setdefault(record["id"], record)
        return answer

    async def close(self) -> None:
        self.closed = True

    @property
    def messages(self) -> list[str]:
        return [record["message"] for record in self.stored.values()]


def publisher(ingest: ScriptedIngest, **options) -> LogPublisher:
    options.setdefault("backoff_s", 0.01)
    return LogPublisher(token="l5-etl-token", transport=ingest, **options)


def test_publish_returns_a_uuid_hex_id_and_flush_waits_until_ingest_stored_it():
    ingest = ScriptedIngest()
    with publisher(ingest) as logs:
        record_id = logs.publish(CHANNEL, "extract done", rows=1200)
        logs.flush()
        assert logs.pending == 0
    assert len(record_id) == 32 and int(record_id, 16) >= 0
    stored = ingest.stored[record_id]
    assert stored["channel"] == CHANNEL and stored["message"] == "extract done"
    assert stored["level"] == "info" and stored["fields"] == {"rows": 1200}
    assert ingest.tokens == ["l5-etl-token"] and ingest.closed


def test_records_go_in_batches_of_the_transports_size_in_publish_order():
    ingest = ScriptedIngest(max_batch_records=100)
    ingest.release.clear()  # hold the first request so the rest queue up behind it
    with publisher(ingest) as logs:
        ids = [logs.publish(CHANNEL, f"line {n}") for n in range(250)]
        ingest.release.set()
    assert [len(call) for call in ingest.calls] in ([1, 100, 100, 49], [100, 100, 50])
    assert [record_id for call in ingest.calls for record_id in call] == ids
    assert ingest.messages == [f"line {n}" for n in range(250)]


def test_a_lone_record_is_sent_without_a_flush():
    ingest = ScriptedIngest()
    logs = publisher(ingest, linger_s=0.01)
    logs.publish(CHANNEL, "on its own")
    wait_until_blocking(
        lambda: ingest.messages == ["on its own"], "the record is sent by the thread"
    )
    logs.close()


def test_a_503_and_a_429_are_retried_with_the_same_ids_and_stored_once():
    ingest = ScriptedIngest(
        Reply(503, {"error": "broker_unavailable", "message": "retry"}, retry_after=0.01),
        Reply(429, {"error": "rate_limited", "message": "slow down"}, retry_after=0.01),
    )
    with publisher(ingest) as logs:
        ids = [logs.publish(CHANNEL, f"m{n}") for n in range(3)]
        logs.flush()
        assert logs.retried == 2 and logs.lost == 0
    assert ingest.calls == [ids, ids, ids]
    assert list(ingest.stored) == ids


def test_a_lost_connection_is_retried_with_the_same_ids():
    ingest = ScriptedIngest(
        TransportFailed("connection reset", unreachable=False),
        TransportFailed("refused", unreachable=True),
    )
    with publisher(ingest) as logs:
        record_id = logs.publish(CHANNEL, "through a blip")
    assert ingest.calls == [[record_id]] * 3 and list(ingest.stored) == [record_id]


def test_a_403_is_not_retried_and_flush_raises_with_the_status_and_the_servers_words():
    refusal = Reply(
        403,
        {
            "error": "forbidden",
            "message": "token 'l5-etl-token' may not publish to logs:faas:ws1",
            "details": [{"channel": "logs:faas:ws1"}],
        },
    )
    ingest = ScriptedIngest(refusal)
    logs = publisher(ingest)
    logs.publish("logs:faas:ws1", "not mine")
    with pytest.raises(PublishFailed) as failed:
        logs.flush()
    assert len(ingest.calls) == 1
    assert failed.value.status == 403 and failed.value.error == "forbidden"
    assert failed.value.records == 1 and failed.value.details == [{"channel": "logs:faas:ws1"}]
    assert "403 forbidden: token 'l5-etl-token' may not publish" in str(failed.value)
    assert isinstance(failed.value, LogstreamError) and logs.lost == 1
    logs.publish(CHANNEL, "mine")
    logs.flush()  # a failure is raised once; later records are unaffected
    logs.close()


@pytest.mark.parametrize("status", [400, 401, 413])
def test_permanent_refusals_are_not_retried(status):
    ingest = ScriptedIngest(Reply(status, {"error": "nope", "message": "refused"}))
    logs = publisher(ingest)
    logs.publish(CHANNEL, "m")
    with pytest.raises(PublishFailed) as failed:
        logs.close()
    assert failed.value.status == status and len(ingest.calls) == 1


def test_retries_are_bounded_and_flush_reports_the_last_answer():
    busy = Reply(503, {"error": "broker_unavailable", "message": "NATS is down"}, retry_after=0)
    ingest = ScriptedIngest(*[busy] * 10)
    logs = publisher(ingest, max_attempts=3)
    logs.publish(CHANNEL, "m")
    with pytest.raises(PublishFailed, match="503 broker_unavailable: NATS is down"):
        logs.flush()
    assert len(ingest.calls) == 3 and logs.retried == 2
    logs.close()


def test_no_answer_at_all_fails_without_a_status():
    ingest = ScriptedIngest(*[TransportFailed("cannot connect to ingest", unreachable=True)] * 3)
    logs = publisher(ingest, max_attempts=3)
    logs.publish(CHANNEL, "m")
    with pytest.raises(PublishFailed, match="no answer: cannot connect") as failed:
        logs.close()
    assert failed.value.status is None


def test_several_failed_batches_are_summed_in_one_error():
    refusal = Reply(401, {"error": "unauthenticated", "message": "the service token is not valid"})
    ingest = ScriptedIngest(refusal, refusal, max_batch_records=2)
    ingest.release.clear()
    logs = publisher(ingest)
    for n in range(4):
        logs.publish(CHANNEL, f"m{n}")
    ingest.release.set()
    with pytest.raises(PublishFailed) as failed:
        logs.close()
    refused = ingest.calls[:2]
    assert failed.value.records == sum(map(len, refused)) == 4 - len(ingest.stored)
    assert failed.value.more == 1 and "(and 1 more failed batch(es))" in str(failed.value)


def test_on_error_hears_of_a_refused_batch_from_the_sender_thread():
    heard: list[PublishFailed] = []
    ingest = ScriptedIngest(Reply(403, {"error": "forbidden", "message": "no"}))
    logs = publisher(ingest, on_error=heard.append)
    logs.publish(CHANNEL, "m")
    wait_until_blocking(lambda: heard, "on_error is called")
    assert heard[0].status == 403
    with pytest.raises(PublishFailed):
        logs.close()


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (dict(channel="logs:nope:ws1"), "unknown service 'nope'"),
        (dict(channel="logs:etl"), "must be logs:<service>:<workspace>"),
        (dict(level="loud"), "level 'loud' is not one of"),
        (dict(message="x" * (64 * 1024 + 1)), "field 'message'"),
        (dict(message=42), "field 'message': Expected `str`"),
        (dict(fields={"blob": "y" * 17000}), "fields encode to over 16384 bytes"),
        (dict(timestamp="yesterday"), "timestamp 'yesterday' is not RFC 3339"),
        (dict(timestamp=datetime(2026, 1, 1)), "needs a timezone"),
        (dict(source="s" * 129), "field 'source'"),
        (dict(id="i" * 129), "field 'id'"),
    ],
)
def test_a_bad_record_raises_at_the_call_site_and_is_not_queued(call, problem):
    ingest = ScriptedIngest()
    logs = publisher(ingest)
    args = {"channel": CHANNEL, "message": "m", **call}
    with pytest.raises(InvalidRecord, match=problem) as raised:
        logs.publish(args.pop("channel"), args.pop("message"), **args)
    assert isinstance(raised.value, ValueError) and logs.pending == 0
    logs.close()
    assert ingest.calls == []


def test_keywords_fill_the_record_and_extra_keywords_join_fields():
    ingest = ScriptedIngest()
    when = datetime(2026, 1, 31, 12, 0, 0, 250000, tzinfo=UTC)
    with publisher(ingest) as logs:
        given = logs.publish(
            CHANNEL,
            "m",
            "WARNING",
            source="etl.load",
            timestamp=when,
            id="run-42-step-3",
            fields={"rows": 1, "source": "from fields"},
            rows=2,
            table="orders",
        )
        epoch = logs.publish(CHANNEL, "m", timestamp=1769860800000)
        seconds = logs.publish(CHANNEL, "m", timestamp=1769860800.5)
    record = ingest.stored[given]
    assert given == "run-42-step-3"
    assert record["level"] == "WARNING" and record["source"] == "etl.load"
    assert record["timestamp"] == "2026-01-31T12:00:00.250Z"
    assert record["fields"] == {"rows": 2, "source": "from fields", "table": "orders"}
    assert ingest.stored[epoch]["timestamp"] == 1769860800000
    assert ingest.stored[seconds]["timestamp"] == 1769860800500


def test_every_record_is_stamped_at_publish_time_and_odd_values_travel_as_repr():
    ingest = ScriptedIngest()

    class Job:
        def __repr__(self) -> str:
            return "<Job 7>"

    with publisher(ingest) as logs:
        record_id = logs.publish(CHANNEL, "m", job=Job(), when=datetime(2026, 1, 1))
    record = ingest.stored[record_id]
    assert record["fields"] == {"job": "<Job 7>", "when": "2026-01-01T00:00:00"}
    stamped = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 60


def test_a_full_queue_drops_the_oldest_by_default_never_raising_and_counts_them():
    ingest = ScriptedIngest()
    ingest.release.clear()
    logs = publisher(ingest, max_queue=3)
    logs.publish(CHANNEL, "m0")
    wait_until_blocking(lambda: ingest.arrived == 1, "the first record is taken")
    for n in range(1, 8):  # m1..m7 into a queue of 3: m1..m4 make room for the newest
        logs.publish(CHANNEL, f"m{n}")
    assert logs.dropped == 4
    ingest.release.set()
    logs.close()  # flush() does not wait for the dropped ones
    assert ingest.messages == ["m0", "m5", "m6", "m7"]


def test_the_raise_policy_refuses_at_once_when_full():
    ingest = ScriptedIngest()
    ingest.release.clear()
    logs = publisher(ingest, max_queue=5, when_full="raise")
    for n in range(6):  # the first is taken by the held request, five wait in the queue
        logs.publish(CHANNEL, f"m{n}")
        if n == 0:
            wait_until_blocking(lambda: ingest.arrived == 1, "the first record is taken")
    with pytest.raises(PublishQueueFull, match="5 records are waiting"):
        logs.publish(CHANNEL, "one too many")
    ingest.release.set()
    logs.close()
    assert ingest.messages == [f"m{n}" for n in range(6)]


def test_a_full_queue_waits_for_room_within_queue_timeout():
    ingest = ScriptedIngest()
    ingest.release.clear()
    logs = publisher(ingest, max_queue=1, when_full="block", queue_timeout=DEADLINE_S)
    logs.publish(CHANNEL, "m0")
    wait_until_blocking(lambda: ingest.arrived == 1, "the first record is taken")
    logs.publish(CHANNEL, "m1")
    threading.Timer(0.2, ingest.release.set).start()
    logs.publish(CHANNEL, "m2")  # blocks until the sender takes m1
    logs.close()
    assert ingest.messages == ["m0", "m1", "m2"]


def test_an_unknown_full_queue_policy_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="drop_oldest, block, raise"):
        publisher(ScriptedIngest(), when_full="grow")


def test_publish_after_close_raises():
    logs = publisher(ScriptedIngest())
    logs.close()
    logs.close()  # idempotent
    with pytest.raises(PublisherClosed):
        logs.publish(CHANNEL, "late")


def test_flush_times_out_when_ingest_does_not_answer_and_close_gives_the_records_up():
    ingest = ScriptedIngest()
    ingest.release.clear()
    logs = publisher(ingest)
    logs.publish(CHANNEL, "stuck")
    with pytest.raises(FlushTimeout, match="1 record"):
        logs.flush(timeout=0.2)
    with pytest.raises(FlushTimeout):
        logs.close(timeout=0.2)
    wait_until_blocking(lambda: logs.lost == 1, "the abandoned record is counted as lost")
    ingest.release.set()
    assert logs._thread is not None and not logs._thread.is_alive()


def test_many_threads_publishing_at_once_lose_and_repeat_nothing():
    ingest = ScriptedIngest(max_batch_records=1000)
    with publisher(ingest) as logs:

        def produce(worker: int) -> None:
            for n in range(500):
                logs.publish(CHANNEL, f"{worker}-{n}")

        workers = [threading.Thread(target=produce, args=(w,)) for w in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(DEADLINE_S)
    assert len(ingest.stored) == 4000 == sum(len(call) for call in ingest.calls)
    for worker in range(8):  # each thread's records stay in its own order
        mine = [m for m in ingest.messages if m.startswith(f"{worker}-")]
        assert mine == [f"{worker}-{n}" for n in range(500)]


def test_a_publisher_that_never_published_closes_without_a_thread():
    logs = publisher(ScriptedIngest())
    logs.flush()
    logs.close()
    assert logs._thread is None


def test_transport_and_token_are_checked_when_built():
    with pytest.raises(ValueError, match="transport must be"):
        LogPublisher(token="t", transport="smoke")
    with pytest.raises(ValueError, match="token is required"):
        LogPublisher(token="")
    assert LogPublisher(token="t", transport="nats").url.startswith("nats://producer:")
    assert LogPublisher(token="t").url == "http://127.0.0.1:3001"


@pytest.mark.parametrize(
    ("attempt", "retry_after", "low", "high"),
    [
        (1, None, 0.1, 0.15),
        (3, None, 0.4, 0.6),
        (40, None, 10.0, 15.0),  # doubled, then capped
        (1, 2.0, 2.0, 3.0),
        (5, 30.0, 10.0, 15.0),  # Retry-After is a floor, up to the cap
    ],
)
def test_a_retry_waits_the_backoff_or_retry_after_stretched_by_jitter(
    attempt, retry_after, low, high
):
    assert retry_delay(attempt, 0.1, retry_after, rand=lambda: 0.0) == pytest.approx(low)
    assert retry_delay(attempt, 0.1, retry_after, rand=lambda: 1.0) == pytest.approx(high)


def test_producers_that_failed_together_do_not_retry_together():
    assert len({round(retry_delay(2, 0.5, None), 6) for _ in range(20)}) > 1
