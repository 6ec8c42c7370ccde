"""logstream.shared.embedded_nats.EmbeddedCluster against real nats-server processes: one NATS cluster
with clustered JetStream, a replicated LOGS stream, and the loss of a node."""

from __future__ import annotations

import json
import socket
import time

import nats
import pytest

from logstream.shared.embedded_nats import EmbeddedCluster, EmbeddedNats
from logstream.shared.nats_link import ensure_stream
from logstream.shared.nats_names import STREAM_NAME
from logstream.shared.nats_permissions import dev_users
from tests.support import ledger
from tests.support.jetstream import stored
from tests.support.nats_source import connect_as, distinct_free_ports, free_port
from tests.support.waiting import wait_until

# Generous bounds for a busy 2-core machine: a fresh cluster elects its meta leader in about
# 1 s here, a stream leader after a kill -9 in a few seconds.
WAIT_S = 30.0
RECORDS_BEFORE_KILL = 100
RECORDS_AFTER_KILL = 100


def three_nodes(store_dir) -> EmbeddedCluster:
    ports = distinct_free_ports(6)
    return EmbeddedCluster(ports=ports[:3], cluster_ports=ports[3:], store_dir=store_dir)


@pytest.fixture
def cluster(tmp_path):
    running = three_nodes(tmp_path).start()
    yield running
    running.kill()


async def connect(cluster: EmbeddedCluster, role: str):
    return await connect_as(
        cluster.url, role, reconnect_time_wait=0.2, max_reconnect_attempts=-1, error_cb=_ignore
    )


async def _ignore(_exc: Exception) -> None:
    pass


async def publish_until_acked(js, index: int) -> int:
    """Publish record ``index`` (with its ``Nats-Msg-Id``) until JetStream acknowledges it;
    retries cover the election after a node dies and store it once."""
    body = json.dumps({"channel": "logs:etl:ws1:wf1", "message": f"{index:05d}"}).encode()

    async def acked() -> int:
        ack = await js.publish(
            "logs.etl.ws1.wf1", body, timeout=2, headers={"Nats-Msg-Id": f"record-{index}"}
        )
        return ack.seq

    return await wait_until(
        acked,
        f"record {index} to be acknowledged",
        timeout=WAIT_S,
        interval=0.1,
        retry_on=(TimeoutError, nats.errors.Error),
    )


def test_every_node_routes_to_the_others_with_its_own_name_and_store(cluster):
    configs = [
        json.loads((node.store_dir / "nats-server.conf").read_text()) for node in cluster.nodes
    ]

    assert [config["server_name"] for config in configs] == ["nats-1", "nats-2", "nats-3"]
    for node, config in zip(cluster.nodes, configs):
        others = {other.route_url for other in cluster.nodes if other is not node}
        assert config["cluster"]["name"] == "logstream"
        assert config["cluster"]["port"] == node.cluster_port
        assert set(config["cluster"]["routes"]) == others
        assert config["jetstream"]["store_dir"] == str(node.store_dir / "jetstream")
        assert config["authorization"]["users"] == dev_users()  # `up`'s users, no superuser
    assert cluster.url == ",".join(f"nats://127.0.0.1:{node.port}" for node in cluster.nodes)


async def test_a_three_replica_stream_keeps_acking_and_loses_nothing_when_a_node_is_killed(cluster):
    client = await connect(cluster, "ingest")
    try:
        js = client.jetstream(timeout=5)
        config = await ensure_stream(
            js, max_age_s=3600, max_bytes=1 << 30, duplicate_window_s=120, replicas=3
        )
        assert config.num_replicas == 3
        sent = [await publish_until_acked(js, i) for i in range(RECORDS_BEFORE_KILL)]
        info = await js.stream_info(STREAM_NAME)
        assert len(info.cluster.replicas) == 2
        leader = next(n for n in cluster.nodes if n.server_name == info.cluster.leader)

        leader.kill()  # SIGKILL: the stream's leader, so a new one must be elected

        sent += [
            await publish_until_acked(js, i)
            for i in range(RECORDS_BEFORE_KILL, RECORDS_BEFORE_KILL + RECORDS_AFTER_KILL)
        ]
    finally:
        await client.close()
    reader = await connect(cluster, "gateway")  # new client: the dead node is listed, skipped
    try:
        records = await stored(reader.jetstream(timeout=5), "logs.>")
    finally:
        await reader.close()
    received = [seq for seq, _, _ in records]
    ledger.account("3-node cluster, R3 stream, leader killed -9 between publishes", sent, received)
    assert received == sent
    assert [record["message"] for _, _, record in records] == [
        f"{i:05d}" for i in range(RECORDS_BEFORE_KILL + RECORDS_AFTER_KILL)
    ]


def test_a_cluster_of_one_node_is_refused(tmp_path):
    with pytest.raises(ValueError, match="two or more nodes"):
        EmbeddedCluster(ports=[free_port()], cluster_ports=[free_port()], store_dir=tmp_path)


def test_a_node_needs_both_a_cluster_name_and_a_cluster_port(tmp_path):
    with pytest.raises(ValueError, match="cluster_name and cluster_port"):
        EmbeddedNats(port=free_port(), store_dir=tmp_path, cluster_port=free_port())


def test_a_taken_cluster_port_fails_naming_it_and_leaves_no_node_running(tmp_path):
    cluster = three_nodes(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", cluster.nodes[2].cluster_port))
        holder.listen()
        with pytest.raises(RuntimeError, match=f"port {cluster.nodes[2].cluster_port}"):
            cluster.start()

    assert all(node.process.poll() is not None for node in cluster.nodes[:2])
    assert cluster.nodes[2].process is None


def test_a_node_that_dies_while_jetstream_forms_is_named(tmp_path):
    cluster = three_nodes(tmp_path)
    try:
        for node in cluster.nodes:
            node.start()
        cluster.nodes[1].kill()

        with pytest.raises(RuntimeError, match="nats-2 is not running"):
            cluster.wait_for_jetstream(WAIT_S)
    finally:
        cluster.kill()


def test_waiting_for_jetstream_can_be_abandoned(tmp_path):
    cluster = three_nodes(tmp_path)
    try:
        cluster.nodes[0].start()  # alone: it can never elect a meta leader
        asked: list[float] = []

        def abandon() -> bool:
            asked.append(time.monotonic())
            return len(asked) >= 2  # after one round of polls

        assert cluster.wait_for_jetstream(WAIT_S, abandon=abandon) is False
    finally:
        cluster.kill()


def test_a_cluster_that_never_forms_times_out_naming_the_silent_nodes(tmp_path):
    cluster = three_nodes(tmp_path)
    try:
        cluster.nodes[0].start()  # one of three: no quorum, so no meta leader, ever

        with pytest.raises(
            RuntimeError,
            match=r"no meta leader within 1s \(nats-1, nats-2, "
            r"nats-3 never answered",
        ):
            cluster.wait_for_jetstream(1.0)
    finally:
        cluster.kill()


def test_nodes_serving_every_interface_keep_their_unauthenticated_routes_on_loopback(tmp_path):
    ports = distinct_free_ports(4)
    cluster = EmbeddedCluster(
        ports=ports[:2], cluster_ports=ports[2:], store_dir=tmp_path, host="0.0.0.0"
    )
    try:
        cluster.start()
        configs = [
            json.loads((node.store_dir / "nats-server.conf").read_text()) for node in cluster.nodes
        ]
    finally:
        cluster.kill()

    assert [config["host"] for config in configs] == ["0.0.0.0", "0.0.0.0"]
    assert [config["cluster"]["host"] for config in configs] == ["127.0.0.1", "127.0.0.1"]
    assert configs[0]["cluster"]["routes"] == [f"nats-route://127.0.0.1:{ports[3]}"]
