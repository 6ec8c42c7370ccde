"""``logstream up``'s decisions that need no process: the plan, the port check, the console."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from logstream.children import Child, child_options, notable, stop_together
from logstream.shared.embedded_nats import EmbeddedNats
from logstream.up import LocalStack, StopRequest, banner, run
from logstream.up_plan import Plan, PlanRefused, add_arguments, find_port_conflict, make_plan
from tests.support.nats_source import free_port


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_are_the_contract_ports_and_a_store_under_the_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)

    plan = make_plan(_args(), environ={})

    assert plan.ports == {"nats": 4222, "ingest": 3001, "gateway": 3002, "proxy": 3000}
    assert plan.data_dir == tmp_path / ".logstream"
    assert plan.simulator and not plan.ephemeral and plan.host == "127.0.0.1"


def test_a_nats_url_from_the_environment_replaces_the_embedded_broker():
    plan = make_plan(_args(), environ={"LOGSTREAM_NATS_URL": "nats://broker:4222"})

    assert "nats" not in plan.ports
    assert plan.broker_url == "nats://broker:4222"


def test_ephemeral_and_data_dir_cannot_be_combined():
    with pytest.raises(SystemExit):
        _args("--ephemeral", "--data-dir", "x")


@pytest.mark.parametrize("text", ["0", "65536", "http"])
def test_a_port_flag_outside_1_to_65535_is_refused(text):
    with pytest.raises(SystemExit):
        _args("--proxy-port", text)


def test_a_port_given_to_two_roles_is_refused_naming_both():
    port = free_port()

    problem = find_port_conflict("127.0.0.1", {"ingest": port, "gateway": port})

    assert problem == f"port {port} is given to both ingest and gateway"


def test_a_listening_port_is_reported_with_its_role():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        problem = find_port_conflict("127.0.0.1", {"nats": free_port(), "gateway": port})

    assert problem == f"port {port} (gateway) is already in use on 127.0.0.1"


def test_free_ports_pass_the_check():
    assert find_port_conflict("127.0.0.1", {"ingest": free_port()}) is None


def test_services_bound_to_every_interface_are_shown_on_loopback():
    plan = Plan(
        host="0.0.0.0",
        ports={"nats": 4222, "proxy": 3000},
        nats_url=None,
        data_dir=Path("/d"),
        ephemeral=False,
        sync_always=False,
        simulator=True,
        rate=5,
    )

    assert plan.url("proxy") == "http://127.0.0.1:3000"
    assert plan.broker_url == "nats://127.0.0.1:4222"


def test_the_banner_gives_the_page_and_ready_to_paste_stream_commands():
    plan = make_plan(_args("--data-dir", "/srv/logs"), environ={})

    text = banner(plan)

    assert "http://127.0.0.1:3000/" in text
    assert (
        "curl -N 'http://127.0.0.1:3002/api/logs/stream?channels="
        "logs:etl:workspace123:workflow456&access_token=ey"
    ) in text
    assert "-H 'Authorization: Bearer l5-etl-token'" in text
    assert "Ctrl-C to stop" in text and "/srv/logs" in text


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (json.dumps({"level": "warning", "msg": "broker link down"}), "warning: broker link down"),
        (json.dumps({"level": "error", "msg": "boom"}), "error: boom"),
        (json.dumps({"level": "info", "msg": "started"}), None),
        ("Traceback (most recent call last):", "Traceback (most recent call last):"),
        ("[1] 2026/01/01 00:00:00.000000 [WRN] Plaintext passwords detected", None),
        ("[1] 2026/01/01 00:00:00.000000 [INF] Server is ready", None),
    ],
)
def test_only_warnings_and_errors_reach_the_console(line, shown):
    assert notable(line) == shown


def test_the_embedded_broker_syncs_every_write_and_ignores_the_terminals_ctrl_c(tmp_path):
    broker = EmbeddedNats(port=free_port(), store_dir=tmp_path, sync_always=True)
    broker.start(**child_options())
    try:
        config = json.loads((tmp_path / "nats-server.conf").read_text())
        assert config["jetstream"]["sync_interval"] == "always"
        assert os.getpgid(broker.process.pid) == broker.process.pid  # its own process group
    finally:
        broker.stop()


def test_sync_always_and_rate_reach_the_plan():
    plan = make_plan(_args("--sync-always", "--rate", "50", "--no-simulator"), environ={})

    assert plan.sync_always and plan.rate == 50 and not plan.simulator


# --cluster N: the shape of several machines, locally (docs/reference/settings.md#more-than-one-machine).


def test_a_cluster_of_three_takes_consecutive_ports_for_nodes_routes_and_gateways(tmp_path):
    plan = make_plan(_args("--cluster", "3", "--data-dir", str(tmp_path)), environ={})

    assert plan.ports == {
        "nats-1": 4222,
        "nats-2": 4223,
        "nats-3": 4224,
        "nats-1 routes": 6222,
        "nats-2 routes": 6223,
        "nats-3 routes": 6224,
        "ingest-1": 3001,
        "ingest-2": 3011,
        "gateway-1": 3002,
        "gateway-2": 3003,
        "proxy": 3000,
    }
    assert plan.nodes == 3 and plan.clustered


def test_every_service_is_given_every_node_and_the_proxy_every_gateway():
    plan = make_plan(
        _args(
            "--cluster",
            "3",
            "--nats-port",
            "5000",
            "--cluster-port",
            "7000",
            "--gateway-port",
            "8000",
        ),
        environ={},
    )

    assert plan.broker_url == ("nats://127.0.0.1:5000,nats://127.0.0.1:5001,nats://127.0.0.1:5002")
    assert plan.gateway_urls == "http://127.0.0.1:8000,http://127.0.0.1:8001"
    assert plan.ingest_urls == "http://127.0.0.1:3001,http://127.0.0.1:3011"
    assert plan.roles("nats") == ["nats-1", "nats-2", "nats-3"]
    assert plan.roles("ingest") == ["ingest-1", "ingest-2"]


def test_a_cluster_of_one_is_the_single_node_shape():
    plan = make_plan(_args("--cluster", "1"), environ={})

    assert plan.ports == {"nats": 4222, "ingest": 3001, "gateway": 3002, "proxy": 3000}
    assert not plan.clustered and plan.gateway_urls == "http://127.0.0.1:3002"


@pytest.mark.parametrize("size", ["0", "6", "three"])
def test_a_cluster_size_outside_1_to_5_is_refused(size, capsys):
    with pytest.raises(SystemExit):
        _args("--cluster", size)

    if size != "three":
        assert "JetStream keeps 1 to 5 replicas of a stream" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "environ", "named"),
    [
        (["--nats-url", "nats://broker:4222"], {}, "--nats-url"),
        ([], {"LOGSTREAM_NATS_URL": "nats://broker:4222"}, "LOGSTREAM_NATS_URL"),
    ],
)
def test_a_cluster_with_a_broker_url_is_refused_naming_where_the_url_came_from(
    argv, environ, named
):
    with pytest.raises(PlanRefused, match=f"cannot be combined with {named}"):
        make_plan(_args("--cluster", "3", *argv), environ=environ)


def test_up_refuses_a_cluster_with_a_broker_url_before_starting_anything(capsys):
    code = run(_args("--cluster", "3", "--nats-url", "nats://broker:4222", "--ephemeral"))

    assert code == 2
    assert "--cluster starts its own NATS cluster" in capsys.readouterr().err


def test_a_cluster_whose_ports_would_pass_65535_is_refused_naming_the_flag():
    with pytest.raises(
        PlanRefused, match="--nats-port 65534 with --cluster 3 needs ports up to 65536"
    ):
        make_plan(_args("--cluster", "3", "--nats-port", "65534"), environ={})


def test_a_taken_route_port_is_reported_with_its_node():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        plan = make_plan(
            _args(
                "--cluster", "2", "--nats-port", str(free_port()), "--cluster-port", str(port - 1)
            ),
            environ={},
        )

        problem = find_port_conflict("127.0.0.1", {"nats-2 routes": plan.ports["nats-2 routes"]})

    assert problem == f"port {port} (nats-2 routes) is already in use on 127.0.0.1"


def test_a_node_range_overlapping_a_gateway_range_is_refused_naming_both():
    plan = make_plan(_args("--cluster", "3", "--nats-port", "3003"), environ={})

    assert find_port_conflict("127.0.0.1", plan.ports) == (
        "port 3003 is given to both nats-1 and gateway-2"
    )


def test_the_cluster_banner_lists_every_node_and_every_gateway():
    plan = make_plan(_args("--cluster", "3"), environ={})

    text = banner(plan)

    assert "NATS cluster 'logstream' of 3 nodes, JetStream stream LOGS with 3 replicas" in text
    for index in range(3):
        assert (
            f"nats-{index + 1}     nats://127.0.0.1:{4222 + index} (routes on port "
            f"{6222 + index})" in text
        )
    for index in range(2):
        assert f"gateway-{index + 1}  http://127.0.0.1:{3002 + index}" in text
        assert f"ingest-{index + 1}   http://127.0.0.1:{3001 + 10 * index}" in text
    assert "curl -N 'http://127.0.0.1:3002/api/logs/stream?" in text


class _Exited:
    """A child's process as ``watch`` sees it: running (None) or its exit code."""

    def __init__(self, code: int | None) -> None:
        self.code = code

    def poll(self) -> int | None:
        return self.code


class _NoStop(StopRequest):
    """No stop requested, and no signal handlers installed."""

    def __init__(self) -> None:
        self.signum = None


def _stack(plan: Plan, **codes: int | None) -> LocalStack:
    stack = LocalStack(plan, _NoStop())
    stack.children = [
        # A stand-in for the Popen: watch() only polls it.
        Child(name, cast(subprocess.Popen, _Exited(code)), Path("/nonexistent"))
        for name, code in codes.items()
    ]
    return stack


def test_a_cluster_carries_on_without_a_node_while_a_majority_runs():
    plan = make_plan(_args("--cluster", "3"), environ={})
    one_lost = _stack(plan, **{"nats-1": None, "nats-2": -9, "nats-3": None})
    two_lost = _stack(plan, **{"nats-1": None, "nats-2": -9, "nats-3": -9})

    assert "2 of 3 nodes still run" in one_lost._carries_on_without(one_lost.children[1])
    assert two_lost._carries_on_without(two_lost.children[1]) is None


def test_a_cluster_carries_on_without_a_gateway_while_another_serves():
    plan = make_plan(_args("--cluster", "2"), environ={})
    one_lost = _stack(plan, **{"gateway-1": -9, "gateway-2": None})
    both_lost = _stack(plan, **{"gateway-1": -9, "gateway-2": -9})

    assert "1 of 2 gateways still serve" in one_lost._carries_on_without(one_lost.children[0])
    assert both_lost._carries_on_without(both_lost.children[0]) is None


def test_a_two_node_cluster_cannot_lose_a_node():
    plan = make_plan(_args("--cluster", "2"), environ={})
    stack = _stack(plan, **{"nats-1": -9, "nats-2": None})

    assert stack._carries_on_without(stack.children[0]) is None


def test_a_cluster_carries_on_without_an_ingest_while_another_takes_publishes():
    plan = make_plan(_args("--cluster", "3"), environ={})
    one_lost = _stack(plan, **{"ingest-1": -9, "ingest-2": None})
    both_lost = _stack(plan, **{"ingest-1": -9, "ingest-2": -9})

    assert "1 of 2 ingests still take publishes" in one_lost._carries_on_without(
        one_lost.children[0]
    )
    assert both_lost._carries_on_without(both_lost.children[0]) is None


@pytest.mark.parametrize("name", ["proxy", "simulator"])
def test_a_cluster_cannot_do_without_its_one_proxy_or_simulator(name):
    plan = make_plan(_args("--cluster", "3"), environ={})
    stack = _stack(plan, **{name: 1})

    assert stack._carries_on_without(stack.children[0]) is None


def test_a_single_node_stack_stops_when_any_child_dies():
    plan = make_plan(_args(), environ={})
    stack = _stack(plan, nats=-9, gateway=None)

    assert stack._carries_on_without(stack.children[0]) is None


def test_stop_together_signals_all_at_once_and_kills_the_one_that_ignores_sigterm(tmp_path):
    ignores = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    stubborn = subprocess.Popen([sys.executable, "-c", ignores], stdout=subprocess.PIPE)
    obedient = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert stubborn.stdout.readline() == b"ready\n"  # its SIG_IGN is in place

        killed = stop_together(
            [Child("stubborn", stubborn, tmp_path), Child("obedient", obedient, tmp_path)],
            timeout=1.0,
        )

        assert killed == ["stubborn"]
        assert obedient.returncode == -signal.SIGTERM
        assert stubborn.returncode == -signal.SIGKILL
    finally:
        for process in (stubborn, obedient):
            if process.poll() is None:
                process.kill()
                process.wait()
        stubborn.stdout.close()


def test_route_errors_of_a_forming_or_degraded_cluster_stay_off_the_console():
    line = (
        "[1] 2026/01/01 00:00:00.000000 [ERR] Error trying to connect to route "
        "(attempt 1): dial tcp 127.0.0.1:6223: connect: connection refused"
    )

    assert notable(line) is None
