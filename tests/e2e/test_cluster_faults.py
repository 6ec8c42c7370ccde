"""Faults in the scaled-out shape (docs/reference/settings.md#more-than-one-machine), with real processes: three clustered
nats-servers (LOGS with three replicas), two ingests, two gateways and the proxy in front of
both; subscribers read through the proxy and resume with ``Last-Event-ID`` as a browser does,
while a publisher sends at a steady rate and retries on the other ingest as a real client would.

The stream's leader node, a gateway and an ingest are each killed with SIGKILL and restarted.
Every record that got a 202 must reach every subscriber exactly once and in order; the longest
pause between consecutive 202s (a new leader being elected, mostly) is measured and reported in
the no-loss ledger, not held to a tight bound.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx
import nats
import pytest
from httpx_sse import aconnect_sse

from logstream.shared.embedded_nats import EmbeddedCluster
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.nats_names import STREAM_NAME
from logstream.shared.user_tokens import UserTokens
from tests.support import ledger
from tests.support.nats_source import connect_as, distinct_free_ports
from tests.support.processes import ServiceProcess, responds_with
from tests.support.waiting import WaitTimeout, wait_until

NODES = 3
SUBSCRIBERS = 4
# Steady, like a busy service's logs; low enough for 2 cores running eight processes.
RATE_PER_S = 20.0
# A client's back-off before retrying on the other ingest, and a browser's reconnect delay.
RETRY_S = 0.2
# Generous bounds for a busy 2-core machine: an election after a kill -9 takes a few seconds.
WAIT_S = 30.0
# Reported, not a target: the bound says only that publishing did come back.
LONGEST_PAUSE_BOUND_S = 30.0
# Records published between faults, so each fault hits a stream in motion.
RECORDS_BETWEEN_FAULTS = 20
ETL_ROUTE = "/api/dapadmin/l5-etl/sse/logs/stream"
TOKEN = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"])
SERVICE_TOKEN = "l5-etl-token"
# What a gateway or the proxy answers while what it depends on is away: retried.
RETRIED_STATUSES = (502, 503, 504)


class Publisher:
    """Sends ``RATE_PER_S`` records with unique ids, alternating ingests; on a 503 or a
    connection error the same record goes to the other ingest. Keeps each 202's seq and time."""

    def __init__(self, client: httpx.AsyncClient, ingests: list[str], channel: str) -> None:
        self.client, self.ingests, self.channel = client, ingests, channel
        self.accepted: list[tuple[int, str]] = []  # (seq, message) in the order of their 202s
        self.acked_at: list[float] = []
        self.retries = 0
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        began, index = time.monotonic(), 0
        while not self._stop.is_set():
            await self._send(index)
            index += 1
            due = began + index / RATE_PER_S  # the steady rate's timer, not a synchronisation
            await asyncio.sleep(max(due - time.monotonic(), 0))

    async def _send(self, index: int) -> None:
        message = f"record {index:05d}"
        record = {"channel": self.channel, "message": message, "id": f"faults-{index}"}
        targets = itertools.count(index)  # this record's ingest first, then the other, ...

        async def accepted() -> httpx.Response | None:
            target = next(targets)
            if target != index:
                self.retries += 1
            answer = await self.client.post(
                self.ingests[target % len(self.ingests)] + "/api/logs/publish",
                json=record,
                headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
            )
            assert answer.status_code in (202, 503), answer.text
            return answer if answer.status_code == 202 else None

        answer = await wait_until(
            accepted,
            f"{message} to get a 202 from either ingest",
            timeout=WAIT_S,
            interval=RETRY_S,
            retry_on=httpx.TransportError,
        )
        self.accepted.append((answer.json()["seqs"][0], message))
        self.acked_at.append(time.monotonic())

    async def accepted_more(self, count: int) -> None:
        """Until ``count`` more records than now have got their 202."""
        goal = len(self.accepted) + count
        await until(
            lambda: len(self.accepted) >= goal, f"{count} more records to get their 202", self.task
        )

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self.task, WAIT_S)

    def longest_pause(self) -> float:
        return max((b - a for a, b in zip(self.acked_at, self.acked_at[1:])), default=0.0)


class Subscriber:
    """One stream through the proxy, reopened with ``Last-Event-ID`` whenever it drops."""

    def __init__(self, client: httpx.AsyncClient, url: str, workflow: str) -> None:
        self.received: list[tuple[int, str]] = []
        self.last_id: str | None = None
        self.opens = 0
        self.task = asyncio.create_task(
            self._run(client, url, {"workspace_id": "workspace123", "workflow_id": workflow})
        )

    async def _run(self, client, url: str, params: dict) -> None:
        while True:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            if self.last_id is not None:
                headers["Last-Event-ID"] = self.last_id
            try:
                async with aconnect_sse(
                    client, "GET", url, params=params, headers=headers
                ) as source:
                    status = source.response.status_code
                    assert status in (200, *RETRIED_STATUSES), await source.response.aread()
                    if status == 200:
                        await self._read(source)
            except httpx.TransportError:
                pass  # the gateway or its node died under the stream: resume, as a browser
            await asyncio.sleep(RETRY_S)

    async def _read(self, source) -> None:
        async for event in source.aiter_sse():
            if event.id:
                self.last_id = event.id
            if event.event == "connected":  # subscribed: from here on nothing is missed
                self.opens += 1
            elif event.event == "log":
                record = json.loads(event.data)
                self.received.append((record["seq"], record["message"]))

    def holds(self, seq: int) -> bool:
        return bool(self.received) and self.received[-1][0] >= seq


async def until(condition, what: str, *tasks: asyncio.Task) -> None:
    """Until ``condition()`` holds; fails after ``WAIT_S``, or as soon as one of ``tasks`` (the
    publisher and subscribers, whose progress ``condition`` reads) has ended."""

    def met():
        if held := condition():
            return held
        for task in tasks:
            if task.done():
                task.result()  # raises what went wrong
                raise AssertionError(f"{task} ended while waiting for {what}")
        return held

    await wait_until(met, what, timeout=WAIT_S)


async def wait_ready(service: ServiceProcess) -> None:
    """Until ``/ready`` answers 200; fails at once if the process exits."""
    process = service.process
    assert process is not None, "start() the service first"

    async def ready() -> bool:
        assert process.poll() is None, f"{service.service} exited:\n{service.log()}"
        return await responds_with(service.url + "/ready", 200, timeout=1)

    try:
        await wait_until(
            ready,
            f"{service.service} to be ready (/ready answering 200)",
            timeout=WAIT_S,
            interval=0.1,
            retry_on=httpx.TransportError,
        )
    except WaitTimeout as late:
        raise AssertionError(f"{late}\n{service.log()}") from late


class Unsettled(Exception):
    """LOGS as JetStream described it, without a leader or with a replica behind: ask again."""


async def stream_leader(cluster: EmbeddedCluster, *, settled: bool):
    """The node leading LOGS; with ``settled``, once every replica is current again."""
    client = await connect_as(cluster.url, "gateway")

    async def leader():
        info = await client.jetstream(timeout=2).stream_info(STREAM_NAME)
        cluster_info = info.cluster
        assert cluster_info is not None  # LOGS is replicated on a cluster
        replicas = cluster_info.replicas or []
        if not cluster_info.leader or (
            settled and not (len(replicas) == NODES - 1 and all(r.current for r in replicas))
        ):
            raise Unsettled(cluster_info)
        return next(node for node in cluster.nodes if node.server_name == cluster_info.leader)

    try:
        # TimeoutError or a NATS error: no leader yet, or the node asked is the dead one.
        return await wait_until(
            leader,
            "LOGS to have a leader" + (" and every replica current" if settled else ""),
            timeout=WAIT_S,
            interval=0.2,
            retry_on=(Unsettled, TimeoutError, nats.errors.Error),
        )
    finally:
        await client.close()


@pytest.fixture
def cluster(tmp_path):
    ports = distinct_free_ports(2 * NODES)
    running = EmbeddedCluster(
        ports=ports[:NODES], cluster_ports=ports[NODES:], store_dir=tmp_path / "nats"
    ).start()
    yield running
    running.kill()


@pytest.fixture
def services(cluster, log_dir):
    """Two ingests (R3), two gateways, and the proxy in front of both gateways; started at
    once, since most of a start is importing."""
    ingests = [
        ServiceProcess(
            "ingest", nats_url=cluster.url, log_dir=log_dir, args=["--stream-replicas", str(NODES)]
        )
        for _ in range(2)
    ]
    gateways = [ServiceProcess("gateway", nats_url=cluster.url, log_dir=log_dir) for _ in range(2)]
    proxy = ServiceProcess(
        "proxy",
        nats_url=cluster.url,
        log_dir=log_dir,
        args=["--gateway-url", ",".join(gateway.url for gateway in gateways)],
    )
    everything = [*ingests, *gateways, proxy]
    try:
        # The first ingest creates LOGS alone: two creating it at once on a cluster that has
        # just formed can time out; the rest start meanwhile.
        ingests[0].start(wait=False)
        for service in everything[2:]:
            service.start(wait=False)
        ingests[0].wait_ready(WAIT_S)
        ingests[1].start(wait=False)
        yield ingests, gateways, proxy
    finally:
        for service in everything:
            service.kill()


async def kill_and_restart(service: ServiceProcess, client, publisher: Publisher) -> None:
    service.kill()  # SIGKILL: no drain
    await publisher.accepted_more(RECORDS_BETWEEN_FAULTS)  # the others carry the load
    service.start(wait=False)  # the same port, as a supervisor would restart it
    await wait_ready(service)


async def test_records_acked_through_node_gateway_and_ingest_kills_reach_every_subscriber_once(
    cluster, services, unique_id
):
    ingests, gateways, proxy = services
    channel = f"logs:etl:workspace123:{unique_id}"
    timeout = httpx.Timeout(5, read=WAIT_S)
    async with httpx.AsyncClient(timeout=timeout) as client:
        for service in [*ingests, *gateways, proxy]:
            await wait_ready(service)
        subscribers = [
            Subscriber(client, proxy.url + ETL_ROUTE, unique_id) for _ in range(SUBSCRIBERS)
        ]
        tasks = [s.task for s in subscribers]
        try:
            await until(
                lambda: all(s.opens for s in subscribers),
                "every subscriber's stream to open",
                *tasks,
            )
            publisher = Publisher(client, [ingest.url for ingest in ingests], channel)
            tasks.append(publisher.task)
            await publisher.accepted_more(RECORDS_BETWEEN_FAULTS)

            leader = await stream_leader(cluster, settled=True)
            leader.kill()  # the stream's leader: a new one must be elected
            await publisher.accepted_more(RECORDS_BETWEEN_FAULTS)
            leader.start()
            await stream_leader(cluster, settled=True)  # it has caught up

            await kill_and_restart(gateways[0], client, publisher)
            await kill_and_restart(ingests[0], client, publisher)
            await publisher.accepted_more(RECORDS_BETWEEN_FAULTS)  # through every part again

            await publisher.stop()
            last = publisher.accepted[-1][0]
            await until(
                lambda: all(s.holds(last) for s in subscribers),
                "every subscriber to receive every acked record",
                *(s.task for s in subscribers),
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    expected = sorted(publisher.accepted)
    pause = publisher.longest_pause()
    print(
        f"\ncluster faults: {len(expected)} records acked, {publisher.retries} retries, "
        f"longest pause between 202s {pause:.2f}s, stream reopens "
        f"{[s.opens for s in subscribers]}"
    )
    ledger.account(
        f"3-node cluster R3, 2 ingests, 2 gateways, {SUBSCRIBERS} subscribers via the proxy; "
        f"leader node, gateway, ingest killed -9 and restarted; longest publish pause "
        f"{pause:.2f}s",
        [(i, seq) for i in range(SUBSCRIBERS) for seq, _ in expected],
        [(i, seq) for i, s in enumerate(subscribers) for seq, _ in s.received],
    )
    assert [seq for seq, _ in expected] == [seq for seq, _ in publisher.accepted]  # in order
    assert len({seq for seq, _ in expected}) == len(expected)  # one seq per record
    for subscriber in subscribers:
        assert subscriber.received == expected
    assert pause < LONGEST_PAUSE_BOUND_S
