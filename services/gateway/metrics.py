"""The gateway's Prometheus metrics, on the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge("logstream_gateway_connections", "open SSE streams",
                                 registry=registry)
        self.records_read = Counter(
            "logstream_gateway_records_read", "records read from NATS by this process "
            "(one per record, however many connections receive it)", registry=registry)
        self.frames_delivered = Counter(
            "logstream_gateway_frames_delivered", "record frames queued to connections",
            registry=registry)
        self.follow_rebuilds = Counter(
            "logstream_gateway_follow_rebuilds", "times the hub's consumer was rebuilt",
            registry=registry)
        self.streams_ended = Counter(
            "logstream_gateway_streams_ended", "streams ended, by reason", ["reason"],
            registry=registry)
        self.streams_refused = Counter(
            "logstream_gateway_streams_refused", "stream requests refused, by status",
            ["status"], registry=registry)
