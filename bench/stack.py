"""The Logstream side: an embedded nats-server, ingest and N gateways, as separate processes.

Started the way the test suite starts them (``logstream.shared.embedded_nats.EmbeddedNats`` and
``tests.support.processes.ServiceProcess``), in dev mode, on free ports, logging to a temp dir.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from bench.credentials import user_token
from bench.publishers import IngestHttpPublisher, JetStreamPublisher
from logstream.shared.channels import parse_channel, to_subject
from logstream.shared.embedded_nats import EmbeddedNats
from tests.support.nats_source import free_port
from tests.support.processes import ServiceProcess

__all__ = ["LogstreamStack", "LogstreamSystem"]

# Services log warnings only: per-connection info lines would cost the gateway CPU mid-case.
_QUIET = ["--log-level", "warning"]
# The bench opens thousands of streams as one dev user.
_MANY_STREAMS = ["--max-connections-per-user", "1000000"]
READY_TIMEOUT_S = 60.0


def _started(service: ServiceProcess | None) -> ServiceProcess:
    assert service is not None, "LogstreamStack.start() starts it"
    return service


def _pid(server: ServiceProcess | EmbeddedNats) -> int:
    assert server.process is not None, "LogstreamStack.start() starts it"
    return server.process.pid


class LogstreamStack:
    def __init__(self, workdir: Path, gateways: int = 2, *, sync_always: bool = False) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # With its monitoring endpoint, which the services are given as deployed: ingest reads
        # the broker's durability there and, when it is fsync, writes atomic batches.
        self.broker = EmbeddedNats(
            port=free_port(),
            store_dir=self.workdir / "nats",
            sync_always=sync_always,
            monitor_port=free_port(),
        )
        self.ingest: ServiceProcess | None = None
        self.proxy: ServiceProcess | None = None
        self.gateways: list[ServiceProcess] = []
        self._gateway_count = gateways

    def start(self) -> LogstreamStack:
        self.broker.start()
        self.ingest = self._service("ingest", [])
        for _ in range(self._gateway_count):
            self.gateways.append(self._service("gateway", _MANY_STREAMS))
        if self.gateways:  # the proxy in front of the first gateway, as browsers reach it
            self.proxy = self._service("proxy", ["--gateway-url", self.gateways[0].url])
        return self

    def _service(self, name: str, args: list[str]) -> ServiceProcess:
        monitor = self.broker.monitor_url
        assert monitor is not None
        service = ServiceProcess(
            name,
            nats_url=self.broker.url,
            log_dir=self.workdir,
            args=[*_QUIET, "--nats-monitor-url", monitor, *args],
        ).start()
        service.wait_ready(READY_TIMEOUT_S)
        return service

    def restart_gateway(self, index: int = 0, *, kill: bool = False) -> tuple[int, int]:
        """Stop gateway ``index`` (SIGTERM, as a deploy does, or SIGKILL with ``kill``) and
        start it again with the same arguments on the same port; returns when its ``/ready``
        answers 200. (stopped, ready): ``time.monotonic_ns()`` when it had exited and when it
        was ready again. Blocks: call it in a thread from async code."""
        gateway = self.gateways[index]
        if kill:
            gateway.kill()
        else:
            gateway.stop()
        stopped = time.monotonic_ns()
        log = getattr(gateway, "_log", None)  # the log file handle of the process that ended
        if log is not None:
            log.close()
        gateway.start(wait=False)
        gateway.wait_ready(READY_TIMEOUT_S)
        return stopped, time.monotonic_ns()

    def stop(self) -> None:
        for service in [self.proxy, *self.gateways, self.ingest]:
            if service is not None:
                service.stop()
        self.broker.stop()


class LogstreamSystem:
    """The first ``gateways`` gateways of a stack, as a system under test; streams are spread
    over them round-robin, each gateway on its own port (no proxy in between)."""

    def __init__(
        self,
        stack: LogstreamStack,
        gateways: int = 1,
        *,
        via_ingest: bool = False,
        via_proxy: bool = False,
    ) -> None:
        self.stack = stack
        self.gateways = stack.gateways[:gateways]
        self.via_ingest, self.via_proxy = via_ingest, via_proxy
        self.name = (
            f"Logstream {gateways} gateway"
            + ("s" if gateways > 1 else "")
            + (", via HTTP ingest" if via_ingest else "")
            + (", read through the proxy" if via_proxy else "")
        )
        self._token = user_token()

    def targets(self, channel: str, *, last_event_id: int | None = None):
        resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        head = (
            f"HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self._token}\r\n"
            f"Accept: text/event-stream\r\n{resume}\r\n"
        )
        if self.via_proxy:  # the proxy's ETL route: logs:etl:<workspace_id>:<workflow_id>
            _, _, workspace, workflow = channel.split(":")
            path = (
                f"/api/dapadmin/l5-etl/sse/logs/stream?workspace_id={workspace}"
                f"&workflow_id={workflow}"
            )
            proxy = _started(self.stack.proxy)
            return [("127.0.0.1", proxy.port, f"GET {path} {head}".encode())]
        request = f"GET /api/logs/stream?channels={channel} {head}".encode()
        return [("127.0.0.1", gateway.port, request) for gateway in self.gateways]

    def server_pids(self) -> dict[str, list[int]]:
        pids = {
            "gateway": [_pid(g) for g in self.gateways],
            "nats-server": [_pid(self.stack.broker)],
        }
        if self.via_ingest:
            pids["ingest"] = [_pid(_started(self.stack.ingest))]
        if self.via_proxy:
            pids["proxy"] = [_pid(_started(self.stack.proxy))]
        return pids

    async def publisher(self, channel: str):
        """Through HTTP ingest if ``via_ingest``; else straight to JetStream ``logs.<...>`` as
        the ingest NATS user (the gateway's fan-out is what is measured, not ingest)."""
        if self.via_ingest:
            return await IngestHttpPublisher.connect(
                _started(self.stack.ingest).port, channel, uuid.uuid4().hex[:8]
            )
        return await JetStreamPublisher.connect(self.stack.broker.url, channel)

    @staticmethod
    def subject(channel: str) -> str:
        return to_subject(parse_channel(channel))
