"""The simulator's runner against an in-memory ingest double: batching, retries, reporting.

What reaches a real ingest is checked in tests/integration/test_simulator.py; here the double
lets each answer (429, 503, 401, a dead connection) be scripted exactly.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from logstream.services.simulator.runner import Batcher, RetryPolicy, Simulation, TokenBook
from logstream.services.simulator.scenarios import Traffic
from logstream.services.simulator.tally import Tally
from logstream.shared.ingest_client import Reply, TransportFailed

FAST_RETRY = RetryPolicy(max_attempts=3, first_delay_s=0.01, max_delay_s=0.05)


class ScriptedIngest:
    """Answers from a script, then 202; stores accepted records by id, as JetStream dedup would."""

    name = "scripted"
    max_batch_records = 100
    max_batch_bytes = 768 * 1024
    in_flight = 4

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, list[str]]] = []
        self.stored: dict[str, dict] = {}

    async def publish(self, token: str, body: bytes) -> Reply:
        records = json.loads(body)
        self.calls.append((token, [record["id"] for record in records]))
        await asyncio.sleep(0)
        answer = self.script.pop(0) if self.script else Reply(202, {})
        if isinstance(answer, Exception):
            raise answer
        if answer.status == 202:
            self.stored.update((record["id"], record) for record in records)
            return Reply(202, {"accepted": len(records), "seqs": []})
        return answer

    async def close(self) -> None:
        pass


def _simulation(ingest, seed=1, services=None, **options) -> tuple[Simulation, list[str]]:
    lines: list[str] = []
    tally = Tally(report=lines.append)
    options.setdefault("retry", FAST_RETRY)
    return Simulation(ingest, Traffic(seed, services=services), tally=tally, **options), lines


async def test_a_burst_stores_every_record_once_with_unique_ids():
    ingest = ScriptedIngest()
    simulation, lines = _simulation(ingest)
    tally = await simulation.burst(450)
    assert tally.ok and (tally.sent, tally.accepted, tally.failed) == (450, 450, 0)
    assert len(ingest.stored) == 450
    assert all(record_id.startswith(simulation.run_id + "-") for record_id in ingest.stored)
    assert all(len(ids) <= ingest.max_batch_records for _, ids in ingest.calls)
    assert lines == []


async def test_each_service_is_published_with_its_own_dev_token():
    ingest = ScriptedIngest()
    simulation, _ = _simulation(ingest)
    await simulation.burst(300)
    expected = {
        "etl": "l5-etl-token",
        "faas": "faas-token",
        "analytics": "analytics-token",
        "platform": "platform-token",
    }
    for token, ids in ingest.calls:
        services = {ingest.stored[i]["channel"].split(":")[1] for i in ids}
        assert services == {next(s for s, t in expected.items() if t == token)}
    assert {token for token, _ in ingest.calls} == set(expected.values())


async def test_a_token_override_is_used_for_every_record():
    ingest = ScriptedIngest()
    simulation, _ = _simulation(ingest, tokens=TokenBook.dev(override="mine"))
    await simulation.burst(100)
    assert {token for token, _ in ingest.calls} == {"mine"}


async def test_a_503_is_retried_with_the_same_ids_after_retry_after():
    busy = Reply(
        503,
        {"error": "broker_unavailable", "message": "JetStream did not confirm"},
        retry_after=0.01,
    )
    ingest = ScriptedIngest(busy)
    simulation, lines = _simulation(ingest, seed=2, tokens=TokenBook.dev(override="t"))
    tally = await simulation.burst(50)
    refused_ids = ingest.calls[0][1]
    assert [ids for _, ids in ingest.calls].count(refused_ids) == 2
    assert tally.ok and tally.retries == 1 and tally.accepted == 50 == len(ingest.stored)
    assert any("retrying" in line and "503" in line for line in lines)


async def test_a_429_that_never_clears_fails_after_bounded_attempts():
    limited = Reply(429, {"error": "rate_limited", "message": "over budget"}, retry_after=0.01)
    ingest = ScriptedIngest(*[limited] * 10)
    simulation, lines = _simulation(ingest, services={"etl"})
    tally = await simulation.burst(20)
    assert len(ingest.calls) == FAST_RETRY.max_attempts
    assert not tally.ok and tally.failed == 20 and tally.by_status["429"] == 20
    assert "simulate: failed: 429 rate_limited: over budget" in lines


async def test_a_401_is_not_retried_and_each_distinct_failure_is_reported_once():
    refused = Reply(401, {"error": "unauthenticated", "message": "the service token is not valid"})
    ingest = ScriptedIngest(*[refused] * 50)
    simulation, lines = _simulation(ingest, tokens=TokenBook.dev(override="nope"))
    tally = await simulation.burst(350)
    assert len({tuple(ids) for _, ids in ingest.calls}) == len(ingest.calls)  # no retry
    assert tally.failed == 350 and tally.accepted == 0
    assert lines == ["simulate: failed: 401 unauthenticated: the service token is not valid"]
    summary = tally.summary_lines(via="http", run_id="r", seed=1)
    assert "sent 350, accepted 0, failed 350" in summary[0]
    assert "401=350" in summary[1]


async def test_an_unreachable_ingest_stops_the_run_at_once():
    down = TransportFailed("cannot connect to ingest at http://127.0.0.1:1", unreachable=True)
    ingest = ScriptedIngest(*[down] * 1000)
    simulation, lines = _simulation(ingest)
    tally = await simulation.burst(10_000)
    assert tally.aborted and not tally.ok
    assert len(ingest.calls) <= ingest.in_flight + 4  # not one attempt per batch of the burst
    assert lines[0] == "simulate: giving up: cannot connect to ingest at http://127.0.0.1:1"
    assert len(lines) == 1


async def test_a_connection_lost_after_ingest_answered_is_retried():
    lost = TransportFailed("no answer within 15 s", unreachable=False)
    ingest = ScriptedIngest(Reply(202, {}), lost)
    ingest.max_batch_records = 10
    simulation, _ = _simulation(ingest, tokens=TokenBook.dev(override="t"))
    tally = await simulation.burst(20)
    assert tally.ok and tally.retries == 1 and len(ingest.stored) == 20


async def test_two_runs_with_one_seed_send_the_same_traffic_under_different_ids():
    first, second = ScriptedIngest(), ScriptedIngest()
    await _simulation(first, seed=9)[0].burst(100)
    await _simulation(second, seed=9)[0].burst(100)
    assert not set(first.stored) & set(second.stored)

    def content(ingest):
        return sorted((r["channel"], r["message"]) for r in ingest.stored.values())

    assert content(first) == content(second)


async def test_continuous_sends_rate_times_seconds_records():
    ingest = ScriptedIngest()
    simulation, _ = _simulation(ingest)
    tally = await simulation.continuous(0.5, rate=40)
    assert tally.ok and tally.sent == 20 == len(ingest.stored)


async def test_continuous_zero_runs_until_stopped():
    ingest = ScriptedIngest()
    simulation, _ = _simulation(ingest)
    run = asyncio.create_task(simulation.continuous(0, rate=200))
    deadline = asyncio.get_running_loop().time() + 10
    while len(ingest.stored) < 20 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    simulation.stop.set()
    tally = await asyncio.wait_for(run, 10)
    assert tally.ok and tally.accepted == len(ingest.stored) >= 20


async def test_a_stopped_burst_reports_itself_interrupted():
    simulation, _ = _simulation(ScriptedIngest())
    simulation.stop.set()
    tally = await simulation.burst(100)
    assert tally.interrupted and tally.sent == 0 and tally.ok


def test_a_batcher_cuts_batches_at_the_record_count_and_the_body_size():
    by_count = Batcher(max_records=3, max_bytes=10_000)
    full = [by_count.add("etl", b"{}") for _ in range(7)]
    assert [len(b.records) for b in full if b] == [3, 3]
    assert [len(b.records) for b in by_count.flush()] == [1]
    by_size = Batcher(max_records=1000, max_bytes=100)
    cut = [by_size.add("etl", b"x" * 40) for _ in range(3)]
    assert [len(b.records) for b in cut if b] == [2]
    assert Counter(len(b.body) <= 100 for b in cut if b) == Counter({True: 1})


def test_batches_never_mix_services():
    batcher = Batcher(max_records=10, max_bytes=10_000)
    for service in ("etl", "faas", "etl"):
        batcher.add(service, b"{}")
    assert sorted((b.service, len(b.records)) for b in batcher.flush()) == [("etl", 2), ("faas", 1)]
