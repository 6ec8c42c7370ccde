"""``logstream up``: the whole local stack in one command (docs/reference/settings.md#processes-and-commands).

Starts the embedded ``nats-server`` (unless a broker URL is given), then ingest, gateway and
proxy, each its own process in dev mode as they are deployed, then the simulator; prints where
to look; on Ctrl-C or SIGTERM stops every child in reverse order (simulator, proxy, gateway,
ingest, broker) within 10 s.

``--cluster N`` runs the shape of several machines (docs/reference/settings.md#more-than-one-machine): N embedded nodes
forming one NATS cluster with clustered JetStream, the LOGS stream with N replicas, two ingests
(``--ingest-port`` and ten above it: a client spreads its publishes over both) and two gateways
behind the one proxy; every service is given every node's URL. While a majority of the nodes,
one ingest and one gateway still run, losing the others is reported and the stack carries on,
as it would across machines; anything more stops it all.

Each child runs in its own process group, so a terminal's Ctrl-C reaches only ``up``, which then
stops them in that order instead of all at once; and on Linux each child is told to die with
``up`` (``PR_SET_PDEATHSIG``), so none survives even if ``up`` itself is killed outright.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from logstream.children import Child, ConsoleEcho, child_options, stop_together
from logstream.shared.embedded_nats import CLUSTER_NAME, EmbeddedCluster, EmbeddedNats
from logstream.shared.identities import DEV_JWT_SECRET, DEV_NATS_PRODUCER, DEV_USER_TOKEN_TTL_S
from logstream.shared.nats_names import INGEST_SUBJECT, inbox_prefix, redact_url
from logstream.shared.user_tokens import UserTokens
from logstream.up_plan import (
    Plan,
    PlanRefused,
    add_arguments,
    find_port_conflict,
    make_plan,
)

__all__ = ["add_arguments", "run"]

# A service imports litestar, faststream and nats-py before it listens: 1-2 s when healthy,
# much longer on a busy 2-core laptop. Past this, something is wrong rather than slow.
READY_TIMEOUT_S = 45.0
# docs/reference/settings.md#processes-and-commands: every child gone within 10 s of Ctrl-C; 8 s leaves room for the final SIGKILLs.
STOP_BUDGET_S = 8.0
# One child that ignores SIGTERM must not use up the whole budget of the ones after it.
CHILD_STOP_S = 4.0
# How often `up` looks at its children: fast enough that a crash is reported at once.
POLL_S = 0.1
# The seed data's channel, user and token: what the banner's examples and the simulator use.
DEMO_CHANNEL = "logs:etl:workspace123:workflow456"
DEMO_USER = "user123"
DEMO_SERVICE_TOKEN = "l5-etl-token"


class StartFailed(Exception):
    def __init__(self, message: str, child: Child | None = None) -> None:
        super().__init__(message)
        self.child = child


class StopRequest:
    """SIGINT, SIGTERM and SIGHUP only note the request; the main loop acts on it."""

    def __init__(self) -> None:
        self.signum: int | None = None
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._note)

    def _note(self, signum: int, _frame) -> None:
        self.signum = self.signum or signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


class Interrupted(Exception):
    """A stop was requested while the stack was still starting."""


class LocalStack:
    """The children of one ``up``, started in dependency order and stopped in reverse."""

    def __init__(self, plan: Plan, stop: StopRequest) -> None:
        self.plan, self.stop_request = plan, stop
        self.children: list[Child] = []
        self.began = time.monotonic()
        self.monitor_url: str | None = None  # the embedded broker's, once it runs

    def start(self) -> None:
        try:
            self.plan.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartFailed(f"cannot use data dir {self.plan.data_dir}: {exc}") from None
        if self.plan.nats_url is None and self.plan.clustered:
            self._start_cluster()
        elif self.plan.nats_url is None:
            self._start_broker()
        # All load at once (most of their start is importing); ready in dependency order:
        # ingest creates the LOGS stream the gateways read, the proxy needs a gateway. A second
        # ingest starts once the first is ready: two creating a replicated stream at once on a
        # cluster that has just formed can time out, and an ingest exits on that.
        replicas = ["--stream-replicas", str(self.plan.nodes)] if self.plan.clustered else []
        first_ingest, *more_ingests = self.plan.roles("ingest")
        services = [self._spawn_service(first_ingest, "ingest", *replicas)]
        services += [self._spawn_service(role, "gateway") for role in self.plan.roles("gateway")]
        services.append(
            self._spawn_service("proxy", "proxy", "--gateway-url", self.plan.gateway_urls)
        )
        self._wait_ready(services[0])
        services += [self._spawn_service(role, "ingest", *replicas) for role in more_ingests]
        for service in services[1:]:
            self._wait_ready(service)
        if self.plan.simulator:
            self._spawn(
                "simulator",
                [
                    sys.executable,
                    "-m",
                    "logstream",
                    "simulate",
                    "continuous",
                    "0",
                    "--rate",
                    f"{self.plan.rate:g}",
                    "--ingest-url",
                    self.plan.url(self.plan.roles("ingest")[0]),
                ],
            )

    def _start_broker(self) -> None:
        plan, log_path = self.plan, self.plan.log_dir / "nats.log"
        broker = EmbeddedNats(
            port=plan.ports["nats"],
            store_dir=plan.data_dir / "nats",
            sync_always=plan.sync_always,
            host=plan.host,
            # Its monitoring endpoint, where the services read the broker's durability from;
            # any free port on loopback (nothing else uses it).
            monitor_port=_free_loopback_port(),
        )
        with open(log_path, "wb") as log_file:
            try:
                broker.start(log_file=log_file, **child_options())
            except (RuntimeError, OSError) as exc:
                failed = Child("nats", broker.process, log_path) if broker.process else None
                if failed:
                    self.children.append(failed)
                raise StartFailed(f"nats-server did not start: {exc}", failed) from None
        assert broker.process is not None  # start() returned: it launched the server
        self.children.append(Child("nats", broker.process, log_path))
        self.monitor_url = broker.monitor_url
        _say(f"  nats       listening on {plan.broker_url} (store {plan.data_dir / 'nats'})")

    def _start_cluster(self) -> None:
        plan, roles = self.plan, self.plan.roles("nats")
        cluster = EmbeddedCluster(
            ports=[plan.ports[role] for role in roles],
            cluster_ports=[plan.ports[f"{role} routes"] for role in roles],
            store_dir=plan.data_dir / "nats-cluster",
            sync_always=plan.sync_always,
            host=plan.host,
        )
        for node in cluster.nodes:
            name = node.server_name
            assert name is not None  # EmbeddedCluster names every node
            log_path = plan.log_dir / f"{name}.log"
            with open(log_path, "wb") as log_file:
                try:
                    node.start(log_file=log_file, **child_options())
                except (RuntimeError, OSError) as exc:
                    failed = Child(name, node.process, log_path) if node.process else None
                    raise StartFailed(f"{name} did not start: {exc}", failed) from None
            assert node.process is not None  # start() returned: it launched the server
            self.children.append(Child(name, node.process, log_path))
            _say(
                f"  {name:<10} listening on {node.url} (routes on port "
                f"{node.cluster_port}, store {node.store_dir})"
            )
        try:
            formed = cluster.wait_for_jetstream(
                READY_TIMEOUT_S, abandon=lambda: self.stop_request.requested
            )
        except RuntimeError as exc:
            dead = next((c for c in self.children if c.process.poll() is not None), None)
            raise StartFailed(f"the NATS cluster did not form: {exc}", dead) from None
        if not formed:
            raise Interrupted
        _say(
            f"  JetStream  clustered over {plan.nodes} nodes ({time.monotonic() - self.began:.1f}s)"
        )

    def _spawn_service(self, role: str, service: str, *extra: str) -> Child:
        command = [
            sys.executable,
            "-m",
            "logstream",
            service,
            "--dev",
            "--host",
            self.plan.host,
            "--port",
            str(self.plan.ports[role]),
            "--nats-url",
            self.plan.broker_url,
            *(["--nats-monitor-url", self.monitor_url] if self.monitor_url else []),
            *extra,
        ]
        return self._spawn(role, command)

    def _spawn(self, name: str, command: list[str]) -> Child:
        log_path = self.plan.log_dir / f"{name}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                **child_options(),
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def _wait_ready(self, child: Child) -> None:
        url = self.plan.url(child.name)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.stop_request.requested:
                raise Interrupted
            code = child.process.poll()
            if code is not None:
                raise StartFailed(
                    f"{child.name} exited with code {code} before it was ready", child
                )
            if _answers_ready(url + "/ready"):
                _say(f"  {child.name:<10} ready on {url} ({time.monotonic() - self.began:.1f}s)")
                return
            time.sleep(POLL_S)
        raise StartFailed(
            f"{child.name} was not ready within {READY_TIMEOUT_S:g}s (GET {url}/ready)", child
        )

    def watch(self) -> int:
        """Until a stop is requested (0) or a child dies that the stack cannot do without (1)."""
        lost: set[str] = set()
        while not self.stop_request.requested:
            for child in self.children:
                code = child.process.poll()
                if code is None or child.name in lost:
                    continue
                carrying_on = self._carries_on_without(child)
                if carrying_on is None:
                    _complain(f"{child.name} exited with code {code}; stopping the others", child)
                    return 1
                lost.add(child.name)
                _complain(f"{child.name} exited with code {code}; {carrying_on}")
            time.sleep(POLL_S)
        return 0

    def _carries_on_without(self, child: Child) -> str | None:
        """Why the stack can go on without this dead child, or None when it cannot."""
        kind = _kind(child.name)
        if not self.plan.clustered or kind not in ("nats", "ingest", "gateway"):
            return None
        siblings = [other for other in self.children if _kind(other.name) == kind]
        running = sum(other.process.poll() is None for other in siblings)
        if kind == "nats" and running > len(siblings) // 2:
            return f"{running} of {len(siblings)} nodes still run, a JetStream quorum: carrying on"
        if kind == "gateway" and running:
            return f"{running} of {len(siblings)} gateways still serve the proxy: carrying on"
        if kind == "ingest" and running:
            return f"{running} of {len(siblings)} ingests still take publishes: carrying on"
        return None

    def stop(self) -> None:
        running = [child.name for child in reversed(self.children) if child.process.poll() is None]
        if not running:
            return
        _say("logstream up: stopping " + ", ".join(running))
        began = time.monotonic()
        kinds = list(dict.fromkeys(_kind(child.name) for child in self.children))
        for kind in reversed(kinds):  # each kind together: a cluster's nodes, its gateways
            budget = STOP_BUDGET_S - (time.monotonic() - began)
            same = [child for child in self.children if _kind(child.name) == kind]
            for name in stop_together(same, min(CHILD_STOP_S, budget)):
                _say(f"  {name} did not stop on SIGTERM in time; killed it")
        _say(f"logstream up: stopped in {time.monotonic() - began:.1f}s")


def _kind(role: str) -> str:
    """``gateway-2`` -> ``gateway``: what a child is, whichever of several it is."""
    return role.rsplit("-", 1)[0] if role[-1:].isdigit() else role


# A user's http_proxy must not route the readiness probes of local services.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers_ready(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=1) as response:
            return response.status == 200
    except OSError:  # refused, timed out, or an HTTP error status such as 503
        return False


def banner(plan: Plan) -> str:
    token = UserTokens(DEV_JWT_SECRET).issue_dev(DEMO_USER)
    workspace, workflow = DEMO_CHANNEL.split(":")[2:]
    proxy, ingest = plan.url("proxy"), plan.url(plan.roles("ingest")[0])
    gateway = plan.url(plan.roles("gateway")[0])
    record = json.dumps({"channel": DEMO_CHANNEL, "message": "hello from curl"})
    where = f"{plan.data_dir}" + (" (ephemeral: removed at exit)" if plan.ephemeral else "")
    return "\n".join(
        [
            "",
            "Logstream is up (dev mode: built-in identities, not for production).",
            f"  Logs page:   {proxy}/",
            f"  Direct SSE ({DEMO_USER}'s dev token, valid {DEV_USER_TOKEN_TTL_S / 3600:g} h):",
            f"    curl -N '{gateway}/api/logs/stream?channels={DEMO_CHANNEL}&access_token={token}'",
            "  Through the proxy:",
            f"    curl -N -H 'Authorization: Bearer {token}' "
            f"'{proxy}/api/dapadmin/l5-etl/sse/logs/stream?workspace_id={workspace}"
            f"&workflow_id={workflow}'",
            "  Publish a record:",
            f"    curl -X POST {ingest}/api/logs/publish -H 'Authorization: Bearer "
            f"{DEMO_SERVICE_TOKEN}' -H 'Content-Type: application/json' -d '{record}'",
            *_broker_lines(plan),
            durability_line(plan),
            f"  Data dir:    {where}",
            f"  Logs:        {plan.log_dir}/<service>.log (warnings and errors also shown here)",
            "Ctrl-C to stop.",
        ]
    )


def _broker_lines(plan: Plan) -> list[str]:
    if plan.nats_url:  # its own users: whatever credentials the URL carries
        return [f"  Broker:      {redact_url(plan.broker_url)}"]
    first_node = f"{plan.url_host}:{plan.ports[plan.roles('nats')[0]]}"
    producer = [
        f"  NATS producers: nats://{':'.join(DEV_NATS_PRODUCER)}@{first_node}, inbox "
        f"prefix {inbox_prefix('producer')} (may publish to {INGEST_SUBJECT} only)"
    ]
    if not plan.clustered:
        return [f"  Broker:      {plan.broker_url}", *producer]
    lines = [
        f"  Broker:      NATS cluster {CLUSTER_NAME!r} of {plan.nodes} nodes, JetStream "
        f"stream LOGS with {plan.nodes} replicas"
    ]
    lines += [
        f"    {role:<11}nats://{plan.url_host}:{plan.ports[role]} (routes on port "
        f"{plan.ports[role + ' routes']})"
        for role in plan.roles("nats")
    ]
    lines.append(
        f"  Ingests:     {plan.copies('ingest')} (publish to either; a client retries on the other)"
    )
    lines += [f"    {role:<11}{plan.url(role)}" for role in plan.roles("ingest")]
    lines.append(f"  Gateways:    {plan.copies('gateway')}, behind the proxy")
    lines += [f"    {role:<11}{plan.url(role)}" for role in plan.roles("gateway")]
    return lines + producer


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def durability_line(plan: Plan) -> str:
    """What a 202 survives with this plan's broker, said at start."""
    if plan.nats_url:
        return "  Durability:  as your broker gives it (GET /ready on ingest says which)"
    if plan.clustered:
        return (
            f"  Durability:  replicated: a record is acknowledged once {plan.nodes // 2 + 1} "
            f"of {plan.nodes} nodes hold it"
        )
    if plan.sync_always:
        return (
            "  Durability:  fsync: the broker syncs every batch to disk before ingest answers 202"
        )
    return (
        "  Durability:  lazy (development): the broker syncs every 2 minutes, so a power "
        "failure loses what was acknowledged since; --sync-always for fsync"
    )


def _say(text: str) -> None:
    print(text, flush=True)


def _complain(text: str, child: Child | None = None) -> None:
    print(f"logstream up: {text}", file=sys.stderr, flush=True)
    if child is not None:
        print(
            f"--- last lines of {child.log_path} ---\n{child.tail()}\n---",
            file=sys.stderr,
            flush=True,
        )


def run(args: argparse.Namespace) -> int:
    try:
        plan = make_plan(args)
    except PlanRefused as exc:
        _complain(str(exc))
        return 2
    if plan.nodes == 2:
        _say(
            "logstream up: note: 2 nodes are not fault tolerant (JetStream's quorum is 2 of "
            "2); --cluster 3 survives the loss of one"
        )
    stack = LocalStack(plan, StopRequest())
    echo = ConsoleEcho(stack.children)
    try:
        conflict = find_port_conflict(plan.host, plan.ports)
        if conflict:
            _complain(conflict + " (choose other ports: see logstream up --help)")
            return 1
        if plan.sync_always and plan.nats_url:
            _say("logstream up: --sync-always applies to the embedded broker only; ignored")
        _say(f"logstream up: starting in {plan.data_dir}")
        stack.start()
        echo.start()  # after every spawn: no other thread runs while `preexec_fn` forks
        _say(banner(plan))
        return stack.watch()
    except StartFailed as exc:
        _complain(str(exc), exc.child)
        return 1
    except Interrupted:
        return 0
    finally:
        stack.stop()
        if echo.is_alive():
            echo.done.set()
            echo.join(1.0)
        if plan.ephemeral:
            shutil.rmtree(plan.data_dir, ignore_errors=True)
