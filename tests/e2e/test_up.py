"""``logstream up`` as a user runs it: a real process tree, real ports, real clients.

Each test starts its own ``up`` on free ports with its own data dir, and checks through /proc
that no process it started is left behind (by pid and start time; the ports themselves are
not a reliable witness on a machine where other suites pick free ports too). That the ports
are released shows where it matters: the restart test binds the same ones again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time

import httpx
import pytest
from httpx_sse import connect_sse

from logstream.shared.nats_permissions import dev_users
from tests.support.nats_source import connect_as, distinct_free_ports
from tests.support.up_process import (
    BANNER_TIMEOUT_S,
    Up,
    assert_nothing_left,
    listening,
    processes_mentioning,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the process tree from /proc"
)

DEMO_CHANNEL = "logs:etl:workspace123:workflow456"
ETL_ROUTE = "/api/dapadmin/l5-etl/sse/logs/stream"


def user_token(up: Up) -> str:
    response = httpx.get(up.url("proxy") + "/dev/token", params={"user": "user123"}, timeout=10)
    response.raise_for_status()
    return response.json()["token"]


def publish(up: Up, channel: str, message: str) -> int:
    response = httpx.post(
        up.url("ingest") + "/api/logs/publish",
        timeout=10,
        headers={"Authorization": "Bearer l5-etl-token"},
        json={"channel": channel, "message": message},
    )
    assert response.status_code == 202, response.text
    return response.json()["seqs"][0]


def read_etl_route(
    up: Up, workflow: str, *, until, publish_after_connect=None, timeout: float = 30.0
) -> dict:
    """Opens the proxy's ETL route for workspace123/``workflow``; the first record ``until``
    accepts. ``publish_after_connect`` runs once the stream has opened."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {user_token(up)}"}
    params = {"workspace_id": "workspace123", "workflow_id": workflow}
    with httpx.Client(timeout=httpx.Timeout(10, read=timeout)) as client:
        with connect_sse(
            client, "GET", up.url("proxy") + ETL_ROUTE, params=params, headers=headers
        ) as source:
            assert source.response.status_code == 200, source.response.read()
            for event in source.iter_sse():
                assert time.monotonic() < deadline, "no matching record in time"
                if event.event == "connected" and publish_after_connect:
                    publish_after_connect()
                if event.event == "log" and until(json.loads(event.data)):
                    return json.loads(event.data)
    pytest.fail("the stream ended before a matching record arrived")


def test_up_serves_what_it_prints_and_sigterm_leaves_nothing_behind(running, unique_id):
    up = running("--ephemeral", "--no-simulator")
    assert f"Logs page:   {up.url('proxy')}/" in up.output
    assert len(up.children) == 4, up.children
    assert any("nats-server" in cmd for cmd in up.children.values())
    direct = re.search(r"curl -N '(http://[^']+)'", up.output).group(1)
    assert direct.startswith(
        f"{up.url('gateway')}/api/logs/stream?channels={DEMO_CHANNEL}&access_token="
    )
    with httpx.Client(timeout=10) as client, connect_sse(client, "GET", direct) as source:
        assert source.response.status_code == 200
        assert next(source.iter_sse()).event == "connected"
    message = f"hello {unique_id}"

    record = read_etl_route(
        up,
        unique_id,
        until=lambda r: r["message"] == message,
        publish_after_connect=lambda: publish(up, f"logs:etl:workspace123:{unique_id}", message),
    )

    assert record["channel"] == f"logs:etl:workspace123:{unique_id}"
    # Development runs lazy, and says so at start and in every service's /ready.
    assert "Durability:  lazy (development)" in up.output
    for service in ("ingest", "gateway"):
        body = httpx.get(up.url(service) + "/ready", timeout=10).json()
        assert body["durability"] == "lazy" and body["broker_sync"] == "2m", body
    data_dir = up.data_dir()
    assert up.stop(signal.SIGTERM) == 0
    assert_nothing_left(up)
    assert not data_dir.exists(), "the ephemeral store must be removed at exit"


def test_sync_always_runs_the_embedded_broker_durable_and_says_so(running, unique_id):
    up = running("--ephemeral", "--no-simulator", "--sync-always")
    assert "Durability:  fsync" in up.output
    seq = publish(up, f"logs:etl:workspace123:{unique_id}", "on disk")
    assert seq > 0
    for service in ("ingest", "gateway"):
        body = httpx.get(up.url(service) + "/ready", timeout=10).json()
        assert body["durability"] == "fsync" and body["broker_sync"] == "always", body
    metrics = httpx.get(up.url("ingest") + "/metrics", timeout=10).text
    assert 'logstream_broker_durability{logstream_broker_durability="fsync"} 1.0' in metrics
    assert up.stop(signal.SIGTERM) == 0
    assert_nothing_left(up)


def test_a_taken_port_fails_fast_naming_it_and_starts_nothing(tmp_path):
    up = Up(tmp_path, "--data-dir", str(tmp_path / "store"))
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", up.ports["proxy"]))
        blocker.listen()
        code = up.start().wait_exit(timeout=30)

    assert code == 1
    assert f"port {up.ports['proxy']} (proxy) is already in use on 127.0.0.1" in up.output
    assert not any(listening(up.ports[role]) for role in ("nats", "ingest", "gateway"))
    assert not processes_mentioning(str(tmp_path / "store")), "a broker was started"


async def test_ctrl_c_stops_everything_and_stored_logs_survive_a_restart(
    running, tmp_path, unique_id
):
    store = tmp_path / "store"
    first = running("--data-dir", str(store), "--no-simulator")
    seq = publish(first, f"logs:etl:workspace123:{unique_id}", f"kept {unique_id}")
    assert first.stop(signal.SIGINT) == 0
    assert_nothing_left(first)

    second = running("--data-dir", str(store), "--no-simulator", ports=first.ports)
    nc = await connect_as(f"nats://127.0.0.1:{second.ports['nats']}", "gateway", connect_timeout=5)
    try:
        stored = await nc.jetstream().get_msg("LOGS", seq)
    finally:
        await nc.close()

    assert stored.subject == f"logs.etl.workspace123.{unique_id}"
    assert json.loads(stored.data)["message"] == f"kept {unique_id}"
    assert second.stop() == 0
    broker = json.loads((store / "nats" / "nats-server.conf").read_text())
    assert broker["authorization"]["users"] == dev_users()  # one user per role, no superuser


def test_simulator_records_arrive_and_killing_up_outright_leaves_no_child(running, tmp_path):
    up = running(cwd=tmp_path)  # no --data-dir: the store is ./.logstream
    assert len(up.children) == 5, up.children
    assert (tmp_path / ".logstream" / "nats").is_dir()

    record = read_etl_route(up, "workflow456", until=lambda r: True, timeout=60)

    assert record["channel"] == DEMO_CHANNEL
    up.process.kill()  # no chance to stop its children: they must notice on their own
    up.process.wait()
    assert_nothing_left(up)


async def test_nats_url_starts_no_broker_and_a_dying_child_stops_up(
    running, nats_server, nc, unique_id
):
    ports = dict(zip(("ingest", "gateway", "proxy"), distinct_free_ports(3)))
    up = running(
        "--ephemeral", "--no-simulator", ports=ports, env={"LOGSTREAM_NATS_URL": nats_server.url}
    )
    assert len(up.children) == 3
    assert not any("nats-server" in cmd for cmd in up.children.values())
    seq = publish(up, f"logs:etl:workspace123:{unique_id}", "via the given broker")
    stored = await nc.jetstream().get_msg("LOGS", seq)
    assert stored.subject == f"logs.etl.workspace123.{unique_id}"
    gateway = next(child for child, cmd in up.children.items() if " gateway " in cmd)

    os.kill(gateway.pid, signal.SIGKILL)

    assert up.wait_exit() == 1
    assert "gateway exited with code -9" in up.output
    assert_nothing_left(up)


def test_a_service_that_fails_to_start_is_named_with_its_log(tmp_path):
    store = tmp_path / "store"
    up = Up(
        tmp_path,
        "--data-dir",
        str(store),
        "--no-simulator",
        env={"LOGSTREAM_MAX_BATCH_RECORDS": "0"},
    ).start()

    assert up.wait_exit(timeout=BANNER_TIMEOUT_S) == 1
    assert "ingest exited with code" in up.output
    assert "max_batch_records" in up.output, "the log tail names the bad setting"
    assert not any(listening(port) for port in up.ports.values())
    assert not processes_mentioning(str(store)), "the broker was left running"
    for role in ("gateway", "proxy"):  # started alongside ingest, so stopped with it
        assert not processes_mentioning(f"--port {up.ports[role]}"), role
