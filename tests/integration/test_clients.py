"""The Python client and ``logstream tail`` against the real stack (docs/clients.md).

Publishers go through the real ingest (HTTP and NATS), readers are real SSE clients of the
real gateway and proxy. Each test uses its own channel (``unique_id``), so the counts are its
own; tests that stop a service start their own copy of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import threading

import pytest

from logstream import LogPublisher, LogstreamHandler
from logstream.cli import main
from logstream.publisher import PublishFailed
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.nats_names import STREAM_NAME
from logstream.shared.user_tokens import UserTokens
from tests.support import ledger
from tests.support.jetstream import stored
from tests.support.nats_source import connect_as, embedded_for_tests, free_port
from tests.support.processes import ServiceProcess
from tests.support.sse_client import open_stream

ETL_TOKEN = "l5-etl-token"
# A tail process imports httpx and the CLI (~1 s on a busy 2-core machine); these bound only
# a failing test, a passing one ends as soon as its lines arrive.
LINES_WITHIN_S = 30.0
FLUSH_WITHIN_S = 30.0


def stream_url(stack) -> str:
    return f"{stack.gateway.url}/api/logs/stream"


async def publish_in_thread(
    publisher: LogPublisher, channel: str, count: int, prefix: str = "m"
) -> list[str]:
    """Publish and flush off the event loop, which keeps reading the test's stream meanwhile."""

    def work() -> list[str]:
        ids = [publisher.publish(channel, f"{prefix} {n}", n=n) for n in range(count)]
        publisher.flush(FLUSH_WITHIN_S)
        return ids

    return await asyncio.to_thread(work)


# -- LogPublisher ------------------------------------------------------------------------------


@pytest.mark.parametrize(("transport", "count"), [("http", 1200), ("nats", 600)])
async def test_a_publisher_stores_every_record_once_and_a_reader_gets_them_with_their_ids(
    stack, unique_id, transport, count
):
    channel = f"logs:etl:workspace123:{unique_id}"
    url = stack.ingest.url if transport == "http" else stack.nats.producer_url
    publisher = LogPublisher(token=ETL_TOKEN, url=url, transport=transport)
    try:
        async with open_stream(
            stream_url(stack), token=stack.user_token(), params={"channels": channel}
        ) as stream:
            await stream.next_of("connected")
            ids = await publish_in_thread(publisher, channel, count)
            records = await stream.logs(count)
    finally:
        await asyncio.to_thread(publisher.close, FLUSH_WITHIN_S)
    # several requests (1000 per HTTP batch, 250 per NATS one), stored in publish order
    assert [record["id"] for record in records] == ids
    assert [record["message"] for record in records] == [f"m {n}" for n in range(count)]
    assert {record["publisher"] for record in records} == {ETL_TOKEN}
    assert records[5]["fields"] == {"n": 5} and records[5]["level"] == "info"


@pytest.mark.parametrize("transport", ["http", "nats"])
async def test_a_channel_outside_the_tokens_grants_makes_flush_raise_403(
    stack, unique_id, transport
):
    url = stack.ingest.url if transport == "http" else stack.nats.producer_url
    publisher = LogPublisher(token=ETL_TOKEN, url=url, transport=transport)
    publisher.publish(f"logs:faas:{unique_id}:fn1", "not an ETL channel")
    with pytest.raises(PublishFailed) as failed:
        await asyncio.to_thread(publisher.close, FLUSH_WITHIN_S)
    assert failed.value.status == 403 and failed.value.error == "forbidden"
    assert f"logs:faas:{unique_id}:fn1" in failed.value.server_message
    assert failed.value.records == 1 and publisher.retried == 0


async def test_an_unknown_token_makes_flush_raise_401(stack, unique_id):
    publisher = LogPublisher(token="not-a-token", url=stack.ingest.url)
    publisher.publish(f"logs:etl:{unique_id}", "m")
    with pytest.raises(PublishFailed, match="401 unauthenticated: the service token is not"):
        await asyncio.to_thread(publisher.close, FLUSH_WITHIN_S)


async def test_an_unreachable_ingest_fails_after_its_attempts_without_a_status(unique_id):
    publisher = LogPublisher(
        token=ETL_TOKEN, url=f"http://127.0.0.1:{free_port()}", max_attempts=2, backoff_s=0.01
    )
    publisher.publish(f"logs:etl:{unique_id}", "m")
    with pytest.raises(PublishFailed, match="no answer: cannot connect to ingest") as failed:
        await asyncio.to_thread(publisher.close, FLUSH_WITHIN_S)
    assert failed.value.status is None


@pytest.fixture
def lone_ingest(tmp_path, log_dir):
    """An ingest on its own nats-server, whose stream the test may delete."""
    broker = embedded_for_tests(port=free_port(), store_dir=tmp_path / "nats").start()
    service = ServiceProcess("ingest", nats_url=broker.url, log_dir=log_dir).start()
    yield broker, service
    service.stop()
    broker.stop()


async def test_flush_rides_out_a_503_retrying_with_the_same_ids(lone_ingest, unique_id):
    broker, ingest = lone_ingest
    nc = await connect_as(broker.url, "admin")  # only an operator may delete the stream
    try:
        await nc.jetstream().delete_stream(STREAM_NAME)  # ingest answers 503, then recreates it
    finally:
        await nc.close()
    publisher = LogPublisher(token=ETL_TOKEN, url=ingest.url)
    ids = [publisher.publish(f"logs:etl:{unique_id}", f"m{n}") for n in range(3)]
    await asyncio.to_thread(publisher.close, FLUSH_WITHIN_S)
    assert publisher.retried >= 1 and publisher.lost == 0
    nc = await connect_as(broker.url, "gateway")
    try:
        records = await stored(nc.jetstream(), f"logs.etl.{unique_id}")
    finally:
        await nc.close()
    assert [record["id"] for _, _, record in records] == ids  # each retried id stored once


# -- LogstreamHandler --------------------------------------------------------------------------


async def test_the_handler_publishes_a_logged_exception_with_its_traceback_and_extras(
    stack, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    handler = LogstreamHandler(channel, token=ETL_TOKEN, url=stack.ingest.url)
    logger = logging.getLogger(f"etl.loader.{unique_id}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        try:
            int("not a number")
        except ValueError:
            logger.exception("row %d is bad", 17, extra={"table": "orders", "row": 17})
        logger.warning("skipped it")
        await asyncio.to_thread(handler.flush)
    finally:
        logger.removeHandler(handler)
        await asyncio.to_thread(handler.close)
    async with open_stream(
        stream_url(stack), token=stack.user_token(), params={"channels": channel, "tail": "2"}
    ) as stream:
        failure, warning = await stream.logs(2)
    assert failure["level"] == "error" and failure["message"] == "row 17 is bad"
    assert failure["source"] == logger.name
    fields = failure["fields"]
    assert fields["table"] == "orders" and fields["row"] == 17
    assert fields["exception"]["type"] == "ValueError"
    assert fields["stack"].startswith("Traceback (most recent call last):")
    assert fields["stack"].endswith(
        "ValueError: invalid literal for int() with base 10: 'not a number'"
    )
    assert warning["level"] == "warn" and warning["message"] == "skipped it"


# -- logstream tail ----------------------------------------------------------------------------


class TailProcess:
    """``python -m logstream tail ...`` with its stdout read line by line in a thread."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "logstream", "tail", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.printed: list[str] = []  # every line so far; the reader notifies each one
        self.taken = 0  # how many of them take() has handed out
        self._printing = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None  # stdout=PIPE
        for line in self.process.stdout:
            with self._printing:
                self.printed.append(line.rstrip("\n"))
                self._printing.notify_all()

    def take(self, count: int) -> list[str]:
        """The next ``count`` lines, as soon as tail has printed them."""
        goal = self.taken + count
        with self._printing:
            arrived = self._printing.wait_for(lambda: len(self.printed) >= goal, LINES_WITHIN_S)
            taken = self.printed[self.taken : goal]
        if not arrived:
            raise AssertionError(
                f"tail printed {len(taken)} of {count} lines within {LINES_WITHIN_S:g}s; "
                "stderr: " + self.stop()
            )
        self.taken = goal
        return taken

    def untaken(self) -> list[str]:
        """Lines printed but not taken; after ``wait()``, every line tail printed is in."""
        with self._printing:
            return self.printed[self.taken :]

    def wait(self) -> int:
        """Until tail exits and its last line has been read; its exit code."""
        code = self.process.wait(LINES_WITHIN_S)
        self._reader.join(LINES_WITHIN_S)  # stdout ends with the process
        return code

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(LINES_WITHIN_S)
        assert self.process.stderr is not None  # stderr=PIPE
        return self.process.stderr.read()


def publish(stack, channel: str, count: int, prefix: str = "m") -> list[str]:
    with LogPublisher(token=ETL_TOKEN, url=stack.ingest.url) as publisher:
        return [publisher.publish(channel, f"{prefix} {n}") for n in range(count)]


def test_tail_json_count_prints_exactly_the_published_records(stack, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    ids = publish(stack, channel, 3)
    tail = TailProcess(
        channel,
        "--url",
        stack.gateway.url,
        "--tail",
        "3",
        "--json",
        "--count",
        "3",
        "--token",
        stack.user_token(),
    )
    records = [json.loads(line) for line in tail.take(3)]
    assert tail.wait() == 0 and tail.untaken() == []
    assert [record["id"] for record in records] == ids
    assert all(isinstance(record["seq"], int) for record in records)


def test_tail_where_prints_only_the_records_the_expression_accepts(stack, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    with LogPublisher(token=ETL_TOKEN, url=stack.ingest.url) as publisher:
        for rows in (5, 1500, 20, 4000):
            publisher.publish(channel, f"loaded {rows}", fields={"rows": rows, "table": "orders"})
    tail = TailProcess(
        channel,
        "--url",
        stack.gateway.url,
        "--tail",
        "4",
        "--where",
        "fields.rows > 1000 and fields.table = orders",
        "--json",
        "--count",
        "2",
    )
    records = [json.loads(line) for line in tail.take(2)]
    assert tail.wait() == 0 and tail.untaken() == []
    assert [record["message"] for record in records] == ["loaded 1500", "loaded 4000"]


def test_tail_through_the_proxy_follows_a_product_route_live(stack, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    publish(stack, channel, 1, prefix="before")
    tail = TailProcess(channel, "--url", stack.proxy.url, "--tail", "1", "--count", "3")
    assert "before 0" in tail.take(1)[0]  # the stream is open: what follows is live
    publish(stack, channel, 2, prefix="live")
    lines = tail.take(2)
    assert tail.wait() == 0
    assert ["live 0" in lines[0], "live 1" in lines[1]] == [True, True]
    assert " INFO  " in lines[0]


def test_tail_ends_quietly_with_0_on_ctrl_c(stack, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    publish(stack, channel, 1)
    tail = TailProcess(channel, "--url", stack.gateway.url, "--tail", "1")
    tail.take(1)
    tail.process.send_signal(signal.SIGINT)
    assert tail.wait() == 0
    assert "Traceback" not in tail.stop()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--token", "not-a-jwt"],
            "logstream tail: 401 unauthenticated: the user token is not valid",
        ),
        (
            ["--user", "user456"],
            "logstream tail: 403 forbidden: user 'user456' may not read logs:etl:workspace123:{ws}",
        ),
        (
            ["--since", "yesterday"],
            "logstream tail: 400 invalid_request: since 'yesterday' must be",
        ),
        (
            ["--where", "fields.rows >> 3"],
            "logstream tail: 400 invalid_request: where: ",
        ),
    ],
)
def test_tail_ends_a_refusal_with_exit_1_the_status_and_the_servers_words(
    stack, unique_id, capsys, argv, expected
):
    channel = f"logs:etl:workspace123:{unique_id}"
    code = main(["tail", channel, "--url", stack.gateway.url, *argv])
    assert code == 1
    assert expected.format(ws=unique_id) in capsys.readouterr().err


def test_tail_refuses_a_wildcard_through_the_proxy_naming_its_routes(stack, unique_id, capsys):
    code = main(["tail", "logs:etl:workspace123:*", "--url", stack.proxy.url])
    err = capsys.readouterr().err
    assert code == 2 and "no route of it streams" in err
    assert "logs:etl:{workspace_id}:{workflow_id}" in err


def test_tail_says_when_nothing_answers_at_the_url(capsys):
    code = main(["tail", "logs:etl:ws1", "--url", f"http://127.0.0.1:{free_port()}"])
    assert code == 1 and "cannot reach http://127.0.0.1:" in capsys.readouterr().err


def test_tail_with_an_expiring_token_ends_with_a_message(stack, unique_id, capsys):
    token = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"], ttl_s=2)
    code = main(["tail", "logs:etl:workspace123:*", "--url", stack.gateway.url, "--token", token])
    assert code == 1
    assert "the token expired; give a fresh --token" in capsys.readouterr().err


def test_tail_resumes_after_its_gateway_restarts_without_missing_or_repeating(
    stack, unique_id, log_dir
):
    channel = f"logs:etl:workspace123:{unique_id}"
    gateway = ServiceProcess("gateway", nats_url=stack.nats.url, log_dir=log_dir).start()
    tail = TailProcess(channel, "--url", gateway.url, "--since", "10m", "--json", "--count", "20")
    try:
        sent = publish(stack, channel, 10, prefix="before")
        received = [json.loads(line) for line in tail.take(10)]
        assert gateway.stop() is not None  # SIGTERM: open streams end with a retry hint
        gateway = ServiceProcess(
            "gateway", nats_url=stack.nats.url, log_dir=log_dir, port=gateway.port
        ).start()
        sent += publish(stack, channel, 10, prefix="after")
        received += [json.loads(line) for line in tail.take(10)]
        assert tail.wait() == 0
    finally:
        errors = tail.stop()
        gateway.stop()
    ids = [record["id"] for record in received]
    ledger.account(
        "tail across a gateway restart",
        list(range(len(sent))),
        [sent.index(i) for i in ids if i in sent],
    )
    assert ids == sent, errors
    seqs = [record["seq"] for record in received]
    assert seqs == sorted(set(seqs))
    assert "resuming after seq" in errors
