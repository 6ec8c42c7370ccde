"""A reconnect storm, reduced (issue 18; the full size is the bench's ``storm`` case): a gateway
holding 300 streams on 30 channels is killed and started again on the same port while records
keep arriving through the real ingest, and every stream resumes at once with
``Last-Event-ID`` = the last id it received.

Only the ledger is asserted: every stream receives every record acknowledged (202) on its
channel since it opened, exactly once and in order, whether it was published before the kill,
while the gateway was down, or during the storm. How fast the storm settles is the bench's
business; waits here are bounded only so that a failing run ends.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter, defaultdict

import httpx
import pytest

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support import ledger
from tests.support.processes import ServiceProcess, responds_with
from tests.support.raw_sse import RawRefused, RawSse
from tests.support.waiting import WaitTimeout, wait_until

CHANNELS = 30
PER_CHANNEL = 10
STREAMS = CHANNELS * PER_CHANNEL
# Bounds a failing wait; a passing run moves on as soon as the condition holds.
DEADLINE_S = 60.0
# A refused or failed attempt is made again after this (a browser waits the stream's `retry`).
RETRY_S = 0.2
# The steady publisher: a batch every PUBLISH_EVERY_S (load, not synchronisation).
PUBLISH_EVERY_S = 0.05
BATCH = 6
SERVICE_TOKEN = "l5-etl-token"
TOKEN = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"])


class Reader:
    """One stream of one channel; reopened with ``Last-Event-ID`` whenever it ends, as long as
    ``may_connect`` is set (the test clears it to hold every stream closed)."""

    def __init__(self, port: int, channel: str, may_connect: asyncio.Event) -> None:
        self.port, self.channel, self.may_connect = port, channel, may_connect
        self.received: list[int] = []
        self.cursor: int | None = None  # the first `connected` id: everything after it is due
        self.last: int | None = None
        self.opens = 0
        self.refused: Counter[str] = Counter()
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        path = f"/api/logs/stream?channels={self.channel}"
        while True:
            await self.may_connect.wait()
            headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
            if self.last is not None:
                headers["Last-Event-ID"] = str(self.last)
            try:
                stream = await RawSse.open("127.0.0.1", self.port, path, headers)
            except RawRefused as refused:  # e.g. a 429 or 503 from an edge limit: try again
                self.refused[f"HTTP {refused.status}"] += 1
                await asyncio.sleep(RETRY_S)
                continue
            except OSError as error:
                self.refused[type(error).__name__] += 1
                await asyncio.sleep(RETRY_S)
                continue
            self.closed.clear()
            try:
                await self._read(stream)
            finally:
                await stream.close()
                self.connected.clear()
                self.closed.set()
            if self.may_connect.is_set():
                await asyncio.sleep(RETRY_S)

    async def _read(self, stream: RawSse) -> None:
        async for frame in stream.frames():
            if frame.event == "connected":
                self.opens += 1
                if self.cursor is None:
                    assert frame.id is not None
                    self.cursor = int(frame.id)
                self.connected.set()
            elif frame.event == "log":
                record = json.loads(frame.data)
                assert record["seq"] == int(frame.id or -1), frame
                assert record["channel"] == self.channel, frame
                self.received.append(record["seq"])
                self.last = record["seq"]
            elif frame.event == "overflow" and frame.id:
                self.last = int(frame.id)

    def holds(self, seq: int) -> bool:
        return self.last is not None and self.last >= seq


class Publisher:
    """Records through the real ingest, round-robin over the channels; keeps each 202's seqs
    per channel."""

    def __init__(self, client: httpx.AsyncClient, ingest_url: str, channels: list[str]) -> None:
        self.client, self.url, self.channels = client, ingest_url, channels
        self.acked: dict[str, list[int]] = defaultdict(list)
        self._numbers = itertools.count()

    async def publish(self, count: int) -> None:
        records = []
        for _ in range(count):
            number = next(self._numbers)
            channel = self.channels[number % len(self.channels)]
            records.append({"channel": channel, "message": f"storm #{number}", "id": f"s{number}"})
        answer = await self.client.post(
            self.url + "/api/logs/publish",
            json=records,
            headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        )
        assert answer.status_code == 202, answer.text
        for record, seq in zip(records, answer.json()["seqs"], strict=True):
            self.acked[record["channel"]].append(seq)

    async def steadily(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.publish(BATCH)
            await asyncio.sleep(PUBLISH_EVERY_S)  # the publishing rate

    def last(self, channel: str) -> int:
        return max(self.acked[channel])


async def until(condition, what: str, readers: list[Reader]) -> None:
    """Until ``condition()``; fails at the deadline, or at once if a reader's task died."""

    def met():
        for reader in readers:
            if reader.task.done():
                reader.task.result()
                raise AssertionError(f"a reader of {reader.channel} ended")
        return condition()

    await wait_until(met, what, timeout=DEADLINE_S)


async def all_set(events, what: str) -> None:
    try:
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), DEADLINE_S)
    except TimeoutError:
        raise WaitTimeout(f"not within {DEADLINE_S:g}s: {what}", what=what, last=None) from None


@pytest.fixture
def gateway(nats_server, log_dir):
    """A gateway of this test's own (the session's is shared), which it kills and restarts."""
    service = ServiceProcess(
        "gateway",
        nats_url=nats_server.url,
        log_dir=log_dir,
        args=["--max-connections-per-user", str(STREAMS * 4)],
    ).start()
    yield service
    service.kill()


async def ready(service: ServiceProcess) -> None:
    process = service.process
    assert process is not None

    async def answers() -> bool:
        assert process.poll() is None, f"the gateway exited:\n{service.log()}"
        return await responds_with(service.url + "/ready", 200, timeout=2)

    await wait_until(
        answers,
        "the restarted gateway to be ready",
        timeout=DEADLINE_S,
        interval=0.05,
        retry_on=httpx.TransportError,
    )


async def test_every_stream_resumed_in_a_storm_after_a_gateway_restart_gets_each_record_once(
    stack, gateway, unique_id
):
    channels = [f"logs:etl:workspace123:{unique_id}-{n}" for n in range(CHANNELS)]
    may_connect = asyncio.Event()
    may_connect.set()
    readers = [Reader(gateway.port, channels[k % CHANNELS], may_connect) for k in range(STREAMS)]
    stop = asyncio.Event()
    steady: asyncio.Task | None = None
    async with httpx.AsyncClient(timeout=httpx.Timeout(30)) as client:
        publisher = Publisher(client, stack.ingest.url, channels)
        try:
            await all_set([r.connected for r in readers], "every stream to connect")
            await publisher.publish(3 * CHANNELS)  # before the restart
            await until(
                lambda: all(r.holds(publisher.last(r.channel)) for r in readers),
                "every stream to receive the records published before the restart",
                readers,
            )
            steady = asyncio.create_task(publisher.steadily(stop))
            may_connect.clear()  # the streams stay closed until the storm
            gateway.kill()  # SIGKILL: nothing drained, no goodbye frame
            await all_set([r.closed for r in readers], "every stream to see the gateway go")
            await publisher.publish(2 * CHANNELS)  # while the gateway is down
            gateway.start(wait=False)  # the same port
            await ready(gateway)
            may_connect.set()  # the storm: every stream resumes at once
            await all_set([r.connected for r in readers], "every stream to reconnect")
            await publisher.publish(CHANNELS)  # after the storm
            stop.set()
            await steady
            await until(
                lambda: all(r.holds(publisher.last(r.channel)) for r in readers),
                "every stream to receive every acknowledged record",
                readers,
            )
        finally:
            stop.set()
            tasks = [*(r.task for r in readers), *([steady] if steady else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    refused = sum((r.refused for r in readers), Counter())
    wanted = {c: sorted(seqs) for c, seqs in publisher.acked.items()}
    ledger.account(
        f"reconnect storm: {STREAMS} streams on {CHANNELS} channels resumed at once after a "
        f"gateway kill -9 and restart (refused then retried: {dict(refused) or 0})",
        [(i, s) for i, r in enumerate(readers) for s in wanted[r.channel] if s > (r.cursor or 0)],
        [(i, s) for i, r in enumerate(readers) for s in r.received],
    )
    assert sum(len(seqs) for seqs in wanted.values()) == len(
        {s for seqs in wanted.values() for s in seqs}
    )
    for reader in readers:
        assert reader.cursor is not None
        due = [seq for seq in wanted[reader.channel] if seq > reader.cursor]
        assert reader.received == due, f"{reader.channel}: wanted {due}, got {reader.received}"
        assert reader.opens >= 2  # it did resume after the restart
