"""Power loss under load: what a 202 survives when the machine itself goes down.

README "What a 202 promises": JetStream acknowledges before it fsyncs (every two minutes by
default), so a power failure can lose acknowledged records; ``sync_interval: always`` fsyncs
every write before the acknowledgement. Here both are measured, in the manner of Jepsen's LazyFS:
nats-server keeps its store on a LazyFS mount (tests/support/lazyfs.py), which holds every
write in memory until it is fsynced. Producers publish through a real ingest for a few seconds
and keep a ledger of every record answered 202; then the power is cut (nats-server, ingest and
the LazyFS process killed with SIGKILL, every unsynced write gone), the machine "reboots" (a
new LazyFS on what was synced, a new nats-server on it), and the LOGS stream is counted.

- ``fsync`` (``sync_always=True``): every acknowledged record is stored.
- ``lazy`` (the default interval): acknowledged records are lost, deterministically. nats-server
  syncs none of the stream's own files in its first minute (its first sync pass runs between
  half the interval and the whole interval after the store opens; tests/integration/
  test_lazyfs.py checks that plain publishes make no sync at all), so the stream is lost whole.
  Ingest reads the broker's durability (lazy here) and writes record by record, as deployed.

In the fsync case ingest sees durability ``fsync`` and writes each request as one atomic
batch: nats-server syncs each batch's staging store (``LOGS/batches/<hash>/``), then the
stream's block once for the batch; the staging stores are deleted without a sync, so the disk
keeps the last few hundred of them, which nats-server discards at the next start. The ledger
line counts both kinds of sync.

Each case prints its ledger and records it as test properties.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from pathlib import Path

import httpx
import pytest
from nats.js.errors import NotFoundError

from logstream.shared.embedded_nats import EmbeddedNats
from logstream.shared.nats_names import STREAM_NAME
from tests.support import ledger
from tests.support.lazyfs import FuseUnavailable, LazyFs
from tests.support.nats_source import connect_as, embedded_for_tests, free_port
from tests.support.processes import ServiceProcess
from tests.support.waiting import wait_until

PRODUCERS = 4
BATCH = 500
# How long the producers publish before the cut: enough for thousands of records.
LOAD_S = 3.0
# A run that acknowledged fewer proves nothing either way.
MIN_ACKNOWLEDGED = 1000
# ingest waits this long for JetStream's acks (a loaded machine fsyncing through FUSE is slow);
# a 503 is not in the ledger either way.
PUBLISH_TIMEOUT_S = 10
# Bounds a failing wait only.
WAIT_S = 30.0
TOKEN = {"Authorization": "Bearer l5-etl-token"}


def record_id(number: int) -> str:
    return f"power-{number}"


def record_number(stored: dict) -> int:
    return int(stored["id"].removeprefix("power-"))


class Machine:
    """The machine under test: a LazyFS disk with nats-server's store on it, and ingest. It can
    lose power and boot again on what its disk kept."""

    def __init__(self, tmp_path: Path, log_dir: Path, *, sync_always: bool) -> None:
        self.sync_always = sync_always
        self.store = tmp_path / "nats"  # nats-server's config and log: not on the LazyFS disk
        self.disk = tmp_path / "disk"  # the backing directory: what survives the power cut
        self.log_dir = log_dir
        self.lazyfs: LazyFs | None = None
        self.broker: EmbeddedNats | None = None
        self.ingest: ServiceProcess | None = None

    def boot(self) -> Machine:
        try:
            self.lazyfs = LazyFs(self.store / "jetstream", self.disk, log_syncs=True).mount()
        except FuseUnavailable as missing:
            pytest.fail(str(missing))
        # Each part is kept before it starts, so that a start failing halfway is still killed.
        self.broker = embedded_for_tests(
            port=free_port(),
            store_dir=self.store,
            sync_always=self.sync_always,
            monitor_port=free_port(),
        )
        self.broker.start()
        assert self.broker.monitor_url is not None
        # As deployed: ingest reads the broker's durability from its monitoring endpoint and,
        # when it is fsync, writes each request as one atomic batch.
        self.ingest = ServiceProcess(
            "ingest",
            nats_url=self.broker.url,
            log_dir=self.log_dir,
            args=[
                "--publish-timeout",
                str(PUBLISH_TIMEOUT_S),
                "--nats-monitor-url",
                self.broker.monitor_url,
            ],
        )
        self.ingest.start()
        self.ingest.wait_ready()
        return self

    def power_cut(self) -> None:
        """Everything dies at once: SIGKILL to nats-server first (no acknowledgement after the
        cut), then to LazyFS (its unsynced writes die with it) and ingest; then the dead mount
        is unmounted."""
        processes = [
            part.process
            for part in (self.broker, self.lazyfs, self.ingest)
            if part is not None and part.process is not None
        ]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        for process in processes:
            process.wait()
        if self.lazyfs is not None:
            self.lazyfs.crash()  # the lazy unmount

    def shut_down(self) -> None:
        """Teardown, whatever state a failed test left."""
        self.power_cut()


@pytest.fixture
def machines(tmp_path, log_dir):
    """``machines(sync_always=...)`` boots a machine; every one is powered off at teardown."""
    made: list[Machine] = []

    def boot(*, sync_always: bool) -> Machine:
        made.append(Machine(tmp_path, log_dir, sync_always=sync_always))
        return made[-1].boot()

    yield boot
    for machine in reversed(made):  # the last one holds the mount
        machine.shut_down()


class Producers:
    """``PRODUCERS`` clients publishing batches of ``BATCH`` records with unique ids through
    ingest's HTTP API, each keeping the ids of every batch answered 202."""

    def __init__(self, url: str, channel: str) -> None:
        self.url, self.channel = url + "/api/logs/publish", channel
        self.numbers = itertools.count()  # batch numbers, shared: no id is sent twice
        self.acknowledged: list[int] = []
        self.unconfirmed = 0  # batches answered 503 (may or may not be stored)
        self.sent: list[int] = []  # every record sent, answered or not
        self.cut = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def start(self) -> Producers:
        self.tasks = [asyncio.create_task(self._produce()) for _ in range(PRODUCERS)]
        return self

    async def _produce(self) -> None:
        async with httpx.AsyncClient(timeout=PUBLISH_TIMEOUT_S + 10) as client:
            while not self.cut.is_set():
                first = next(self.numbers) * BATCH
                numbers = range(first, first + BATCH)
                body = [
                    {"channel": self.channel, "message": f"record {n}", "id": record_id(n)}
                    for n in numbers
                ]
                self.sent += numbers
                try:
                    answer = await client.post(self.url, json=body, headers=TOKEN)
                except httpx.TransportError:
                    if self.cut.is_set():
                        return  # ingest died with the power: no answer, not in the ledger
                    raise
                if answer.status_code == 202:
                    assert len(answer.json()["seqs"]) == BATCH, answer.text
                    self.acknowledged += numbers
                else:
                    assert answer.status_code == 503, answer.text
                    self.unconfirmed += 1

    async def stopped(self) -> None:
        self.cut.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), WAIT_S)


async def stored_records(broker: EmbeddedNats) -> tuple[list[int], int]:
    """Every record in LOGS (its number) and the stream's last seq; nothing and 0 when the stream
    is gone. Read with an ordered consumer, the way a gateway replays."""
    nc = await connect_as(broker.url, "admin")
    try:
        js = nc.jetstream()
        try:
            state = (await js.stream_info(STREAM_NAME)).state
        except NotFoundError:
            return [], 0
        numbers: list[int] = []
        if state.messages:
            sub = await js.subscribe("logs.>", stream=STREAM_NAME, ordered_consumer=True)
            while len(numbers) < state.messages:
                msg = await sub.next_msg(timeout=WAIT_S)
                numbers.append(record_number(json.loads(msg.data)))
            await sub.unsubscribe()
        return numbers, state.last_seq
    finally:
        await nc.close()


@pytest.mark.parametrize("mode", ["fsync", "lazy"])
async def test_a_power_cut_under_load(machines, unique_id, mode, record_property):
    sync_always = mode == "fsync"
    machine = machines(sync_always=sync_always)
    assert machine.ingest is not None
    said = httpx.get(machine.ingest.url + "/ready", timeout=10).json()["durability"]
    assert said == mode, f"ingest says the broker's durability is {said}"
    producers = Producers(machine.ingest.url, f"logs:etl:{unique_id}:power").start()
    await asyncio.sleep(LOAD_S)  # the load's length, not a synchronisation
    await wait_until(
        lambda: len(producers.acknowledged) >= MIN_ACKNOWLEDGED,
        f"{MIN_ACKNOWLEDGED} records to be acknowledged",
        timeout=WAIT_S,
    )
    producers.cut.set()
    machine.power_cut()  # while batches are in flight
    await producers.stopped()
    assert machine.lazyfs is not None
    syncs = machine.lazyfs.syncs()
    staging = sum("/batches/" in sync for sync in syncs)

    rebooted = machines(sync_always=sync_always)
    assert rebooted.broker is not None and rebooted.ingest is not None
    found, last_seq = await stored_records(rebooted.broker)

    acknowledged = set(producers.acknowledged)
    stored = acknowledged & set(found)
    missing = len(acknowledged - stored)
    extra = len(set(found) - acknowledged)
    line = (
        f"power-loss ledger ({mode}): acknowledged {len(acknowledged)}, stored {len(stored)}, "
        f"missing {missing} (and {extra} stored without a 202: in flight at the cut, "
        f"{producers.unconfirmed} batches answered 503; nats-server synced {len(syncs) - staging}"
        f" times its stream's files, {staging} times atomic batches' staging stores)"
    )
    print(line)
    record_property("power_loss_ledger", line)
    for name, value in (
        ("acknowledged", len(acknowledged)),
        ("stored", len(stored)),
        ("missing", missing),
    ):
        record_property(f"power_loss_{name}", value)
    ledger.account(f"power cut under load, {mode}", producers.acknowledged, found)

    assert len(acknowledged) >= MIN_ACKNOWLEDGED
    assert len(found) == len(set(found)), "a record is stored twice"
    assert set(found) <= set(producers.sent), "the stream holds records nobody sent"
    if sync_always:
        assert missing == 0, line
        assert staging > 0, f"ingest wrote no atomic batch: {line}"
    else:
        assert missing > 0, f"nothing acknowledged was lost without fsync: {line}"

    # The broker is usable after the reboot: a new publish through the new ingest is stored
    # after whatever survived (ingest recreates the stream when the store lost it).
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        answer = await client.post(
            rebooted.ingest.url + "/api/logs/publish",
            json={"channel": f"logs:etl:{unique_id}:power", "message": "after the reboot"},
            headers=TOKEN,
        )
    assert answer.status_code == 202, answer.text
    assert answer.json()["seqs"][0] > last_seq
