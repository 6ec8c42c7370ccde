"""Prometheus metrics of the ingest service, registered on the app's own registry.

Every outcome of a publish request, over either transport, is counted here, so an operator sees
what was stored, what was refused and why, and how long JetStream took to confirm.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["HTTP", "NATS", "IngestMetrics"]

HTTP = "http"
NATS = "nats"
# OTLP/HTTP logs (POST /v1/logs)
OTLP = "otlp"
# the Loki push API (POST /loki/api/v1/push)
LOKI = "loki"
# JetStream confirms a local batch in about a millisecond; the top buckets show a struggling
# broker well before the publish timeout (2 s by default) turns it into a 503.
_PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class IngestMetrics:
    """The ingest service's counters and histogram (names prefixed ``logstream_ingest_``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records_accepted = Counter(
            "logstream_ingest_records_accepted",
            "Records stored in JetStream (confirmed), by transport.",
            ["transport"],
            registry=registry,
        )
        self.records_rejected = Counter(
            "logstream_ingest_records_rejected",
            "Records refused, by transport and reason (the error code); a request refused "
            "before its body was decoded counts as one.",
            ["transport", "reason"],
            registry=registry,
        )
        self.requests = Counter(
            "logstream_ingest_requests",
            "Publish requests (HTTP requests or NATS messages) by transport and status code.",
            ["transport", "status"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "logstream_ingest_publish_seconds",
            "Seconds from handing a batch to JetStream until every record was confirmed.",
            buckets=_PUBLISH_BUCKETS,
            registry=registry,
        )
        self.rejected_republished = Counter(
            "logstream_ingest_rejected_republished",
            "Rejected NATS messages without a reply subject, republished to ingest.rejected.",
            registry=registry,
        )
        self.tokens = Gauge(
            "logstream_ingest_service_tokens",
            "Service tokens currently accepted (after the last successful load).",
            registry=registry,
        )
        self.token_reloads = Counter(
            "logstream_ingest_token_reloads",
            "Token file reloads (SIGHUP) by outcome: ok, or failed (the old tokens stay).",
            ["outcome"],
            registry=registry,
        )

        self.atomic_refusals = Counter(
            "logstream_ingest_atomic_refusals",
            "Atomic batches JetStream refused as a whole (by its error code: 10201 a retried "
            "id still in the duplicate window, 10211 too many batches open, ...), whose "
            "records were then written one by one.",
            ["code"],
            registry=registry,
        )

    def atomic_refused(self, code: int) -> None:
        self.atomic_refusals.labels(str(code)).inc()

    def accepted(self, transport: str, records: int) -> None:
        self.records_accepted.labels(transport).inc(records)
        self.requests.labels(transport, "202").inc()

    def rejected(self, transport: str, status: int, reason: str, records: int) -> None:
        self.records_rejected.labels(transport, reason).inc(max(records, 1))
        self.requests.labels(transport, str(status)).inc()
