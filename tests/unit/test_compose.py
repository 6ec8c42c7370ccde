"""compose.yaml and the Dockerfile, checked against the code they run.

No Docker engine is needed: the files are parsed and every command, variable, port and
identity they name is checked against the real CLI, settings and dev identities.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from logstream.cli import SERVICES, build_parser
from shared.identities import DEV_NATS_USERS
from shared.nats_link import INGEST_SUBJECT, connect_options, role_of
from shared.nats_permissions import dev_users
from shared.settings import ENV_PREFIX, env_name, load_settings

yaml = pytest.importorskip("yaml")  # PyYAML comes with uvicorn[standard]

REPO = Path(__file__).resolve().parents[2]
APP_SERVICES = ("ingest", "gateway-a", "gateway-b", "proxy", "simulator")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def _settings_class(compose_service: dict):
    command = compose_service["command"][0]
    return importlib.import_module(SERVICES[command] + ".settings").Settings


def _services_with_settings(compose: dict) -> list[str]:
    return [name for name in APP_SERVICES if compose["services"][name]["command"][0] in SERVICES]


def test_compose_has_nats_ingest_two_gateways_proxy_and_simulator(compose):
    assert set(compose["services"]) == {"nats", *APP_SERVICES}
    commands = [compose["services"][name]["command"][0] for name in APP_SERVICES]
    assert commands == ["ingest", "gateway", "gateway", "proxy", "simulate"]


def test_every_app_service_is_built_from_the_dockerfile(compose):
    for name in APP_SERVICES:
        assert compose["services"][name]["build"] == ".", name


def test_every_command_is_one_the_logstream_cli_accepts(compose):
    parser = build_parser()
    for name in APP_SERVICES:
        command = compose["services"][name]["command"]
        try:
            parser.parse_args(command)
        except SystemExit:
            pytest.fail(f"{name}: `logstream {' '.join(command)}` is not a valid command")


def test_every_logstream_variable_is_a_real_setting_and_loads(compose):
    for name in _services_with_settings(compose):
        service = compose["services"][name]
        settings_cls = _settings_class(service)
        environment = {key: str(value) for key, value in service["environment"].items()}
        known = {env_name(field) for field in settings_cls.__struct_fields__}

        unknown = [key for key in environment if key.startswith(ENV_PREFIX) and key not in known]
        assert not unknown, f"{name}: not settings of {service['command'][0]}: {unknown}"

        settings = load_settings(settings_cls, environment)
        assert settings.dev and settings.host == "0.0.0.0", name


def test_the_simulator_gets_no_service_settings(compose):
    environment = compose["services"]["simulator"].get("environment", {})
    assert not [key for key in environment if key.startswith(ENV_PREFIX)]


def test_every_service_healthcheck_asks_ready_on_its_own_port(compose):
    for name in _services_with_settings(compose):
        service = compose["services"][name]
        port = service["environment"]["LOGSTREAM_PORT"]
        assert service["healthcheck"]["test"][-1] == f"http://127.0.0.1:{port}/ready", name


def test_the_proxy_spreads_over_both_gateways(compose):
    services = compose["services"]
    urls = services["proxy"]["environment"]["LOGSTREAM_GATEWAY_URL"].split(",")
    expected = [f"http://{name}:{services[name]['environment']['LOGSTREAM_PORT']}"
                for name in ("gateway-a", "gateway-b")]
    assert urls == expected


def test_services_reach_nats_and_ingest_by_their_compose_names(compose):
    services = compose["services"]
    for name in _services_with_settings(compose):
        assert services[name]["environment"]["LOGSTREAM_NATS_URL"] == "nats://nats:4222"
    simulator = services["simulator"]["command"]
    assert simulator[simulator.index("--ingest-url") + 1] == (
        f"http://ingest:{services['ingest']['environment']['LOGSTREAM_PORT']}")


def test_dev_mode_ports_are_published_on_loopback_only(compose):
    """Dev identities are public, so nothing in this file may listen beyond this machine."""
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name}: {mapping}"


def test_nats_is_pinned_with_jetstream_on_a_volume(compose):
    nats = compose["services"]["nats"]
    assert re.fullmatch(r"nats:\d+\.\d+\.\d+(-alpine)?", nats["image"]), nats["image"]
    command = nats["command"]
    assert "-js" in command
    store = command[command.index("-sd") + 1]
    assert any(volume.endswith(":" + store) for volume in nats["volumes"])


def _nats_config(compose: dict) -> dict:
    """The config file the NATS container is started with, read as nats-server reads it."""
    nats = compose["services"]["nats"]
    command = nats["command"]
    target = command[command.index("-c") + 1]
    source = next(c["source"] for c in nats["configs"] if c["target"] == target)
    text = (REPO / compose["configs"][source]["file"]).read_text()
    return json.loads("\n".join(line for line in text.splitlines()
                                if not line.lstrip().startswith("#")))


def test_the_nats_config_is_a_file_in_the_repo_mounted_into_the_container(compose):
    source = compose["services"]["nats"]["configs"][0]["source"]
    path = REPO / compose["configs"][source]["file"]
    assert path.is_file() and path.is_relative_to(REPO / "deploy")


def test_nats_users_are_exactly_the_embedded_brokers_users_and_permissions(compose):
    """Same users, passwords and permissions as `logstream up`; no user may do everything."""
    users = _nats_config(compose)["authorization"]["users"]
    assert users == dev_users()
    assert all("permissions" in user for user in users)
    producer = next(user for user in users if user["user"] == DEV_NATS_USERS["producer"][0])
    assert producer["permissions"]["publish"]["allow"] == [INGEST_SUBJECT]


def test_each_service_logs_in_to_nats_as_its_own_user_with_its_own_inbox(compose):
    for name in _services_with_settings(compose):
        service = compose["services"][name]
        environment = {key: str(value) for key, value in service["environment"].items()}
        settings = load_settings(_settings_class(service), environment)
        role = role_of(settings)
        if service["command"][0] == "proxy":
            assert "LOGSTREAM_NATS_USER" not in environment  # the proxy never uses NATS
            continue
        assert role == service["command"][0], name
        user, password = DEV_NATS_USERS[role]
        assert (environment["LOGSTREAM_NATS_USER"],
                environment["LOGSTREAM_NATS_PASSWORD"]) == (user, password), name
        options = connect_options(settings, name=name)
        assert (options["user"], options["inbox_prefix"]) == (user, f"_INBOX_{role}"), name


def test_dockerfile_installs_the_package_and_runs_as_a_non_root_user():
    dockerfile = (REPO / "Dockerfile").read_text()
    instructions = [line.strip() for line in dockerfile.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]

    assert instructions[0] == "FROM python:3.11-slim"
    assert any(re.match(r"RUN pip install \.( |$)", line) for line in instructions)
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["logstream"]' in instructions


def test_docker_context_holds_every_package_the_build_installs():
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    dockerfile = (REPO / "Dockerfile").read_text()
    for package in ("logstream", "shared", "services"):
        assert f"!{package}" in ignored, package
        assert f"COPY {package} " in dockerfile, package
