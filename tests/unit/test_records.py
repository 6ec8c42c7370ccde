"""logstream.shared.records against docs/reference/records.md (the record) and section 4 (batches)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest

from logstream.shared.channels import Channel
from logstream.shared.errors import InvalidRequest, PayloadTooLarge
from logstream.shared.records import (
    MAX_FIELDS_BYTES,
    MAX_FIELDS_DEPTH,
    MAX_MESSAGE_BYTES,
    SURELY_SHORT_CHARS,
    PublishedRecord,
    RecordProblem,
    all_normal,
    decode_batch,
    delivered_json,
    encode_stored,
    level_rank,
    ndjson_lines,
    normalised,
    record_channel,
    validate_records,
)

JSON = "application/json"
NDJSON = "application/x-ndjson"
NOW = datetime(2026, 1, 31, 12, 0, 0, 250000, tzinfo=UTC)
CHANNEL = "logs:etl:ws1:wf1"


def body(value) -> bytes:
    return json.dumps(value).encode()


def record(**fields) -> dict:
    return {"channel": CHANNEL, "message": "hello", **fields}


def one(**fields):
    """Decode and validate a single record, as ingest does."""
    [valid] = validate_records(decode_batch(body(record(**fields)), JSON), publisher="p", now=NOW)
    return valid.record


def problem_of(**fields) -> dict:
    """The single detail of a rejected single-record body, from whichever stage rejected it."""
    with pytest.raises(InvalidRequest) as caught:
        validate_records(decode_batch(body(record(**fields)), JSON), publisher="p", now=NOW)
    [detail] = caught.value.details
    return detail


# decode_batch


def test_one_object_decodes_to_one_record():
    [decoded] = decode_batch(body(record()), JSON)
    assert decoded == PublishedRecord(channel=CHANNEL, message="hello")


def test_an_array_decodes_to_its_records_in_order():
    records = decode_batch(body([record(message=str(i)) for i in range(3)]), JSON)
    assert [r.message for r in records] == ["0", "1", "2"]


def test_ndjson_decodes_one_record_per_line_and_ignores_blank_lines():
    lines = [json.dumps(record(message="a")), "", "   ", json.dumps(record(message="b")), ""]
    records = decode_batch("\n".join(lines).encode(), NDJSON)
    assert [r.message for r in records] == ["a", "b"]


def test_ndjson_with_crlf_line_ends_decodes():
    text = json.dumps(record(message="a")) + "\r\n" + json.dumps(record(message="b")) + "\r\n"
    assert [r.message for r in decode_batch(text.encode(), NDJSON)] == ["a", "b"]


@pytest.mark.parametrize(("raw", "media"), [(b"[]", JSON), (b"", NDJSON), (b"\n \n", NDJSON)])
def test_a_body_without_records_is_invalid(raw, media):
    with pytest.raises(InvalidRequest, match="no records"):
        decode_batch(raw, media)


def test_an_empty_json_body_is_invalid_json():
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        decode_batch(b"", JSON)


def _batch(records: list[dict], media: str) -> bytes:
    return body(records) if media == JSON else "\n".join(map(json.dumps, records)).encode()


@pytest.mark.parametrize("media", [JSON, NDJSON])
def test_more_records_than_the_limit_is_payload_too_large(media):
    assert len(decode_batch(_batch([record()] * 4, media), media, max_records=4)) == 4
    with pytest.raises(PayloadTooLarge, match="5 records; the limit is 4"):
        decode_batch(_batch([record()] * 5, media), media, max_records=4)


def test_an_oversized_batch_of_invalid_records_is_still_payload_too_large():
    with pytest.raises(PayloadTooLarge):
        decode_batch(body([{"bad": 1}] * 5), JSON, max_records=4)


@pytest.mark.parametrize("raw", [b"{", b'{"channel": }', b"[1, 2", b"nope", b"\xff\xfe"])
def test_malformed_json_is_invalid(raw):
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        decode_batch(raw, JSON)


def test_malformed_json_after_a_bad_record_is_invalid_not_a_crash():
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        decode_batch(b'[{"channel": 1}, garbage', JSON)


@pytest.mark.parametrize("media", [JSON, NDJSON])
def test_a_number_too_large_for_a_float_is_invalid_not_a_crash(media):
    raw = b'{"channel": "logs:etl:ws1", "message": "m", "fields": {"n": 1e999}}'
    with pytest.raises(InvalidRequest, match="Number out of range"):
        decode_batch(raw, media)


@pytest.mark.parametrize("media", [JSON, NDJSON])
@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"a":' * 20_000,
        b'{"channel": "logs:etl:ws1", "message": "m", "fields": ' + b'{"a":' * 20_000,
        b'{"channel": "logs:etl:ws1", "message": "m", "fields": {"a": ' + b"[" * 20_000,
    ],
)
def test_json_nested_past_the_decoder_s_limit_is_invalid_not_a_crash(raw, media):
    with pytest.raises(InvalidRequest):
        decode_batch(raw, media)


def test_fields_nested_past_the_decoder_s_limit_are_said_to_be_nested_too_deeply():
    raw = b'{"channel": "logs:etl:ws1", "message": "m", "fields": ' + b'{"a":' * 20_000
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        decode_batch(raw, JSON)


@pytest.mark.parametrize("raw", [b"42", b'"text"', b"null", b"true"])
def test_a_top_level_scalar_is_invalid(raw):
    with pytest.raises(InvalidRequest, match="JSON object or an array"):
        decode_batch(raw, JSON)


def test_an_array_of_non_objects_names_each_index():
    with pytest.raises(InvalidRequest) as caught:
        decode_batch(b'[1, {"channel": "logs:etl:ws1", "message": "m"}, "x"]', JSON)
    assert [d["index"] for d in caught.value.details] == [0, 2]


def test_a_malformed_ndjson_line_is_named_by_its_record_index():
    raw = (json.dumps(record()) + "\n\n{oops\n").encode()
    with pytest.raises(InvalidRequest) as caught:
        decode_batch(raw, NDJSON)
    [detail] = caught.value.details
    assert detail["index"] == 1


def test_an_unknown_key_is_rejected_naming_the_key():
    detail = problem_of(colour="red")
    assert detail["index"] == 0 and detail["field"] == "colour"
    assert "unknown field" in detail["message"]


@pytest.mark.parametrize("missing", ["channel", "message"])
def test_a_missing_required_field_is_named(missing):
    raw = record()
    del raw[missing]
    with pytest.raises(InvalidRequest) as caught:
        decode_batch(body(raw), JSON)
    assert caught.value.details == [
        {"index": 0, "field": missing, "message": f"Object missing required field `{missing}`"}
    ]


def test_every_bad_record_of_a_batch_is_reported_with_its_index_and_field():
    batch = [record(), record(level=3), record(), {"channel": CHANNEL}, record(source="s" * 129)]
    with pytest.raises(InvalidRequest) as caught:
        decode_batch(body(batch), JSON)
    assert [(d["index"], d["field"]) for d in caught.value.details] == [
        (1, "level"),
        (3, "message"),
        (4, "source"),
    ]
    assert caught.value.message.startswith("record 1 field 'level'")
    assert "(and 2 more problems)" in caught.value.message


# validate_records: level


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("info", "info"),
        ("ERROR", "error"),
        ("Debug", "debug"),
        ("warning", "warn"),
        ("WARNING", "warn"),
        ("warn", "warn"),
        ("fatal", "fatal"),
        ("TRACE", "trace"),
    ],
)
def test_levels_are_case_insensitive_and_warning_means_warn(given, stored):
    assert one(level=given).level == stored


def test_the_level_defaults_to_info():
    assert one().level == "info"


@pytest.mark.parametrize("level", ["critical", "", "information", "warn "])
def test_an_unknown_level_is_rejected(level):
    detail = problem_of(level=level)
    assert detail["field"] == "level"
    assert "trace, debug, info, warn, error, fatal" in detail["message"]


def test_levels_rank_from_trace_to_fatal():
    ranks = [level_rank(name) for name in ("trace", "debug", "info", "warn", "error", "fatal")]
    assert ranks == sorted(ranks) and len(set(ranks)) == 6


# validate_records: timestamp


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2026-01-31T12:00:00Z", "2026-01-31T12:00:00.000Z"),
        ("2026-01-31T12:00:00+02:00", "2026-01-31T10:00:00.000Z"),
        ("2026-01-31T01:00:00-03:30", "2026-01-31T04:30:00.000Z"),
        ("2026-01-31T12:00:00.123Z", "2026-01-31T12:00:00.123Z"),
        ("2026-01-31T12:00:00.123456+00:00", "2026-01-31T12:00:00.123456Z"),
        ("2026-01-31t12:00:00z", "2026-01-31T12:00:00.000Z"),
    ],
)
def test_rfc3339_timestamps_with_an_offset_are_stored_in_utc_with_z(given, stored):
    assert one(timestamp=given).timestamp == stored


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1769860800123, "2026-01-31T12:00:00.123Z"),
        (253402300799999, "9999-12-31T23:59:59.999Z"),
        (190846634409211, "8017-09-09T02:00:09.211Z"),
    ],
)
def test_epoch_milliseconds_are_stored_exactly_as_rfc3339(given, stored):
    assert one(timestamp=given).timestamp == stored


def test_a_missing_timestamp_is_the_time_of_receipt():
    stored = one()
    assert stored.timestamp == stored.received_at == "2026-01-31T12:00:00.250Z"


@pytest.mark.parametrize(
    "given",
    [
        "2026-01-31T12:00:00",
        "2026-01-31",
        "2026-01-31 12:00:00Z",
        "20260131T120000Z",
        "2026-01-31T12:00:00+0200",
        "2026-01-31T12Z",
        "2026-W05-6T12:00:00Z",
        "2026-02-30T12:00:00Z",
        "yesterday",
        "",
    ],
)
def test_a_timestamp_that_is_not_rfc3339_with_an_offset_is_rejected(given):
    detail = problem_of(timestamp=given)
    assert detail["field"] == "timestamp" and "RFC 3339" in detail["message"]


@pytest.mark.parametrize("given", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_timestamp_pushed_out_of_range_by_its_offset_is_rejected(given):
    detail = problem_of(timestamp=given)
    assert detail["field"] == "timestamp" and "out of range" in detail["message"]


@pytest.mark.parametrize("given", [-1, 253402300800000, 10**30])
def test_epoch_milliseconds_out_of_range_are_rejected(given):
    detail = problem_of(timestamp=given)
    assert detail["field"] == "timestamp"


@pytest.mark.parametrize("given", [1.5, True, [], {}])
def test_a_timestamp_of_another_type_is_rejected(given):
    assert problem_of(timestamp=given)["field"] == "timestamp"


# validate_records: sizes


def test_a_message_of_exactly_64_kib_is_accepted():
    assert len(one(message="a" * MAX_MESSAGE_BYTES).message) == 65536
    assert len(one(message="é" * (MAX_MESSAGE_BYTES // 2)).message.encode()) == 65536


def test_a_message_over_64_kib_in_utf8_bytes_is_rejected_though_under_in_characters():
    message = "é" * (MAX_MESSAGE_BYTES // 2 + 1)
    assert len(message) < MAX_MESSAGE_BYTES < len(message.encode())
    detail = problem_of(message=message)
    assert detail["field"] == "message" and "65536 bytes" in detail["message"]


def test_a_message_over_64_kib_in_characters_is_rejected():
    assert problem_of(message="a" * (MAX_MESSAGE_BYTES + 1))["field"] == "message"


def _fields_of_size(size: int) -> dict:
    fields = {"k": "x" * (size - len(b'{"k":""}'))}
    assert len(msgspec.json.encode(fields)) == size
    return fields


def test_fields_of_exactly_16_kib_encoded_are_accepted():
    assert one(fields=_fields_of_size(MAX_FIELDS_BYTES)).fields is not None


def test_fields_over_16_kib_encoded_are_rejected():
    detail = problem_of(fields=_fields_of_size(MAX_FIELDS_BYTES + 1))
    assert detail["field"] == "fields" and "16384 bytes" in detail["message"]


def _nested(depth: int) -> dict:
    """``fields`` whose objects and arrays nest ``depth`` levels deep (itself the first)."""
    value: object = 1
    for level in range(depth - 1):
        value = [value] if level % 2 else {"k": value}
    return {"k": value}


def test_fields_nested_as_deep_as_the_limit_are_accepted():
    assert one(fields=_nested(MAX_FIELDS_DEPTH)).fields == _nested(MAX_FIELDS_DEPTH)


@pytest.mark.parametrize("depth", [MAX_FIELDS_DEPTH + 1, 500])
def test_fields_nested_deeper_than_the_limit_are_rejected(depth):
    detail = problem_of(fields=_nested(depth))
    assert detail["field"] == "fields" and f"deeper than {MAX_FIELDS_DEPTH}" in detail["message"]


@pytest.mark.parametrize("fields", [[1, 2], "text", 3])
def test_fields_that_are_not_an_object_are_rejected(fields):
    assert problem_of(fields=fields)["field"] == "fields"


def test_a_source_of_128_characters_is_accepted_and_129_rejected():
    assert one(source="é" * 128).source == "é" * 128
    assert problem_of(source="s" * 129)["field"] == "source"


@pytest.mark.parametrize("length", [1, 128])
def test_an_id_of_1_to_128_characters_is_accepted(length):
    assert one(id="i" * length).id == "i" * length


@pytest.mark.parametrize("given", ["", "i" * 129, 7])
def test_an_id_outside_1_to_128_characters_is_rejected(given):
    assert problem_of(id=given)["field"] == "id"


def test_a_bad_channel_is_rejected_naming_the_bad_part():
    detail = problem_of(channel="logs:nope:ws1")
    assert detail["field"] == "channel" and "unknown service 'nope'" in detail["message"]


def test_configured_services_decide_which_channels_are_valid():
    records = decode_batch(body(record(channel="logs:billing:ws1")), JSON)
    [valid] = validate_records(records, publisher="p", services={"billing"}, now=NOW)
    assert valid.channel == Channel("billing", "ws1")
    with pytest.raises(InvalidRequest):
        validate_records(
            decode_batch(body(record()), JSON), publisher="p", services={"billing"}, now=NOW
        )


def test_validation_reports_every_bad_record_together_and_accepts_none():
    batch = [record(), record(level="loud"), record(channel="logs:etl"), record(timestamp="x")]
    with pytest.raises(InvalidRequest) as caught:
        validate_records(decode_batch(body(batch), JSON), publisher="p", now=NOW)
    assert [(d["index"], d["field"]) for d in caught.value.details] == [
        (1, "level"),
        (2, "channel"),
        (3, "timestamp"),
    ]


def test_a_valid_record_carries_the_publisher_and_the_receipt_time():
    stored = one(source="svc", fields={"n": 1}, id="abc", level="WARNING")
    assert stored.publisher == "p"
    assert stored.received_at == "2026-01-31T12:00:00.250Z"
    assert (stored.source, stored.fields, stored.id, stored.level) == (
        "svc",
        {"n": 1},
        "abc",
        "warn",
    )


# the pieces the fast path (services/ingest/valid_batch.py) takes its rules from


def test_ndjson_lines_are_the_lines_that_are_not_blank():
    assert ndjson_lines(b'{"a":1}\r\n\n \t\n\r\n{"b":2}') == [b'{"a":1}\r', b'{"b":2}']
    assert ndjson_lines(b"") == ndjson_lines(b"\n \n") == []


def test_a_record_channel_is_parsed_with_its_stored_name_or_is_a_channel_problem():
    assert record_channel("logs:etl:ws1:wf1", frozenset({"etl"})) == (
        Channel("etl", "ws1", "wf1"),
        "logs:etl:ws1:wf1",
    )
    with pytest.raises(RecordProblem) as caught:
        record_channel("logs:etl:ws1", frozenset({"billing"}))
    assert caught.value.field == "channel" and "unknown service 'etl'" in caught.value.message


def record_of(**fields) -> PublishedRecord:
    return PublishedRecord(**{"channel": CHANNEL, "message": "m", **fields})


@pytest.mark.parametrize(
    ("fields", "normal"),
    [
        ({}, True),
        ({"level": "error", "fields": {}, "message": "a" * SURELY_SHORT_CHARS}, True),
        ({"level": "ERROR"}, False),
        ({"level": "warning"}, False),
        ({"level": "loud"}, False),
        ({"timestamp": 0}, False),
        ({"timestamp": ""}, False),
        ({"fields": {"k": 1}}, False),
        ({"message": "a" * (SURELY_SHORT_CHARS + 1)}, False),
    ],
)
def test_all_normal_is_true_only_of_records_normalised_leaves_as_they_are(fields, normal):
    records = [PublishedRecord(channel=CHANNEL, message="m"), record_of(**fields)]
    assert all_normal(records) is normal
    if normal:  # then each record is stored as it is, with the time of receipt
        for item in records:
            got = normalised(item.level, item.message, item.fields, item.timestamp, "now")
            assert got == (item.level, "now")


def test_no_records_are_all_normal():
    assert all_normal([])


# delivered_json


def test_delivered_json_puts_seq_first_and_keeps_the_stored_record_intact():
    stored = one(fields={"nested": {"a": [1, 2]}, "text": 'é\n"q"'}, source="s", id="i1")
    encoded = encode_stored(stored)
    delivered = delivered_json(123456789, encoded)
    decoded = json.loads(delivered)
    assert next(iter(decoded)) == "seq" and decoded.pop("seq") == 123456789
    assert decoded == json.loads(encoded)
    assert msgspec.json.decode(encoded, type=type(stored)) == stored
    assert json.loads(encoded)["channel"] == CHANNEL


_INJECTION = '\n\nevent: log\ndata: {"forged":1}\n\r\n\r\u0000\u2028\x1c\x85'


def test_line_breaks_and_nul_in_every_text_field_are_kept_and_escaped_in_the_stored_json():
    stored = one(
        message=_INJECTION,
        source=_INJECTION,
        id="i" + _INJECTION,
        fields={_INJECTION: [_INJECTION, {"k": _INJECTION}]},
    )
    encoded = encode_stored(stored)
    assert not any(byte in encoded for byte in (b"\n", b"\r", b"\x00", b"\x1c"))
    decoded = json.loads(delivered_json(7, encoded))
    assert decoded["message"] == decoded["source"] == _INJECTION
    assert decoded["id"] == "i" + _INJECTION
    assert decoded["fields"] == {_INJECTION: [_INJECTION, {"k": _INJECTION}]}


@pytest.mark.parametrize("field", ["channel", "level", "timestamp"])
def test_a_line_break_in_a_checked_field_is_rejected(field):
    value = {"channel": CHANNEL, "level": "info", "timestamp": "2026-01-31T12:00:00Z"}[field]
    assert problem_of(**{field: value + "\n"})["field"] == field
