"""The gateway's Prometheus metrics, on the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge(
            "logstream_gateway_connections", "open SSE streams", registry=registry
        )
        self.records_read = Counter(
            "logstream_gateway_records_read",
            "records read from NATS by this process "
            "(one per record, however many connections receive it)",
            registry=registry,
        )
        self.frames_delivered = Counter(
            "logstream_gateway_frames_delivered",
            "record frames queued to connections",
            registry=registry,
        )
        self.loop_lag = Histogram(
            "logstream_gateway_loop_lag_seconds",
            "how late the event loop ran a timer (every "
            "connection waits that long): sampled a few times a second",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.interests = Gauge(
            "logstream_gateway_interests",
            "subject patterns this gateway subscribes to",
            registry=registry,
        )
        self.catch_ups = Gauge(
            "logstream_gateway_catch_ups",
            "times live records may have been missed (link down, "
            "buffer full) and were read from the stream instead",
            registry=registry,
        )
        self.repairs = Gauge(
            "logstream_gateway_repairs",
            "records found missing by their subject's sequence chain and read from the stream",
            registry=registry,
        )
        self.streams_ended = Counter(
            "logstream_gateway_streams_ended",
            "streams ended, by reason",
            ["reason"],
            registry=registry,
        )
        self.streams_refused = Counter(
            "logstream_gateway_streams_refused",
            "stream requests refused, by status",
            ["status"],
            registry=registry,
        )

        self.user_key_refreshes = Counter(
            "logstream_gateway_user_key_refreshes",
            "fetches of the JWKS (jwt_jwks_url), by trigger (schedule, unknown_kid) and "
            "outcome (ok, failed: the keys held are kept)",
            ["trigger", "outcome"],
            registry=registry,
        )
        self.user_key_refetches_limited = Counter(
            "logstream_gateway_user_key_refetches_limited",
            "tokens with an unknown kid refused without a fetch of the JWKS, "
            "one having been made under 10 s before (a flood of forged kids shows here)",
            registry=registry,
        )
        self.user_keys = Gauge(
            "logstream_gateway_user_keys",
            "user-token verification keys held",
            registry=registry,
        )
        self.user_keys_stale = Gauge(
            "logstream_gateway_user_keys_stale_seconds",
            "seconds since a JWKS refresh first failed with none succeeding since "
            "(0: the keys are fresh, or come from a secret or a file)",
            registry=registry,
        )

    def watch(self, hub) -> None:
        """Read the hub's own counters when scraped, instead of counting twice."""
        self.interests.set_function(lambda: hub.interests)
        self.catch_ups.set_function(lambda: hub.catch_ups)
        self.repairs.set_function(lambda: hub.repairs)
