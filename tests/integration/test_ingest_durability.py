"""Durable by default: atomic batches under ``sync_interval: always``, and every service saying
which durability the broker gives.

Each test here runs its own nats-server (with its monitoring endpoint, where the services read
the broker's sync setting) and its own services on it: what is asserted is what an operator
sees in /ready and /metrics, and what JetStream really holds afterwards.
"""

from __future__ import annotations

import httpx
import pytest

from logstream.shared.nats_names import STREAM_NAME
from tests.support.jetstream import stored
from tests.support.nats_source import connect_as, embedded_for_tests, free_port
from tests.support.processes import ServiceProcess
from tests.support.waiting import wait_until

PUBLISH = "/api/logs/publish"
ETL = {"Authorization": "Bearer l5-etl-token"}
ANSWER_WITHIN_S = 30.0


def _labelled(base_url: str, name: str) -> dict[str, float]:
    """Every sample of ``name`` on ``base_url``/metrics, by its label text."""
    samples = {}
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.partition("} ")
            samples[labels[len(name) + 1 :]] = float(value)
    return samples


class Broker:
    def __init__(self, tmp_path, *, sync_always: bool) -> None:
        self.embedded = embedded_for_tests(
            port=free_port(),
            store_dir=tmp_path / "nats",
            sync_always=sync_always,
            monitor_port=free_port(),
        ).start()
        self.services: list[ServiceProcess] = []
        self.log_dir = tmp_path

    def service(self, name: str, *args: str, monitor: bool = True) -> ServiceProcess:
        monitor_url = self.embedded.monitor_url
        assert monitor_url is not None
        extra = ["--nats-monitor-url", monitor_url] if monitor else []
        process = ServiceProcess(
            name, nats_url=self.embedded.url, log_dir=self.log_dir, args=[*extra, *args]
        ).start()
        self.services.append(process)
        process.wait_ready()
        return process

    def stop(self) -> None:
        for process in reversed(self.services):
            process.stop()
        self.embedded.stop()


@pytest.fixture
def synced(tmp_path):
    broker = Broker(tmp_path, sync_always=True)
    yield broker
    broker.stop()


@pytest.fixture
def lazy(tmp_path):
    broker = Broker(tmp_path, sync_always=False)
    yield broker
    broker.stop()


def _records(prefix: str, count: int, channel: str = "logs:etl:ws1:wf1") -> list[dict]:
    return [{"channel": channel, "message": f"m{i}", "id": f"{prefix}-{i}"} for i in range(count)]


async def test_every_service_says_fsync_when_the_broker_syncs_always(synced):
    ingest = synced.service("ingest")
    gateway = synced.service("gateway")
    proxy = synced.service("proxy", "--gateway-url", gateway.url)
    for service in (ingest, gateway):
        # The gateway may have read LOGS before ingest created it; its next look (or this
        # one, when ingest came first) shows the replicas.
        body = httpx.get(service.url + "/ready").json()
        assert body["durability"] == "fsync" and body["broker_sync"] == "always", body
    await wait_until(
        lambda: httpx.get(proxy.url + "/ready").json().get("durability") == "fsync",
        "the proxy to carry the gateways' durability",
        timeout=15,
    )
    for service in (ingest, gateway, proxy):
        states = _labelled(service.url, "logstream_broker_durability")
        assert states['logstream_broker_durability="fsync"'] == 1.0, (service.service, states)
        assert states['logstream_broker_durability="lazy"'] == 0.0


async def test_lazy_broker_is_said_lazy_and_without_a_monitor_url_unknown(lazy):
    ingest = lazy.service("ingest")
    blind = lazy.service("gateway", monitor=False)
    body = httpx.get(ingest.url + "/ready").json()
    assert body["durability"] == "lazy" and body["broker_sync"] == "2m", body
    body = httpx.get(blind.url + "/ready").json()
    assert body["ready"] is True
    assert body["durability"] == "unknown" and "nats_monitor_url" in body["durability_problem"]


async def test_on_a_lazy_broker_requests_are_written_record_by_record(lazy):
    """atomic_batches=auto: nothing to gain without fsync, and each atomic batch would cost the
    broker a staging store; a retried batch shows which way it went (an atomic one is refused
    whole and counted)."""
    ingest = lazy.service("ingest")
    records = _records("lazy", 100)
    async with httpx.AsyncClient(base_url=ingest.url, timeout=ANSWER_WITHIN_S) as client:
        first = await client.post(PUBLISH, json=records, headers=ETL)
        retry = await client.post(PUBLISH, json=records, headers=ETL)
    assert first.status_code == 202 and retry.json()["seqs"] == first.json()["seqs"]
    assert _labelled(ingest.url, "logstream_ingest_atomic_refusals_total") == {}
    forced = lazy.service("ingest", "--atomic-batches", "on")
    async with httpx.AsyncClient(base_url=forced.url, timeout=ANSWER_WITHIN_S) as client:
        again = await client.post(PUBLISH, json=records, headers=ETL)
    assert again.json()["seqs"] == first.json()["seqs"]
    refusals = _labelled(forced.url, "logstream_ingest_atomic_refusals_total")
    assert refusals == {'code="10201"': 1.0}


async def test_a_batch_under_fsync_is_stored_whole_with_contiguous_seqs_and_a_retry_once(
    synced,
):
    ingest = synced.service("ingest")
    nc = await connect_as(synced.embedded.url, "gateway")
    try:
        info = await nc.jetstream().stream_info(STREAM_NAME)
        assert info.config.allow_atomic is True
        records = _records("a", 1000)
        async with httpx.AsyncClient(base_url=ingest.url, timeout=ANSWER_WITHIN_S) as client:
            first = await client.post(PUBLISH, json=records, headers=ETL)
            retry = await client.post(PUBLISH, json=records, headers=ETL)
        assert first.status_code == 202 and retry.status_code == 202, (first.text, retry.text)
        seqs = first.json()["seqs"]
        assert seqs == list(range(seqs[0], seqs[0] + 1000))
        # The retry's ids are all in the duplicate window: JetStream refuses the atomic batch
        # (10201) and ingest writes it record by record, each a duplicate of the first.
        assert retry.json()["seqs"] == seqs
        refusals = _labelled(ingest.url, "logstream_ingest_atomic_refusals_total")
        assert refusals == {'code="10201"': 1.0}
        found = await stored(nc.jetstream(), "logs.etl.ws1.wf1")
        assert [seq for seq, _, _ in found] == seqs
        assert [record["id"] for _, _, record in found] == [r["id"] for r in records]
    finally:
        await nc.close()


async def test_a_batch_mixing_records_with_and_without_ids_keeps_each_ones_dedup(synced):
    ingest = synced.service("ingest")
    nc = await connect_as(synced.embedded.url, "gateway")
    mixed = [
        {"channel": "logs:etl:ws1:mix", "message": "with", "id": "only-one"},
        {"channel": "logs:etl:ws1:mix", "message": "without"},
        {"channel": "logs:etl:ws2:mix", "message": "another channel"},
    ]
    try:
        async with httpx.AsyncClient(base_url=ingest.url, timeout=ANSWER_WITHIN_S) as client:
            first = await client.post(PUBLISH, json=mixed, headers=ETL)
            again = await client.post(PUBLISH, json=mixed, headers=ETL)
        assert first.status_code == 202 and again.status_code == 202, (first.text, again.text)
        one, two, three = first.json()["seqs"]
        assert (two, three) == (one + 1, one + 2)
        # The record with an id is stored once; the two without are stored again.
        re_one, re_two, re_three = again.json()["seqs"]
        assert re_one == one and re_two > three and re_three == re_two + 1
        found = await stored(nc.jetstream(), "logs.etl.*.mix")
        assert [record["message"] for _, _, record in found] == [
            "with",
            "without",
            "another channel",
            "without",
            "another channel",
        ]
    finally:
        await nc.close()
