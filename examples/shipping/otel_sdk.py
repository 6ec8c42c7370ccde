"""The OpenTelemetry Python SDK -> Logstream ingest (``POST /v1/logs``), as docs/shipping.md
describes: Python's ``logging`` through the SDK's OTLP/HTTP log exporter (protobuf, gzip,
``Authorization: Bearer``). The channel is the resource attribute ``logstream.channel``.

    provider = logstream_logging(
        "http://ingest.example.internal:3001", os.environ["LOGSTREAM_TOKEN"],
        channel="logs:etl:workspace123:nightly-import", service_name="nightly-import",
    )
    ...
    provider.shutdown()  # flushes what is still batched

Checked by tests/integration/test_ingest_otlp.py and tests/integration/
test_shipping_recipes.py.
"""

from __future__ import annotations

import logging

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

try:  # the handler's new home (opentelemetry-instrumentation-logging)
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
except ImportError:  # older SDKs: the SDK's own handler
    from opentelemetry.sdk._logs import LoggingHandler  # type: ignore[assignment]


def logstream_exporter(ingest_url: str, token: str) -> OTLPLogExporter:
    """The OTLP/HTTP exporter as ingest takes it: protobuf to /v1/logs, gzip, Bearer token."""
    return OTLPLogExporter(
        endpoint=ingest_url.rstrip("/") + "/v1/logs",
        headers={"Authorization": f"Bearer {token}"},
        compression=Compression.Gzip,
    )


def logstream_logging(
    ingest_url: str,
    token: str,
    *,
    channel: str,
    service_name: str,
    logger: logging.Logger | None = None,
    level: int = logging.INFO,
) -> LoggerProvider:
    """Send ``logger``'s records (the root logger's by default) to ingest's OTLP route."""
    provider = LoggerProvider(
        resource=Resource.create({"service.name": service_name, "logstream.channel": channel})
    )
    # at most 512 records per export by default: under ingest's max_batch_records (1,000)
    provider.add_log_record_processor(
        BatchLogRecordProcessor(logstream_exporter(ingest_url, token))
    )
    target = logger or logging.getLogger()
    target.setLevel(level)
    target.addHandler(LoggingHandler(level=level, logger_provider=provider))
    return provider
