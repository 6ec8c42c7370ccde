"""``logstream simulate`` as a user runs it, against a real ingest process and a real NATS.

Each test reads the LOGS stream back (as the services' NATS user) and counts the records whose
id carries its own run id, so tests sharing the broker never count each other's records.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from logstream.shared.embedded_nats import EmbeddedNats
from logstream.shared.identities import DEV_NATS_PRODUCER
from logstream.shared.nats_names import STREAM_NAME
from tests.support.nats_source import free_port
from tests.support.processes import ServiceProcess
from tests.support.waiting import wait_until

SEED_SUBJECT = "logs.etl.workspace123.workflow456"
# A simulator run starts a Python process (~1-2 s of imports on a busy 2-core machine).
RUN_TIMEOUT_S = 60
DEV_TOKEN_OF = {
    "etl": "l5-etl-token",
    "faas": "faas-token",
    "analytics": "analytics-token",
    "platform": "platform-token",
}


@pytest.fixture(scope="module")
def ingest(nats_server, log_dir):
    service = ServiceProcess("ingest", nats_url=nats_server.url, log_dir=log_dir).start()
    yield service
    service.stop()


async def simulate(*args: str, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the command in a thread, so the test's event loop (and its NATS client) stays live."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "logstream", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def last_seq(nc) -> int:
    info = await nc.jetstream().stream_info(STREAM_NAME)
    return info.state.last_seq


async def records_of_run(nc, run_id: str, after_seq: int) -> list[tuple[str, dict]]:
    """(subject, record) of every stored record after ``after_seq`` whose id is of ``run_id``."""
    js = nc.jetstream()
    until = await last_seq(nc)
    found: list[tuple[str, dict]] = []
    if until <= after_seq:
        return found
    sub = await js.subscribe(
        "logs.>",
        stream=STREAM_NAME,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        config=ConsumerConfig(opt_start_seq=after_seq + 1),
    )
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            record = json.loads(msg.data)
            if str(record.get("id", "")).startswith(run_id + "-"):
                found.append((msg.subject, record))
            if msg.metadata.sequence.stream >= until:
                return found
    finally:
        await sub.unsubscribe()


def _run_id_of(stdout: str) -> str:
    match = re.search(r"\(run (\S+), seed", stdout)
    assert match, stdout
    return match.group(1)


def _assert_complete_burst(stored: list[tuple[str, dict]], count: int) -> None:
    ids = [record["id"] for _, record in stored]
    assert len(ids) == count and len(set(ids)) == count
    subjects = {subject for subject, _ in stored}
    assert SEED_SUBJECT in subjects and len(subjects) >= 8
    for _, record in stored:
        assert record["publisher"] == DEV_TOKEN_OF[record["channel"].split(":")[1]]


async def test_an_http_burst_stores_every_record_once_including_the_seed_channel(
    ingest, nc, unique_id
):
    before = await last_seq(nc)
    result = await simulate(
        "burst", "300", "--via", "http", "--ingest-url", ingest.url, "--run-id", unique_id
    )
    assert result.returncode == 0, result.stderr
    assert "sent 300, accepted 300, failed 0" in result.stdout
    _assert_complete_burst(await records_of_run(nc, unique_id, before), 300)


async def test_a_nats_burst_stores_every_record_once_including_the_seed_channel(
    ingest, nc, nats_server, unique_id
):
    before = await last_seq(nc)
    result = await simulate(
        "burst",
        "300",
        "--via",
        "nats",
        "--nats-url",
        nats_server.producer_url,
        "--run-id",
        unique_id,
    )
    assert result.returncode == 0, result.stderr
    assert "sent 300, accepted 300, failed 0" in result.stdout
    _assert_complete_burst(await records_of_run(nc, unique_id, before), 300)


async def test_two_runs_with_one_seed_are_both_stored_with_the_same_content(ingest, nc):
    before = await last_seq(nc)
    runs = [await simulate("burst", "40", "--seed", "7", "--ingest-url", ingest.url) for _ in "ab"]
    assert [run.returncode for run in runs] == [0, 0], runs[-1].stderr
    first, second = [await records_of_run(nc, _run_id_of(run.stdout), before) for run in runs]
    assert len(first) == len(second) == 40

    def content(stored):
        return sorted((r["channel"], r["level"], r["message"], r["source"]) for _, r in stored)

    assert content(first) == content(second)


async def test_continuous_publishes_about_rate_times_seconds_records(ingest, nc, unique_id):
    before = await last_seq(nc)
    result = await simulate(
        "continuous", "2", "--rate", "20", "--ingest-url", ingest.url, "--run-id", unique_id
    )
    assert result.returncode == 0, result.stderr
    stored = await records_of_run(nc, unique_id, before)
    assert 20 <= len(stored) <= 60
    assert f"accepted {len(stored)}," in result.stdout


async def test_continuous_until_stopped_ends_cleanly_on_sigterm(ingest, nc, unique_id):
    before = await last_seq(nc)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logstream",
            "simulate",
            "continuous",
            "0",
            "--rate",
            "50",
            "--ingest-url",
            ingest.url,
            "--run-id",
            unique_id,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    async def stored_some():
        if stored := await records_of_run(nc, unique_id, before):
            return stored
        assert process.poll() is None, process.stderr.read()
        return stored

    try:
        await wait_until(
            stored_some, "a record of the run to reach the stream", timeout=30, interval=0.1
        )
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "failed 0" in stdout
    stored = await records_of_run(nc, unique_id, before)
    assert f"accepted {len(stored):,}," in stdout


async def test_a_bad_token_exits_non_zero_and_prints_the_401_with_the_servers_message(ingest):
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            ingest.url + "/api/logs/publish",
            headers={"Authorization": "Bearer nope"},
            json={"channel": "logs:etl:workspace123:workflow456", "message": "x"},
        )
    assert answer.status_code == 401
    result = await simulate("burst", "20", "--token", "nope", "--ingest-url", ingest.url)
    assert result.returncode != 0
    assert f"401 unauthenticated: {answer.json()['message']}" in result.stderr
    assert "failed 20" in result.stdout and "401=20" in result.stdout


async def test_a_bad_token_over_nats_is_reported_the_same_way(ingest, nats_server):
    result = await simulate(
        "burst", "20", "--token", "nope", "--via", "nats", "--nats-url", nats_server.producer_url
    )
    assert result.returncode != 0
    assert "401 unauthenticated" in result.stderr and "401=20" in result.stdout


async def test_a_token_of_another_service_is_refused_naming_the_channels(ingest):
    result = await simulate(
        "burst", "10", "--service", "etl", "--token", "faas-token", "--ingest-url", ingest.url
    )
    assert result.returncode != 0
    assert "403 forbidden" in result.stderr
    assert "logs:etl:workspace123:workflow456" in result.stderr


async def test_an_unreachable_ingest_fails_fast_with_a_clear_message():
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = await simulate("burst", "5000", "--ingest-url", url)
    assert result.returncode != 0
    assert f"cannot connect to ingest at {url}" in result.stderr
    assert time.monotonic() - started < 30


async def test_an_unreachable_broker_fails_fast_with_a_clear_message():
    url = f"nats://127.0.0.1:{free_port()}"
    result = await simulate("burst", "10", "--via", "nats", "--nats-url", url)
    assert result.returncode != 0
    assert f"cannot reach NATS at {url}" in result.stderr


async def test_wrong_nats_credentials_fail_fast_with_the_brokers_refusal(nats_server):
    if not nats_server.with_users:
        pytest.skip("this NATS has no users, so it accepts any credentials")
    url = nats_server.url_for(("producer", "wrong-password"))
    result = await simulate("burst", "10", "--via", "nats", "--nats-url", url)
    assert result.returncode != 0
    assert "cannot reach NATS" in result.stderr and "Authorization Violation" in result.stderr
    assert "wrong-password" not in result.stderr


async def test_a_broker_without_ingest_fails_fast_naming_the_subject(tmp_path):
    broker = EmbeddedNats(port=free_port(), store_dir=tmp_path).start()
    try:
        url = broker.url_as(DEV_NATS_PRODUCER)
        result = await simulate("burst", "10", "--via", "nats", "--nats-url", url)
    finally:
        broker.stop()
    assert result.returncode != 0
    assert "no ingest is listening on ingest.logs" in result.stderr


@pytest.mark.parametrize(
    "args, named",
    [
        (["continuous", "1", "--rate", "-3"], "--rate"),
        (["burst", "many"], "COUNT"),
        (["burst", "5", "--service", "billing"], "--service"),
        (["burst", "5", "--run-id", "a.b"], "--run-id"),
    ],
)
async def test_an_invalid_option_is_refused_naming_it(args, named):
    result = await simulate(*args, "--ingest-url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert named in result.stderr
