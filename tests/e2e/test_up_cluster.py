"""``logstream up --cluster 3`` as a user runs it: three NATS nodes in one JetStream cluster,
the LOGS stream with three replicas, two ingests, two gateways behind the proxy, real clients,
and the loss of a node and a gateway while it runs."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from httpx_sse import EventSource

from tests.support.nats_source import connect_as
from tests.support.up_process import assert_nothing_left
from tests.support.waiting import wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the process tree from /proc"
)

NODES = 3
# Ingests and gateways: two of each, whatever the node count (logstream.up_plan).
COPIES = 2
# The second ingest's port above the first (logstream.up_plan.INGEST_PORT_STEP).
INGEST_STEP = 10
# Election of a new stream leader after a kill -9, and a reconnect to another node: a few
# seconds here; generous for a busy 2-core machine.
RECOVERY_TIMEOUT_S = 45.0
READ_TIMEOUT_S = 30.0
ETL_ROUTE = "/api/dapadmin/l5-etl/sse/logs/stream"
# Where runs of consecutive ports are looked for (up to the ephemeral range): above the
# well-known and most registered service ports.
PORT_RUNS_FROM = 20000


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ephemeral_low() -> int:
    """The lowest port the OS hands out for outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_runs(*lengths: int) -> list[int]:
    """The first port of each run of consecutive free ports, no two runs overlapping.

    Runs are taken below the ephemeral range: there a busy machine's outgoing connections (a
    benchmark beside the suite holds thousands) neither fill the run nor take a port of it
    between this check and the server's bind."""
    taken: set[int] = set()
    firsts: list[int] = []
    low = _ephemeral_low()
    for length in lengths:
        for _ in range(200):
            first = random.randrange(PORT_RUNS_FROM, max(PORT_RUNS_FROM + 1, low - length))
            run = set(range(first, first + length))
            if first + length <= 65535 and not run & taken and all(map(_free, run)):
                break
        else:
            pytest.fail(f"no {length} consecutive free ports found")
        taken |= run
        firsts.append(first)
    return firsts


def cluster_ports() -> dict[str, int]:
    # The ingest run covers both ingests' ports and the unused ones between them.
    nats, routes, gateways, ingest, proxy = free_port_runs(NODES, NODES, COPIES, INGEST_STEP + 1, 1)
    return {"nats": nats, "cluster": routes, "ingest": ingest, "gateway": gateways, "proxy": proxy}


def gateway_urls(up) -> list[str]:
    return [f"http://127.0.0.1:{up.ports['gateway'] + i}" for i in range(COPIES)]


def ingest_urls(up) -> list[str]:
    return [f"http://127.0.0.1:{up.ports['ingest'] + i * INGEST_STEP}" for i in range(COPIES)]


def nats_url(up) -> str:
    return ",".join(f"nats://127.0.0.1:{up.ports['nats'] + i}" for i in range(NODES))


async def publish_until_stored(
    client: httpx.AsyncClient, ingest: str, channel: str, message: str
) -> int:
    """POST with an ``id`` until 202: a 503 while a new leader is elected is retried, stored
    once (docs/reference/ingest.md)."""
    record = {"channel": channel, "message": message, "id": f"{channel}/{message}"}

    async def stored_seq() -> int | None:
        response = await client.post(
            ingest + "/api/logs/publish",
            json=record,
            headers={"Authorization": "Bearer l5-etl-token"},
        )
        assert response.status_code in (202, 503), response.text
        return response.json()["seqs"][0] if response.status_code == 202 else None

    return await wait_until(
        stored_seq,
        f"{message!r} to be stored through {ingest}",
        timeout=RECOVERY_TIMEOUT_S,
        interval=0.2,
        retry_on=httpx.TransportError,
    )


class Follower:
    """One SSE stream, read in the background: its records arrive on ``records``."""

    def __init__(self, client: httpx.AsyncClient, url: str, params: dict, token: str) -> None:
        self.opened = asyncio.Event()
        self.records: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(self._follow(client, url, params, token))

    async def _follow(self, client, url: str, params: dict, token: str) -> None:
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "text/event-stream",
            "Cache-Control": "no-store",
        }

        async def answered():
            """The stream's response; None on a 503 (its gateway is reconnecting to another
            node), which is closed, and the stream opened again."""
            request = client.build_request("GET", url, params=params, headers=headers)
            response = await client.send(request, stream=True)
            if response.status_code != 503:
                return response
            await response.aclose()
            return None

        response = await wait_until(
            answered,
            f"{url} to answer other than 503",
            timeout=RECOVERY_TIMEOUT_S,
            interval=0.2,
        )
        try:
            assert response.status_code == 200, await response.aread()
            async for event in EventSource(response).aiter_sse():
                if event.event == "connected":
                    self.opened.set()
                elif event.event == "log":
                    self.records.put_nowait(json.loads(event.data))
        finally:
            await response.aclose()

    async def wait_open(self) -> None:
        await asyncio.wait_for(asyncio.shield(self.opened.wait()), READ_TIMEOUT_S)

    async def next_message(self) -> str:
        """The next record's message (the channel is the test's own: nothing else is on it)."""
        getting = asyncio.ensure_future(self.records.get())
        done, _ = await asyncio.wait(
            {getting, self.task}, timeout=READ_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if getting not in done:
            getting.cancel()
            raise AssertionError(f"no record in time; the stream: {self.task}")
        return getting.result()["message"]


def proxy_follower(up, client, token: str, workflow: str) -> Follower:
    return Follower(
        client,
        up.url("proxy") + ETL_ROUTE,
        {"workspace_id": "workspace123", "workflow_id": workflow},
        token,
    )


def gateway_follower(url: str, client, token: str, workflow: str) -> Follower:
    return Follower(
        client, url + "/api/logs/stream", {"channels": f"logs:etl:workspace123:{workflow}"}, token
    )


class Unsettled(Exception):
    """LOGS as JetStream described it, without a leader or with a replica behind: ask again."""


async def settled_stream_info(up):
    """LOGS as JetStream describes it, once it has a leader and every replica is current."""
    client = await connect_as(nats_url(up), "gateway")  # `up`'s own user that reads LOGS

    async def settled():
        info = await client.jetstream(timeout=5).stream_info("LOGS")
        replicas = info.cluster.replicas or []
        if not (
            info.cluster.leader
            and len(replicas) == NODES - 1
            and all(replica.current for replica in replicas)
        ):
            raise Unsettled(info.cluster)
        return info

    try:
        return await wait_until(
            settled,
            "LOGS to have a leader and every replica current",
            timeout=READ_TIMEOUT_S,
            interval=0.2,
            retry_on=Unsettled,
        )
    finally:
        await client.close()


async def test_up_cluster_serves_through_every_gateway_survives_a_node_and_stops_clean(
    running, unique_id
):
    up = running("--cluster", str(NODES), "--ephemeral", "--no-simulator", ports=cluster_ports())
    for index in range(NODES):
        assert re.search(
            rf"nats-{index + 1} +nats://127\.0\.0\.1:{up.ports['nats'] + index} "
            rf"\(routes on port {up.ports['cluster'] + index}\)",
            up.output,
        )
    for index in range(COPIES):
        assert re.search(rf"gateway-{index + 1} +{gateway_urls(up)[index]}", up.output)
        assert re.search(rf"ingest-{index + 1} +{ingest_urls(up)[index]}", up.output)
    commands = list(up.children.values())
    assert sum("nats-server" in cmd for cmd in commands) == NODES
    assert sum(" gateway " in cmd for cmd in commands) == COPIES
    assert sum(" ingest " in cmd for cmd in commands) == COPIES
    assert len(up.children) == NODES + 2 * COPIES + 1, up.children  # and one proxy
    info = await settled_stream_info(up)
    assert info.config.num_replicas == NODES  # ingest was given --stream-replicas 3
    assert "Durability:  replicated" in up.output
    for url in ingest_urls(up):  # (it read the stream it created: the replicas are known)
        body = httpx.get(url + "/ready", timeout=10).json()
        assert body["durability"] == "replicated" and body["stream_replicas"] == NODES, body
    channel = f"logs:etl:workspace123:{unique_id}"
    followers: list[Follower] = []

    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=READ_TIMEOUT_S)) as client:
        try:
            token = (
                await client.get(up.url("proxy") + "/dev/token", params={"user": "user123"})
            ).json()["token"]
            followers += [proxy_follower(up, client, token, unique_id)]
            followers += [
                gateway_follower(url, client, token, unique_id) for url in gateway_urls(up)
            ]
            for follower in followers:
                await follower.wait_open()
            first, second = ingest_urls(up)
            seqs = [
                await publish_until_stored(client, first, channel, "one"),
                await publish_until_stored(client, second, channel, "one and a half"),
            ]
            assert seqs[0] < seqs[1]  # both ingests store into the one replicated stream
            for follower in followers:
                assert [await follower.next_message() for _ in seqs] == ["one", "one and a half"]

            # The stream's leader node and the first gateway die; the rest carry on.
            victims = [
                pid
                for pid, cmd in up.children.items()
                if f"nats-cluster/{info.cluster.leader}/" in cmd
                or f"--port {up.ports['gateway']} " in cmd
            ]
            assert len(victims) == 2, up.children
            for victim in victims:
                os.kill(victim.pid, signal.SIGKILL)
            fresh = proxy_follower(up, client, token, unique_id)  # skips the dead gateway
            followers.append(fresh)
            await fresh.wait_open()
            await publish_until_stored(client, second, channel, "two")

            assert await fresh.next_message() == "two"
            held_open = followers[2 : COPIES + 1]  # on the surviving gateway, since before
            assert [await f.next_message() for f in held_open] == ["two"] * (COPIES - 1)
        finally:
            for follower in followers:
                follower.task.cancel()
            await asyncio.gather(*(f.task for f in followers), return_exceptions=True)

    assert up.process.poll() is None, up.output
    assert f"{info.cluster.leader} exited with code -9; 2 of 3 nodes still run" in up.output
    assert "gateway-1 exited with code -9; 1 of 2 gateways still serve" in up.output
    assert await asyncio.to_thread(up.stop, signal.SIGTERM) == 0
    await asyncio.to_thread(assert_nothing_left, up)
