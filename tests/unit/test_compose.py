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
from logstream.shared.identities import DEV_NATS_USERS
from logstream.shared.nats_link import connect_options, role_of
from logstream.shared.nats_names import INGEST_SUBJECT
from logstream.shared.nats_permissions import dev_users
from logstream.shared.settings import ENV_PREFIX, env_name, load_settings

yaml = pytest.importorskip("yaml")  # PyYAML comes with uvicorn[standard]

REPO = Path(__file__).resolve().parents[2]
APP_SERVICES = ("ingest", "gateway-a", "gateway-b", "proxy", "simulator")
# The `cluster` profile: three NATS nodes, two ingests, two gateways, a proxy (DEPLOY.md).
CLUSTER_NODES = ("nats-1", "nats-2", "nats-3")
CLUSTER_APP_SERVICES = (
    "cluster-ingest-a",
    "cluster-ingest-b",
    "cluster-gateway-a",
    "cluster-gateway-b",
    "cluster-proxy",
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def _settings_class(compose_service: dict):
    command = compose_service["command"][0]
    return importlib.import_module(SERVICES[command] + ".settings").Settings


def _services_with_settings(compose: dict, names=APP_SERVICES + CLUSTER_APP_SERVICES) -> list[str]:
    return [name for name in names if compose["services"][name]["command"][0] in SERVICES]


def _environment(service: dict) -> dict[str, str]:
    return {key: str(value) for key, value in service["environment"].items()}


def test_compose_has_nats_ingest_two_gateways_proxy_and_simulator(compose):
    unprofiled = {
        name for name, service in compose["services"].items() if "profiles" not in service
    }
    assert unprofiled == {"nats", *APP_SERVICES}
    commands = [compose["services"][name]["command"][0] for name in APP_SERVICES]
    assert commands == ["ingest", "gateway", "gateway", "proxy", "simulate"]


def test_every_app_service_is_built_from_the_dockerfile(compose):
    for name in APP_SERVICES + CLUSTER_APP_SERVICES:
        assert compose["services"][name]["build"] == ".", name


def test_every_command_is_one_the_logstream_cli_accepts(compose):
    parser = build_parser()
    for name in APP_SERVICES + CLUSTER_APP_SERVICES:
        command = compose["services"][name]["command"]
        try:
            parser.parse_args(command)
        except SystemExit:
            pytest.fail(f"{name}: `logstream {' '.join(command)}` is not a valid command")


def test_every_logstream_variable_is_a_real_setting_and_loads(compose):
    for name in _services_with_settings(compose):
        service = compose["services"][name]
        settings_cls = _settings_class(service)
        environment = _environment(service)
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
    expected = [
        f"http://{name}:{services[name]['environment']['LOGSTREAM_PORT']}"
        for name in ("gateway-a", "gateway-b")
    ]
    assert urls == expected


def test_services_reach_nats_and_ingest_by_their_compose_names(compose):
    services = compose["services"]
    for name in _services_with_settings(compose, APP_SERVICES):
        assert services[name]["environment"]["LOGSTREAM_NATS_URL"] == "nats://nats:4222"
    simulator = services["simulator"]["command"]
    assert simulator[simulator.index("--ingest-url") + 1] == (
        f"http://ingest:{services['ingest']['environment']['LOGSTREAM_PORT']}"
    )


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
    return json.loads(
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )


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
        environment = _environment(service)
        settings = load_settings(_settings_class(service), environment)
        role = role_of(settings)
        if service["command"][0] == "proxy":
            assert "LOGSTREAM_NATS_USER" not in environment  # the proxy never uses NATS
            continue
        assert role == service["command"][0], name
        user, password = DEV_NATS_USERS[role]
        assert (environment["LOGSTREAM_NATS_USER"], environment["LOGSTREAM_NATS_PASSWORD"]) == (
            user,
            password,
        ), name
        options = connect_options(settings, name=name)
        assert (options["user"], options["inbox_prefix"]) == (user, f"_INBOX_{role}"), name


def test_dockerfile_installs_the_package_and_runs_as_a_non_root_user():
    dockerfile = (REPO / "Dockerfile").read_text()
    instructions = [
        line.strip()
        for line in dockerfile.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]

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


# --- the `cluster` profile -------------------------------------------------------------------


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_the_cluster_profile_has_three_nodes_two_ingests_two_gateways_and_a_proxy(compose):
    services = compose["services"]
    in_profile = {
        name for name, service in services.items() if "cluster" in service.get("profiles", [])
    }
    assert in_profile == {*CLUSTER_NODES, *CLUSTER_APP_SERVICES}
    commands = [services[name]["command"][0] for name in CLUSTER_APP_SERVICES]
    assert commands == ["ingest", "ingest", "gateway", "gateway", "proxy"]


def test_every_cluster_service_has_a_health_check(compose):
    for name in (*CLUSTER_NODES, *CLUSTER_APP_SERVICES):
        assert compose["services"][name]["healthcheck"]["test"][0] == "CMD", name


def test_the_cluster_depends_only_on_itself_and_waits_for_health(compose):
    services, members = compose["services"], {*CLUSTER_NODES, *CLUSTER_APP_SERVICES}
    for name in CLUSTER_APP_SERVICES:
        depends_on = services[name]["depends_on"]
        assert set(depends_on) <= members, name
        assert all(d["condition"] == "service_healthy" for d in depends_on.values()), name
    assert "cluster-ingest-a" in services["cluster-ingest-b"]["depends_on"]  # one creates LOGS


def test_the_nats_nodes_are_pinned_named_and_route_to_each_other(compose):
    services = compose["services"]
    nodes = [services[name] for name in CLUSTER_NODES]
    assert {node["image"] for node in nodes} == {services["nats"]["image"]}  # one pinned tag
    route_ports = {_flag(node["command"], "--cluster").rsplit(":", 1)[1] for node in nodes}
    (route_port,) = route_ports
    routes = {f"nats-route://{name}:{route_port}" for name in CLUSTER_NODES}
    volumes = set()
    for name, node in zip(CLUSTER_NODES, nodes):
        command = node["command"]
        assert "-js" in command and _flag(command, "--name") == name, name
        assert _flag(command, "--cluster_name") == "logstream", name
        assert set(_flag(command, "--routes").split(",")) == routes, name
        store = _flag(command, "-sd")
        (volume,) = [v for v in node["volumes"] if v.endswith(":" + store)]
        volumes.add(volume.split(":")[0])
        assert volume.split(":")[0] in compose["volumes"], name
        assert node["configs"] == services["nats"]["configs"], name  # the same role users
    assert len(volumes) == len(CLUSTER_NODES)  # each node its own store


def test_cluster_services_list_every_node_and_ingest_keeps_three_replicas(compose):
    services = compose["services"]
    node_urls = {f"nats://{name}:4222" for name in CLUSTER_NODES}  # nats-server's default port
    for name in _services_with_settings(compose, CLUSTER_APP_SERVICES):
        environment = _environment(services[name])
        assert set(environment["LOGSTREAM_NATS_URL"].split(",")) == node_urls, name
        if services[name]["command"][0] == "ingest":
            settings = load_settings(_settings_class(services[name]), environment)
            assert settings.stream_replicas == len(CLUSTER_NODES), name


def test_the_cluster_proxy_spreads_over_both_cluster_gateways(compose):
    services = compose["services"]
    urls = services["cluster-proxy"]["environment"]["LOGSTREAM_GATEWAY_URL"].split(",")
    assert urls == [
        f"http://{name}:{services[name]['environment']['LOGSTREAM_PORT']}"
        for name in ("cluster-gateway-a", "cluster-gateway-b")
    ]


def test_no_two_services_publish_the_same_host_port(compose):
    published = [
        str(mapping).rsplit(":", 1)[0]
        for service in compose["services"].values()
        for mapping in service.get("ports", [])
    ]
    assert len(published) == len(set(published))


def test_the_broker_is_durable_and_the_services_can_say_so(compose):
    """Production's default: sync_interval: always, a server that takes atomic batches, and
    every NATS service reading the durability from the broker's monitoring port."""
    assert _nats_config(compose)["jetstream"]["sync_interval"] == "always"
    major, minor, _ = compose["services"]["nats"]["image"].split(":")[1].split("-")[0].split(".")
    assert (int(major), int(minor)) >= (2, 12)  # atomic batch publish
    for name in ("ingest", "gateway-a", "gateway-b", "cluster-ingest-a", "cluster-gateway-a"):
        monitors = compose["services"][name]["environment"]["LOGSTREAM_NATS_MONITOR_URL"]
        assert all(url.endswith(":8222") for url in monitors.split(",")), (name, monitors)
