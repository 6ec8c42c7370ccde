"""OTLP/HTTP logs (``POST /v1/logs``): what an OpenTelemetry SDK or Collector exports, as records.

The body is an ``ExportLogsServiceRequest``, protobuf (``application/x-protobuf``) or OTLP/JSON
(``application/json``), compressed or not (``content_coding``). Each log record becomes one
Logstream record, which then goes through the same checks, grants, limits and store as a native
batch (all or nothing):

- ``channel``: the record's attribute ``logstream.channel``, else its resource's, else the first
  channel mapping rule that matches its attributes (``channel_rules``); a record with none is
  refused (400 naming it);
- ``message``: the body; a string as it is, any other value as its JSON text;
- ``level``: from ``severity_number`` (1-4 trace, 5-8 debug, 9-12 info, 13-16 warn, 17-20 error,
  21-24 fatal), else ``severity_text`` (a level name Logstream knows), else info;
- ``timestamp``: ``time_unix_nano``, else ``observed_time_unix_nano``, else the receipt time;
- ``source``: the resource's ``service.name``;
- ``fields``: every other resource and record attribute (dotted keys kept), and ``trace_id`` /
  ``span_id`` as hex;
- ``id``: derived from the request's content and the record's place in it, so an exporter that
  retries the same request has it stored once (ingest's duplicate window).

A refusal of a protobuf export carries a protobuf ``google.rpc.Status`` body, as the OTLP/HTTP
specification requires of a binary-encoded request (the status code and headers are those of
every ingest route); an OTLP/JSON export's refusal is Logstream's JSON error body.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from logstream.services.ingest.channel_rules import ChannelRules
from logstream.services.ingest.foreign import id_maker, level_named, timestamp_from_nanos
from logstream.shared.errors import InvalidRequest, UnsupportedMediaType

__all__ = [
    "CHANNEL_ATTRIBUTE",
    "MEDIA_TYPES",
    "OTLP_PATH",
    "PROTOBUF",
    "empty_response",
    "otlp_media_type",
    "otlp_records",
    "status_body",
]

OTLP_PATH = "/v1/logs"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MEDIA_TYPES = (PROTOBUF, JSON)
CHANNEL_ATTRIBUTE = "logstream.channel"
SOURCE_ATTRIBUTE = "service.name"
# severity_number / 4, rounded up: 1-4 trace ... 21-24 fatal (the OpenTelemetry log data model)
_BY_SEVERITY = ("trace", "debug", "info", "warn", "error", "fatal")


def otlp_media_type(content_type: str | None) -> str:
    """``application/x-protobuf`` or ``application/json`` (parameters ignored); else 415."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in MEDIA_TYPES:
        shown = repr(content_type[:80]) if content_type else "none"
        raise UnsupportedMediaType(
            f"content type {shown} is not accepted on {OTLP_PATH}; send {PROTOBUF} or {JSON}"
        )
    return media_type


# The gRPC code an OTLP Status carries for each refusal's HTTP status (the OTLP/HTTP spec's
# failure body; a client reads the HTTP status for what to retry, the Status for why).
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 413: 8, 415: 3, 429: 8, 431: 3, 503: 14}
_GRPC_INTERNAL = 13


def status_body(status: int, message: str) -> bytes:
    """A refusal as OTLP/HTTP says a protobuf client gets it: a ``google.rpc.Status``."""
    code = _GRPC_CODES.get(status, _GRPC_INTERNAL)
    return Status(code=code, message=message).SerializeToString()


def empty_response(media_type: str) -> bytes:
    """The OTLP answer to an export stored in full: no partial success to report."""
    if media_type == PROTOBUF:
        return ExportLogsServiceResponse().SerializeToString()
    return b"{}"


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP/JSON spells traceId and spanId in hex; protobuf's JSON mapping wants base64."""
    if isinstance(node, dict):
        for key in ("traceId", "spanId", "trace_id", "span_id"):
            value = node.get(key)
            if isinstance(value, str) and value:
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise InvalidRequest(f"{key} {value[:40]!r} is not hex") from None
        for value in node.values():
            _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for value in node:
            _hex_ids_to_base64(value)


def _decode(body: bytes, media_type: str) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    if media_type == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise InvalidRequest(f"body is not an OTLP ExportLogsServiceRequest: {exc}") from None
        return request
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRequest("body is not an OTLP/JSON ExportLogsServiceRequest object")
    _hex_ids_to_base64(document)
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidRequest(f"body is not an OTLP/JSON ExportLogsServiceRequest: {exc}") from None
    return request


def _value(value: AnyValue) -> Any:
    """An OTLP AnyValue as plain JSON data (bytes as base64)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _level(number: int, text: str) -> str:
    if 1 <= number <= 24:
        return _BY_SEVERITY[(number - 1) // 4]
    return level_named(text)


def _message(body: AnyValue) -> str:
    kind = body.WhichOneof("value")
    if kind == "string_value":
        return body.string_value
    if kind is None:
        return ""
    return json.dumps(_value(body), separators=(",", ":"), ensure_ascii=False)


def otlp_records(
    body: bytes, media_type: str, rules: ChannelRules | None = None
) -> list[dict[str, Any]]:
    """Logstream records (as a native batch holds them) for every log record in the export;
    400 for a body that is not an export, or records with no channel (explicit, or by a
    mapping rule)."""
    request = _decode(body, media_type)
    make_id = id_maker("otlp", body)
    records: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    for resource_logs in request.resource_logs:
        resource = _attributes(resource_logs.resource.attributes)
        resource_channel = resource.pop(CHANNEL_ATTRIBUTE, None)
        source = resource.pop(SOURCE_ATTRIBUTE, None)
        for scope_logs in resource_logs.scope_logs:
            for log in scope_logs.log_records:
                attributes = _attributes(log.attributes)
                channel = attributes.pop(CHANNEL_ATTRIBUTE, None) or resource_channel
                index = len(records)
                fields = {**resource, **attributes}
                if not channel and rules:
                    channel = rules.channel({SOURCE_ATTRIBUTE: source, **fields})
                if log.trace_id:
                    fields["trace_id"] = log.trace_id.hex()
                if log.span_id:
                    fields["span_id"] = log.span_id.hex()
                record: dict[str, Any] = {
                    "channel": channel if isinstance(channel, str) else "",
                    "message": _message(log.body),
                    "level": _level(log.severity_number, log.severity_text),
                    "id": make_id(index),
                }
                timestamp = timestamp_from_nanos(log.time_unix_nano or log.observed_time_unix_nano)
                if timestamp is not None:
                    record["timestamp"] = timestamp
                if isinstance(source, str) and source:
                    record["source"] = source
                if fields:
                    record["fields"] = fields
                if not isinstance(channel, str) or not channel:
                    missing.append(
                        {
                            "index": index,
                            "field": "channel",
                            "message": f"no {CHANNEL_ATTRIBUTE} attribute on the log record "
                            "or its resource, and no channel rule matches",
                        }
                    )
                records.append(record)
    if missing:
        raise InvalidRequest(
            f"{len(missing)} log record(s) name no channel: set the attribute "
            f"{CHANNEL_ATTRIBUTE} on the record or its resource, or a channel rule "
            "(channel_rules) that matches",
            details=missing,
        )
    if not records:
        raise InvalidRequest("the export holds no log records")
    return records
