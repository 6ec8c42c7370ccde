"""OTLP/HTTP logs (``POST /v1/logs``) from the real OpenTelemetry SDK and by hand, against the
real stack: what an exporter sends arrives on the SSE stream, and what is wrong is refused with
the status an exporter treats as permanent (nothing stored) or retryable.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging

import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceProto
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs import LoggingHandler as SdkLoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support.jetstream import stored
from tests.support.sse_client import open_stream

OTLP = "/v1/logs"
ETL = {"Authorization": "Bearer l5-etl-token"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}
READER = UserTokens(DEV_JWT_SECRET).issue_dev("user123")


def _stream_url(stack, channel: str) -> str:
    return f"{stack.gateway.url}/api/logs/stream?channels={channel}"


@pytest.fixture
def js(nc):
    return nc.jetstream()


@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
@pytest.mark.parametrize(
    "handler", [LoggingHandler, SdkLoggingHandler], ids=["instrumentation", "sdk"]
)
@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.NoCompression])
async def test_the_opentelemetry_sdk_logging_handler_reaches_the_stream(
    stack, unique_id, compression, handler
):
    channel = f"logs:etl:workspace123:otel-{unique_id}"
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "billing-etl", "logstream.channel": channel})
    )
    exporter = OTLPLogExporter(
        endpoint=stack.ingest.url + OTLP,
        headers={"Authorization": "Bearer l5-etl-token"},
        compression=compression,
    )
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = logging.getLogger(f"otel-{unique_id}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler(level=logging.DEBUG, logger_provider=provider))
    tracer = TracerProvider().get_tracer("test")
    async with open_stream(_stream_url(stack, channel), token=READER) as stream:
        await stream.next_of("connected")
        with tracer.start_as_current_span("load step") as span:
            logger.warning("rows skipped", extra={"rows": 3, "table": "orders"})
            trace_id = format(span.get_span_context().trace_id, "032x")
        logger.debug("done")
        assert provider.force_flush(10_000)
        first, second = await stream.logs(2)
    provider.shutdown()
    assert first["message"] == "rows skipped" and first["level"] == "warn"
    assert first["source"] == "billing-etl" and first["channel"] == channel
    assert first["fields"]["rows"] == 3 and first["fields"]["table"] == "orders"
    assert first["fields"]["trace_id"] == trace_id
    assert first["publisher"] == "l5-etl-token"
    assert second["message"] == "done" and second["level"] == "debug"
    assert "trace_id" not in second.get("fields", {})


def _any(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(string_value=value)


def _export(*records: LogRecord, resource: dict | None = None) -> ExportLogsServiceRequest:
    attributes = [KeyValue(key=k, value=_any(v)) for k, v in (resource or {}).items()]
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=ResourceProto(attributes=attributes),
                scope_logs=[ScopeLogs(log_records=list(records))],
            )
        ]
    )


def _record(message: str, channel: str | None = None, **kw) -> LogRecord:
    attributes = [KeyValue(key="logstream.channel", value=_any(channel))] if channel else []
    return LogRecord(body=_any(message), attributes=attributes, **kw)


def _subject(channel: str) -> str:
    return channel.replace(":", ".")


async def test_a_protobuf_export_maps_every_field_and_answers_the_otlp_response(
    stack, js, unique_id
):
    channel = f"logs:etl:ws-{unique_id}:run"
    export = _export(
        _record(
            "extract failed",
            severity_number=17,
            time_unix_nano=1_780_000_000_123_456_789,
            trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
            span_id=bytes.fromhex("b7ad6b7169203331"),
        ),
        _record("rows", severity_text="WARNING"),
        LogRecord(
            body=AnyValue(kvlist_value={"values": [KeyValue(key="n", value=_any(7))]}),
            attributes=[KeyValue(key="http.status_code", value=_any(500))],
        ),
        resource={"service.name": "etl-runner", "logstream.channel": channel, "k8s.pod": "p-1"},
    )
    answer = httpx.post(
        stack.ingest.url + OTLP,
        content=export.SerializeToString(),
        headers={**ETL, **PROTOBUF},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/x-protobuf")
    assert ExportLogsServiceResponse.FromString(answer.content) == ExportLogsServiceResponse()
    got = [r for _, _, r in await stored(js, _subject(channel))]
    assert [r["message"] for r in got] == ["extract failed", "rows", '{"n":7}']
    assert [r["level"] for r in got] == ["error", "warn", "info"]
    assert got[0]["timestamp"] == "2026-05-28T20:26:40.123456Z"
    assert got[0]["fields"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert got[0]["fields"]["span_id"] == "b7ad6b7169203331"
    assert got[0]["fields"]["k8s.pod"] == "p-1" and got[0]["source"] == "etl-runner"
    assert got[2]["fields"]["http.status_code"] == 500


async def test_an_otlp_json_export_with_hex_ids_gzip_and_basic_auth_is_stored(stack, js, unique_id):
    channel = f"logs:etl:ws-{unique_id}:json"
    document = {
        "resourceLogs": [
            {
                "resource": {"attributes": []},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1780000000000000000",
                                "severityNumber": 9,
                                "body": {"stringValue": "hello from json"},
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "attributes": [
                                    {"key": "logstream.channel", "value": {"stringValue": channel}}
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    basic = base64.b64encode(b"loki-user:l5-etl-token").decode()
    answer = httpx.post(
        stack.ingest.url + OTLP,
        content=gzip.compress(json.dumps(document).encode()),
        headers={
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {}
    (record,) = [r for _, _, r in await stored(js, _subject(channel))]
    assert record["message"] == "hello from json" and record["level"] == "info"
    assert record["fields"]["trace_id"] == "5b8efff798038103d269b633813fc60c"


async def test_a_retried_export_is_stored_once(stack, js, unique_id):
    channel = f"logs:etl:ws-{unique_id}:retry"
    body = _export(_record("a", channel), _record("b", channel)).SerializeToString()
    for _ in range(3):
        answer = httpx.post(stack.ingest.url + OTLP, content=body, headers={**ETL, **PROTOBUF})
        assert answer.status_code == 200, answer.text
    assert [r["message"] for _, _, r in await stored(js, _subject(channel))] == ["a", "b"]


async def test_a_record_without_a_channel_refuses_the_whole_export(stack, js, unique_id):
    channel = f"logs:etl:ws-{unique_id}:half"
    body = _export(_record("kept?", channel), _record("nowhere")).SerializeToString()
    answer = httpx.post(stack.ingest.url + OTLP, content=body, headers={**ETL, **PROTOBUF})
    assert answer.status_code == 400
    assert "logstream.channel" in Status.FromString(answer.content).message
    assert await stored(js, _subject(channel)) == []


@pytest.mark.parametrize(
    ("headers", "body", "status", "says"),
    [
        ({**ETL, "Content-Type": "text/plain"}, b"x", 415, "application/x-protobuf"),
        ({**ETL, **PROTOBUF}, b"\x0a\xff\xff\xff", 400, "not an OTLP"),
        ({**ETL, "Content-Type": "application/json"}, b"[1, 2]", 400, "not an OTLP"),
        ({**ETL, **PROTOBUF, "Content-Encoding": "br"}, b"x", 415, "gzip"),
        ({**PROTOBUF}, b"", 401, "token"),
        ({"Authorization": "Bearer wrong", **PROTOBUF}, b"", 401, "token"),
    ],
)
async def test_bad_exports_get_the_status_an_exporter_does_not_retry(
    stack, headers, body, status, says
):
    answer = httpx.post(stack.ingest.url + OTLP, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert says.lower() in _refusal_message(answer).lower()


def _refusal_message(answer: httpx.Response) -> str:
    """A refused protobuf export carries a google.rpc.Status (the OTLP/HTTP spec); anything else
    Logstream's JSON error body."""
    if answer.headers["content-type"].startswith("application/x-protobuf"):
        return Status.FromString(answer.content).message
    return answer.json()["message"]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({**ETL, **PROTOBUF}, 400, 3),  # INVALID_ARGUMENT
        ({"Authorization": "Bearer wrong", **PROTOBUF}, 401, 16),  # UNAUTHENTICATED
    ],
)
async def test_a_refused_protobuf_export_carries_an_otlp_status(stack, headers, status, code):
    answer = httpx.post(stack.ingest.url + OTLP, content=b"\x0a\xff\xff\xff", headers=headers)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("application/x-protobuf")
    refusal = Status.FromString(answer.content)
    assert refusal.code == code and refusal.message
    if status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"


async def test_a_channel_outside_the_tokens_grants_is_a_403_and_nothing_is_stored(
    stack, js, unique_id
):
    channel = f"logs:faas:ws-{unique_id}:fn"  # the etl token may publish only to logs:etl
    body = _export(_record("not mine", channel)).SerializeToString()
    answer = httpx.post(stack.ingest.url + OTLP, content=body, headers={**ETL, **PROTOBUF})
    assert answer.status_code == 403
    assert await stored(js, _subject(channel)) == []


async def test_an_export_past_the_batch_limit_is_a_413_and_nothing_is_stored(stack, js, unique_id):
    channel = f"logs:etl:ws-{unique_id}:big"
    records = [_record(f"r{n}", channel) for n in range(1001)]  # max_batch_records is 1,000
    body = _export(*records).SerializeToString()
    answer = httpx.post(stack.ingest.url + OTLP, content=body, headers={**ETL, **PROTOBUF})
    assert answer.status_code == 413
    assert "1000" in _refusal_message(answer).replace(",", "")
    assert await stored(js, _subject(channel)) == []
