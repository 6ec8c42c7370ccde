"""The fast ingest path (``decode_valid`` + ``draft_commands``) stores what the general path
(``decode_batch`` + ``validate_records`` + ``record_commands``' loop) stores, byte for byte, and
leaves every body it does not accept to the general path."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import nats.errors
import pytest

from logstream.services.ingest.batch_commands import _encode
from logstream.services.ingest.publisher import record_commands
from logstream.services.ingest.valid_batch import Draft, ValidBatch, decode_valid
from logstream.shared.errors import LogstreamError
from logstream.shared.records import (
    PublishedRecord,
    StoredRecord,
    decode_batch,
    encode_stored,
    validate_records,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
JSON = "application/json"
NDJSON = "application/x-ndjson"
SERVICES = {"etl", "billing"}
REPLY = b"_INBOX_ingest.abc.7."
MAX_PAYLOAD = 1024 * 1024


def _record(index: int, **extra) -> dict:
    return {"channel": "logs:etl:ws1:wf1", "message": f"line {index}", "id": f"r-{index}", **extra}


def _fast(body: bytes, media_type: str = JSON, publisher: str = "etl"):
    return decode_valid(body, media_type, publisher=publisher, services=SERVICES, now=NOW)


def _general(body: bytes, media_type: str = JSON, publisher: str = "etl"):
    return validate_records(
        decode_batch(body, media_type), publisher=publisher, services=SERVICES, now=NOW
    )


def test_a_draft_is_a_published_record_laid_out_as_a_stored_one():
    """``Draft`` takes every rule of its fields from ``PublishedRecord``; only the fields ingest
    sets are its own, and no producer may send them."""
    published = {field.name: field for field in msgspec.structs.fields(PublishedRecord)}
    drafts = msgspec.structs.fields(Draft)
    assert [field.name for field in drafts] == list(StoredRecord.__struct_fields__)
    for field in drafts:
        rule = published.pop(field.name, None)
        if rule is None:
            assert (field.type, field.default) == (msgspec.UnsetType, msgspec.UNSET)
        else:
            assert (field.type, field.default, field.required) == (
                rule.type,
                rule.default,
                rule.required,
            )
    assert not published
    assert Draft.__struct_config__.forbid_unknown_fields


BATCHES = {
    "usual": [_record(i) for i in range(5)],
    "without ids": [{"channel": "logs:etl:ws1:wf1", "message": f"m{i}"} for i in range(3)],
    "mixed ids": [_record(0), {"channel": "logs:etl:ws1:wf1", "message": "no id"}],
    "id with a line break": [_record(0, id="a\r\nPUB x 1\r\n"), _record(1, id="b  ")],
    "levels, timestamps, fields, source": [
        _record(0, level="WARNING", timestamp=0),
        _record(1, level="Error", timestamp="2026-01-31T12:00:00+01:00", source="etl.job"),
        _record(
            2, fields={"user": {"id": 7}, "tags": ["a", "b"]}, timestamp="2026-01-31T12:00:00.5Z"
        ),
        _record(3, fields={}, level="debug"),
    ],
    "two channels": [_record(0), _record(1, channel="logs:billing:ws2:inv"), _record(2)],
    "a payload past the digit tables": [_record(0, message="é" * 9000), _record(1)],
    "unicode and escapes": [_record(0, message='quote " backslash \\ tab \t nul \u0000 ✓')],
}


@pytest.mark.parametrize("name", BATCHES)
def test_a_valid_batch_is_the_records_the_general_path_makes(name):
    body = json.dumps(BATCHES[name]).encode()
    batch = _fast(body)
    assert isinstance(batch, ValidBatch)
    assert list(batch) == _general(body)


@pytest.mark.parametrize("name", BATCHES)
def test_a_draft_encodes_to_the_bytes_of_its_stored_record(name):
    body = json.dumps(BATCHES[name]).encode()
    assert [_encode(d) for d in _fast(body).drafts] == [
        encode_stored(v.record) for v in _general(body)
    ]


@pytest.mark.parametrize("name", BATCHES)
def test_a_batch_gets_the_protocol_lines_the_general_loop_writes(name):
    body = json.dumps(BATCHES[name]).encode()
    batch = _fast(body)
    fast = record_commands(batch, " etl")(REPLY, MAX_PAYLOAD)
    assert fast == record_commands(_general(body, publisher="etl"), " etl")(REPLY, MAX_PAYLOAD)


def test_ndjson_lines_take_the_fast_path_too():
    lines = b"\n".join(json.dumps(r).encode() for r in BATCHES["usual"]) + b"\n\n"
    assert list(_fast(lines, NDJSON)) == _general(lines, NDJSON)


def test_a_payload_over_the_broker_limit_is_refused():
    batch = _fast(json.dumps(BATCHES["usual"]).encode())
    with pytest.raises(nats.errors.MaxPayloadError):
        record_commands(batch, "etl")(REPLY, 100)


def test_channels_are_listed_once_each_in_record_order():
    body = json.dumps(
        [
            _record(0, channel="logs:billing:ws2:inv"),
            _record(1),
            _record(2, channel="logs:billing:ws2:inv"),
        ]
    ).encode()
    assert list(_fast(body).channels) == ["logs:billing:ws2:inv", "logs:etl:ws1:wf1"]


@pytest.mark.parametrize(
    "body",
    [
        [_record(0, received_at="2026-01-01T00:00:00Z")],  # not the producer's to set
        [_record(0, publisher="someone-else")],
        [_record(0), _record(1, level="loud")],
        [_record(0, channel="logs:nope:ws1:wf1")],
        [_record(0, color="red")],
        [_record(0, timestamp="yesterday")],
        [_record(0, timestamp=-1)],
        [_record(0, message="x" * (64 * 1024 + 1))],
        [_record(0, fields={"big": "x" * (17 * 1024)})],
        [_record(i) for i in range(1001)],
        [],
    ],
)
def test_a_body_with_any_problem_is_left_to_the_general_path(body):
    encoded = json.dumps(body).encode()
    assert _fast(encoded) is None
    with pytest.raises(LogstreamError):  # the general path names the problem (a 4xx)
        _general(encoded)


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b'"text"', b"[{]", b"\xff"])
def test_a_body_that_is_not_records_is_left_to_the_general_path(body):
    assert _fast(body) is None
    assert _fast(body, NDJSON) is None
