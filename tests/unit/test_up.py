"""``logstream up``'s decisions that need no process: the plan, the port check, the console."""

from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path

import pytest

from logstream.children import child_options, notable
from logstream.up import Plan, add_arguments, banner, find_port_conflict, make_plan
from shared.embedded_nats import EmbeddedNats
from tests.support.nats_source import free_port


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_are_the_contract_ports_and_a_store_under_the_working_directory(
        tmp_path, monkeypatch):
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
    plan = Plan(host="0.0.0.0", ports={"nats": 4222, "proxy": 3000}, nats_url=None,
                data_dir=Path("/d"), ephemeral=False, sync_always=False, simulator=True,
                rate=5)

    assert plan.url("proxy") == "http://127.0.0.1:3000"
    assert plan.broker_url == "nats://127.0.0.1:4222"


def test_the_banner_gives_the_page_and_ready_to_paste_stream_commands():
    plan = make_plan(_args("--data-dir", "/srv/logs"), environ={})

    text = banner(plan)

    assert "http://127.0.0.1:3000/" in text
    assert ("curl -N 'http://127.0.0.1:3002/api/logs/stream?channels="
            "logs:etl:workspace123:workflow456&access_token=ey") in text
    assert "-H 'Authorization: Bearer l5-etl-token'" in text
    assert "Ctrl-C to stop" in text and "/srv/logs" in text


@pytest.mark.parametrize(("line", "shown"), [
    (json.dumps({"level": "warning", "msg": "broker link down"}), "warning: broker link down"),
    (json.dumps({"level": "error", "msg": "boom"}), "error: boom"),
    (json.dumps({"level": "info", "msg": "started"}), None),
    ("Traceback (most recent call last):", "Traceback (most recent call last):"),
    ("[1] 2026/01/01 00:00:00.000000 [WRN] Plaintext passwords detected", None),
    ("[1] 2026/01/01 00:00:00.000000 [INF] Server is ready", None),
])
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
