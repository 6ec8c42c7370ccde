"""The Loki push API (``POST /loki/api/v1/push``): what Promtail, Grafana Alloy, Fluent Bit's
``loki`` output and Loki client libraries send, as records.

Two bodies, as Loki takes them:

- JSON (``application/json``, compressed or not): ``{"streams": [{"stream": {labels},
  "values": [["<unix ns>", "<line>"], ["<unix ns>", "<line>", {structured metadata}]]}]}``;
- protobuf (``application/x-protobuf``): Loki's ``logproto.PushRequest`` (``push.proto``),
  compressed with snappy's block format, as every Loki client sends it (with
  ``Content-Encoding: snappy`` or without). The messages are built
  here from their descriptor (four small messages), so no generated code is vendored. The
  uncompressed size snappy states up front is checked against the limit before anything is
  decompressed.

Each entry becomes one record, through the same checks, grants and limits as a native batch:
``channel`` from the label ``channel``, else the first channel mapping rule that matches the
labels and structured metadata (``channel_rules``); ``level`` from ``level``, else ``detected_level``, else
``severity`` (python-logging-loki's); ``source`` from ``service_name``, else ``job``; every other
label and the entry's structured metadata into ``fields``; the entry's time as ``timestamp``;
``id`` from the request's content and the entry's place in it (a retried push is stored once).
"""

from __future__ import annotations

import json
import re
from typing import Any

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.message import DecodeError, Message

from logstream.services.ingest.channel_rules import ChannelRules
from logstream.services.ingest.foreign import id_maker, level_named, timestamp_from_nanos
from logstream.shared.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = [
    "LOKI_PATH",
    "loki_body_coding",
    "loki_media_type",
    "loki_records",
    "push_request_class",
]

LOKI_PATH = "/loki/api/v1/push"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
CHANNEL_LABEL = "channel"
LEVEL_LABELS = ("level", "detected_level", "severity")
SOURCE_LABELS = ("service_name", "job")
# A Prometheus-style label set, as a PushRequest spells it: {a="x", b="y \"q\""}
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def _build_push_request() -> type[Message]:
    """``logproto.PushRequest`` and the messages it holds, from Loki's push.proto."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="logstream/loki_push.proto",
        package="logproto",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    string, uint64 = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    )
    message = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    one, many = (
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )

    def add(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        described = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = described.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name

    add("LabelPairAdapter", ("name", 1, string, one, ""), ("value", 2, string, one, ""))
    add(
        "EntryAdapter",
        ("timestamp", 1, message, one, ".google.protobuf.Timestamp"),
        ("line", 2, string, one, ""),
        ("structuredMetadata", 3, message, many, ".logproto.LabelPairAdapter"),
    )
    add(
        "StreamAdapter",
        ("labels", 1, string, one, ""),
        ("entries", 2, message, many, ".logproto.EntryAdapter"),
        ("hash", 3, uint64, one, ""),
    )
    add("PushRequest", ("streams", 1, message, many, ".logproto.StreamAdapter"))
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))


_PUSH_REQUEST = _build_push_request()


def push_request_class() -> Any:
    """Loki's ``PushRequest`` message class (for a client building a push, as tests do); its
    fields are made at run time, so to a type checker it is ``Any``."""
    return _PUSH_REQUEST


def loki_media_type(content_type: str | None) -> str:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in (PROTOBUF, JSON):
        shown = repr(content_type[:80]) if content_type else "none"
        raise UnsupportedMediaType(
            f"content type {shown} is not accepted on {LOKI_PATH}; send {PROTOBUF} "
            f"(snappy-compressed) or {JSON}"
        )
    return media_type


def loki_body_coding(header: str | None, media_type: str) -> str | None:
    """The Content-Encoding to undo before the push is read. A protobuf push is a snappy block
    already, and Grafana Alloy (since v1.13) says so with ``Content-Encoding: snappy``: that is
    the body as this module reads it, not a coding on top of it. Anything else is for
    ``content_coding`` (which refuses ``snappy`` on a JSON push, as Loki does)."""
    if media_type == PROTOBUF and (header or "").strip().lower() == "snappy":
        return "identity"
    return header


def _labels(text: str) -> dict[str, str]:
    """``{a="x", b="y"}`` as a dict; 400 for anything else."""
    inner = text.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        raise InvalidRequest(f'stream labels {text[:80]!r} are not a {{name="value"}} set')
    inner, labels, at = inner[1:-1], {}, 0
    while at < len(inner.rstrip()):
        found = _LABEL.match(inner, at)
        if found is None:
            raise InvalidRequest(f'stream labels {text[:80]!r} are not a {{name="value"}} set')
        labels[found[1]] = json.loads(f'"{found[2]}"')
        at = found.end()
    return labels


def _snappy_size(body: bytes) -> int:
    """The uncompressed length a snappy block states in its first bytes (a varint)."""
    size, shift = 0, 0
    for byte in body[:10]:
        size |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return size
        shift += 7
    raise InvalidRequest("body is not snappy-compressed protobuf (no length header)")


def _decode_protobuf(
    body: bytes, limit: int
) -> list[tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]]:
    size = _snappy_size(body)
    if size > limit:
        raise PayloadTooLarge(f"body is over the limit of {limit} bytes once decompressed (snappy)")
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise InvalidRequest(f"body is not valid snappy data: {exc}") from None
    push = _PUSH_REQUEST()
    try:
        push.ParseFromString(raw)
    except DecodeError as exc:
        raise InvalidRequest(f"body is not a Loki PushRequest: {exc}") from None
    streams = []
    for stream in push.streams:  # type: ignore[attr-defined]
        entries = [
            (
                entry.timestamp.seconds * 1_000_000_000 + entry.timestamp.nanos,
                entry.line,
                {pair.name: pair.value for pair in entry.structuredMetadata},
            )
            for entry in stream.entries
        ]
        streams.append((_labels(stream.labels), entries))
    return streams


def _decode_json(body: bytes) -> list[tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("streams"), list):
        raise InvalidRequest('body is not a Loki push: {"streams": [...]}')
    streams = []
    for number, stream in enumerate(document["streams"]):
        labels = stream.get("stream") if isinstance(stream, dict) else None
        values = stream.get("values") if isinstance(stream, dict) else None
        if not isinstance(labels, dict) or not isinstance(values, list):
            raise InvalidRequest(f'streams[{number}] is not {{"stream": {{...}}, "values": [...]}}')
        if not all(isinstance(v, str) for v in labels.values()):
            raise InvalidRequest(f"streams[{number}].stream: label values must be strings")
        entries = []
        for value in values:
            if (
                not isinstance(value, list)
                or len(value) not in (2, 3)
                or not isinstance(value[0], str)
                or not value[0].isdigit()
                or not isinstance(value[1], str)
                or (len(value) == 3 and not isinstance(value[2], dict))
            ):
                raise InvalidRequest(
                    f'streams[{number}].values: each is ["<unix ns>", "<line>"] or '
                    '["<unix ns>", "<line>", {structured metadata}]'
                )
            metadata = value[2] if len(value) == 3 else {}
            entries.append((int(value[0]), value[1], {str(k): v for k, v in metadata.items()}))
        streams.append((labels, entries))
    return streams


def loki_records(
    body: bytes, media_type: str, limit: int, rules: ChannelRules | None = None
) -> list[dict[str, Any]]:
    """Logstream records (as a native batch holds them) for every entry of the push; 400 for
    a body that is not a push, or entries with no channel."""
    streams = _decode_protobuf(body, limit) if media_type == PROTOBUF else _decode_json(body)
    make_id = id_maker("loki", body)
    records: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    for labels, entries in streams:
        fields = dict(labels)
        channel = fields.pop(CHANNEL_LABEL, None)
        level = next((fields.pop(n) for n in LEVEL_LABELS if n in fields), None)
        for name in LEVEL_LABELS:
            fields.pop(name, None)
        source = next((fields.pop(n) for n in SOURCE_LABELS if n in fields), None)
        for nanos, line, metadata in entries:
            index = len(records)
            mapped = channel
            if not mapped and rules:
                mapped = rules.channel({**labels, **metadata})
            record: dict[str, Any] = {
                "channel": mapped or "",
                "message": line,
                "level": level_named(level),
                "id": make_id(index),
            }
            timestamp = timestamp_from_nanos(nanos)
            if timestamp is not None:
                record["timestamp"] = timestamp
            if source:
                record["source"] = source
            if fields or metadata:
                record["fields"] = {**fields, **metadata}
            if not mapped:
                missing.append(
                    {
                        "index": index,
                        "field": "channel",
                        "message": "no channel label, and no channel rule matches",
                    }
                )
            records.append(record)
    if missing:
        raise InvalidRequest(
            f"{len(missing)} entr{'y' if len(missing) == 1 else 'ies'} name no channel: set "
            f"the label {CHANNEL_LABEL}, or a channel rule (channel_rules) that matches",
            details=missing,
        )
    if not records:
        raise InvalidRequest("the push holds no entries")
    return records
