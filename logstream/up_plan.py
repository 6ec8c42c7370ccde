"""What ``logstream up`` will run: its flags, the plan they make, and the ports it needs.

Everything here is decided before any process starts, so a bad flag or a taken port stops
``up`` with nothing to clean up.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_DATA_DIR",
    "Plan",
    "PlanRefused",
    "add_arguments",
    "find_port_conflict",
    "make_plan",
]

# Relative to the working directory, so each project keeps its own store (like `.git`).
DEFAULT_DATA_DIR = ".logstream"
# JetStream keeps at most 5 replicas of a stream, and --cluster N gives LOGS N replicas.
MAX_CLUSTER_NODES = 5
# NATS's own convention for the route port, counting up from there for each node.
DEFAULT_CLUSTER_PORT = 6222
# --cluster runs two of each stateless service whatever the node count: one may die and the
# other carries on; they hold no state, so there is nothing to gain from one per node.
CLUSTER_SERVICE_COPIES = 2
# The second ingest listens this far above --ingest-port (3001 -> 3011): the ports just above
# 3001 are the gateways' (3002, 3003, ...), counting up from --gateway-port.
INGEST_PORT_STEP = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the whole stack locally in dev mode: an embedded nats-server, "
        "ingest, gateway, proxy and the simulator. Ctrl-C stops it all."
    )
    store = parser.add_mutually_exclusive_group()
    store.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"where the broker's store and the logs live [default: ./{DEFAULT_DATA_DIR}]",
    )
    store.add_argument(
        "--ephemeral",
        action="store_true",
        help="throw-away store in a temporary directory, removed at exit",
    )
    parser.add_argument(
        "--no-simulator",
        dest="simulator",
        action="store_false",
        help="do not start the traffic simulator",
    )
    parser.add_argument(
        "--nats-url",
        default=None,
        help="use this broker instead of the embedded one [LOGSTREAM_NATS_URL]",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address every service binds")
    parser.add_argument("--nats-port", type=_port, default=4222, help="embedded broker port")
    parser.add_argument("--ingest-port", type=_port, default=3001, help="ingest port")
    parser.add_argument("--gateway-port", type=_port, default=3002, help="gateway port")
    parser.add_argument("--proxy-port", type=_port, default=3000, help="proxy (Logs page) port")
    parser.add_argument(
        "--cluster",
        type=_cluster_size,
        default=None,
        metavar="N",
        help=f"run N (1-{MAX_CLUSTER_NODES}) NATS nodes as one JetStream "
        "cluster, the LOGS stream with N replicas, two ingests (on "
        f"--ingest-port and {INGEST_PORT_STEP} above it) and two gateways "
        "behind the proxy; nodes and gateways take consecutive ports from "
        "--nats-port and --gateway-port. 3 survives the loss of one node; "
        "2 does not",
    )
    parser.add_argument(
        "--cluster-port",
        type=_port,
        default=DEFAULT_CLUSTER_PORT,
        help="first route port of the --cluster nodes (one per node, counting up)",
    )
    parser.add_argument(
        "--sync-always",
        action="store_true",
        help="the embedded broker fsyncs every write (slower, survives a machine crash)",
    )
    parser.add_argument("--rate", type=_rate, default=5.0, help="simulator records per second")


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1-65535)")
    return port


def _cluster_size(text: str) -> int:
    nodes = int(text)
    if not 1 <= nodes <= MAX_CLUSTER_NODES:
        raise argparse.ArgumentTypeError(
            f"{text} nodes: JetStream keeps 1 to {MAX_CLUSTER_NODES} replicas of a stream, so "
            f"--cluster takes 1 to {MAX_CLUSTER_NODES}"
        )
    return nodes


def _rate(text: str) -> float:
    rate = float(text)
    if not rate > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of records/s")
    return rate


@dataclass(frozen=True)
class Plan:
    """What this run of ``up`` starts, and where: decided once from the flags."""

    host: str
    ports: dict[str, int]  # role -> port, in start order; "nats" only for the embedded broker
    nats_url: str | None  # None: start the embedded broker
    data_dir: Path
    ephemeral: bool
    sync_always: bool
    simulator: bool
    rate: float
    nodes: int = 1  # NATS nodes; more than one: an embedded cluster

    @property
    def clustered(self) -> bool:
        return self.nodes > 1

    def copies(self, service: str) -> int:
        """How many of ``nats``, ``ingest`` or ``gateway`` run: one each unless clustered."""
        if not self.clustered:
            return 1
        return self.nodes if service == "nats" else CLUSTER_SERVICE_COPIES

    def roles(self, service: str) -> list[str]:
        """``nats``, ``ingest`` or ``gateway``, or ``nats-1``, ``nats-2``, ... in a cluster."""
        if not self.clustered:
            return [service]
        return [f"{service}-{index}" for index in range(1, self.copies(service) + 1)]

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def url_host(self) -> str:
        """Where a local client reaches a service bound to ``host``."""
        if self.host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self.host == "::":
            return "[::1]"
        return f"[{self.host}]" if ":" in self.host else self.host

    def url(self, role: str) -> str:
        return f"http://{self.url_host}:{self.ports[role]}"

    @property
    def broker_url(self) -> str:
        """The services' ``--nats-url``: every node's URL, comma-separated."""
        return self.nats_url or ",".join(
            f"nats://{self.url_host}:{self.ports[role]}" for role in self.roles("nats")
        )

    @property
    def ingest_urls(self) -> str:
        """Every ingest, comma-separated (what a client spreads its publishes over)."""
        return ",".join(self.url(role) for role in self.roles("ingest"))

    @property
    def gateway_urls(self) -> str:
        """The proxy's ``--gateway-url``: every gateway, comma-separated."""
        return ",".join(self.url(role) for role in self.roles("gateway"))


class PlanRefused(Exception):
    """Flags that contradict each other; the message says which, for a human."""


def make_plan(args: argparse.Namespace, environ=os.environ) -> Plan:
    nats_url = args.nats_url or environ.get("LOGSTREAM_NATS_URL") or None
    nodes = args.cluster or 1
    if args.cluster is not None and nats_url:
        given = "--nats-url" if args.nats_url else "LOGSTREAM_NATS_URL"
        raise PlanRefused(
            f"--cluster starts its own NATS cluster; it cannot be combined with "
            f"{given} (drop one of them)"
        )
    ports = _port_plan(args, nodes, embedded=nats_url is None)
    if args.ephemeral:
        data_dir = Path(tempfile.mkdtemp(prefix="logstream-"))
    else:
        data_dir = (args.data_dir or Path.cwd() / DEFAULT_DATA_DIR).resolve()
    return Plan(
        host=args.host,
        ports=ports,
        nats_url=nats_url,
        data_dir=data_dir,
        ephemeral=args.ephemeral,
        sync_always=args.sync_always,
        simulator=args.simulator,
        rate=args.rate,
        nodes=nodes,
    )


def _port_plan(args: argparse.Namespace, nodes: int, *, embedded: bool) -> dict[str, int]:
    """Role -> port, in start order; a cluster's nodes and gateways count up from the flags,
    its second ingest is ``INGEST_PORT_STEP`` above the first."""
    copies = CLUSTER_SERVICE_COPIES if nodes > 1 else 1

    def numbered(
        flag: str, first: int, count: int, role: str | None = None, suffix: str = "", step: int = 1
    ) -> dict[str, int]:
        if nodes == 1:
            return {flag: first}
        last = first + (count - 1) * step
        if last > 65535:
            raise PlanRefused(
                f"--{flag}-port {first} with --cluster {nodes} needs ports up to "
                f"{last}, past 65535 (choose a lower --{flag}-port)"
            )
        return {f"{role or flag}-{i + 1}{suffix}": first + i * step for i in range(count)}

    ports: dict[str, int] = {}
    if embedded:
        ports.update(numbered("nats", args.nats_port, nodes))
        if nodes > 1:
            ports.update(numbered("cluster", args.cluster_port, nodes, "nats", " routes"))
    return {
        **ports,
        **numbered("ingest", args.ingest_port, copies, step=INGEST_PORT_STEP),
        **numbered("gateway", args.gateway_port, copies),
        "proxy": args.proxy_port,
    }


def find_port_conflict(host: str, ports: dict[str, int]) -> str | None:
    """The first port ``up`` could not bind, said for a human; None when all are free."""
    taken: dict[int, str] = {}
    for role, port in ports.items():
        if port in taken:
            return f"port {port} is given to both {taken[port]} and {role}"
        taken[port] = role
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )[0]
        except socket.gaierror as exc:
            return f"cannot resolve --host {host!r}: {exc}"
        with socket.socket(family, kind, proto) as probe:
            # As the servers do: a port in TIME_WAIT is free, one with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"port {port} ({role}) is already in use on {host}"
                return f"cannot bind port {port} ({role}) on {host}: {exc.strerror}"
    return None
