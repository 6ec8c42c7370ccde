"""services/ingest/otlp.py: an OTLP export's log records as Logstream records (the real SDK and
ingest are driven in tests/integration/test_ingest_otlp.py), and the Basic credential."""

from __future__ import annotations

import base64
import json

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from logstream.services.ingest.otlp import JSON, PROTOBUF, otlp_media_type, otlp_records
from logstream.shared.errors import InvalidRequest, UnsupportedMediaType
from logstream.shared.identities import basic_password, service_credential

CHANNEL = KeyValue(key="logstream.channel", value=AnyValue(string_value="logs:etl:ws:wf"))


def _body(*records: LogRecord) -> bytes:
    export = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=list(records))])]
    )
    return export.SerializeToString()


def _one(**kw) -> dict:
    (record,) = otlp_records(_body(LogRecord(attributes=[CHANNEL], **kw)), PROTOBUF)
    return record


@pytest.mark.parametrize(
    ("number", "text", "level"),
    [
        (1, "", "trace"),
        (4, "", "trace"),
        (5, "", "debug"),
        (9, "", "info"),
        (12, "", "info"),
        (13, "", "warn"),
        (17, "", "error"),
        (21, "", "fatal"),
        (24, "", "fatal"),
        (0, "WARNING", "warn"),
        (0, "Critical", "fatal"),
        (0, "error", "error"),
        (0, "", "info"),
        (0, "verbose", "info"),  # a name Logstream does not know: not a refusal
        (9, "ERROR", "info"),  # the number decides when there is one
    ],
)
def test_severity_becomes_a_level(number, text, level):
    assert _one(severity_number=number, severity_text=text)["level"] == level


def test_the_timestamp_is_the_event_time_else_the_observed_time_else_none():
    assert _one(time_unix_nano=1_500, observed_time_unix_nano=9)["timestamp"] == (
        "1970-01-01T00:00:00.000001500Z"
    )
    assert _one(observed_time_unix_nano=2_000_000_000)["timestamp"].startswith(
        "1970-01-01T00:00:02.0"
    )
    assert "timestamp" not in _one()


def test_a_body_that_is_not_a_string_is_its_json_text():
    array = AnyValue(
        array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(bool_value=True)])
    )
    assert _one(body=array)["message"] == "[1,true]"
    assert _one(body=AnyValue(string_value="plain"))["message"] == "plain"


def test_each_record_gets_an_id_from_the_request_and_its_place():
    body = _body(LogRecord(attributes=[CHANNEL]), LogRecord(attributes=[CHANNEL]))
    first, second = otlp_records(body, PROTOBUF)
    assert first["id"] != second["id"]
    assert [r["id"] for r in otlp_records(body, PROTOBUF)] == [first["id"], second["id"]]
    other = _body(LogRecord(attributes=[CHANNEL], body=AnyValue(string_value="x")))
    assert otlp_records(other, PROTOBUF)[0]["id"] != first["id"]


def test_records_without_a_channel_are_named_by_index():
    body = _body(LogRecord(attributes=[CHANNEL]), LogRecord(), LogRecord())
    with pytest.raises(InvalidRequest) as refused:
        otlp_records(body, PROTOBUF)
    assert [d["index"] for d in refused.value.details] == [1, 2]


def test_an_otlp_json_id_that_is_not_hex_is_a_400():
    document = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz-not-hex"}]}]}]}
    with pytest.raises(InvalidRequest, match="traceId"):
        otlp_records(json.dumps(document).encode(), JSON)


@pytest.mark.parametrize("body", [b"", b"{}", b'{"resourceLogs": []}'])
def test_an_export_with_no_log_records_is_a_400(body):
    with pytest.raises(InvalidRequest, match="no log records"):
        otlp_records(body, JSON if body else PROTOBUF)


def test_only_protobuf_and_json_are_taken():
    assert otlp_media_type("application/x-protobuf") == PROTOBUF
    assert otlp_media_type("application/json; charset=utf-8") == JSON
    with pytest.raises(UnsupportedMediaType):
        otlp_media_type("application/grpc")


def _basic(user_password: bytes) -> str:
    return "Basic " + base64.b64encode(user_password).decode()


def test_basic_auth_carries_the_service_token_as_its_password():
    assert basic_password(_basic(b"loki:l5-etl-token")) == "l5-etl-token"
    assert basic_password(_basic(b":tok:en")) == "tok:en"
    assert basic_password(_basic(b"no-colon")) is None
    assert basic_password(_basic(b"user:")) is None
    assert basic_password("Basic !!!not-base64") is None
    assert basic_password("Bearer abc") is None
    assert service_credential("Bearer abc", "header") == "abc"
    assert service_credential(_basic(b"u:abc"), "header") == "abc"
    assert service_credential("Digest x", "header") == "header"
    assert service_credential(None, None) is None
