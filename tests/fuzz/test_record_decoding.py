"""Fuzzing logstream.shared.records: whatever a producer sends, decoding ends in a record or a 4xx error.

Ingest turns ``InvalidRequest`` into 400 and ``PayloadTooLarge`` into 413 (``logstream.shared.web``);
any other exception out of decoding or validation would be a 500, so none may escape.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from logstream.shared.errors import InvalidRequest, PayloadTooLarge
from logstream.shared.records import (
    MAX_FIELDS_DEPTH,
    PublishedRecord,
    decode_batch,
    delivered_json,
    encode_stored,
    validate_records,
)

# Bounded and reproducible: the same examples on every run (CI), each under a second of budget.
fuzz = settings(deadline=None, max_examples=300, derandomize=True)
fuzz_structured = settings(fuzz, max_examples=80)
MEDIA = st.sampled_from(["application/json", "application/x-ndjson"])
NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
ACCEPTED_ERRORS = (InvalidRequest, PayloadTooLarge)
KEYS = ["channel", "message", "level", "timestamp", "source", "fields", "id", "seq", "publisher"]


def _decode_and_validate(body: bytes, media: str) -> None:
    """Ingest's two steps; only the project's 4xx errors may come out."""
    try:
        records = decode_batch(body, media, max_records=50)
        assert records and all(isinstance(record, PublishedRecord) for record in records)
        validate_records(records, publisher="fuzz", now=NOW)
    except ACCEPTED_ERRORS as exc:
        assert exc.message and isinstance(exc.details, list)


@fuzz
@given(body=st.binary(max_size=300), media=MEDIA)
@example(body=b"[" * 5000, media="application/json")
@example(body=b'{"a":' * 5000, media="application/x-ndjson")
@example(body=b"\xff\xfe{}", media="application/json")
@example(body=b'{"channel":"logs:etl:w","message":"\\ud800"}', media="application/json")
@example(body=b"1e999999", media="application/json")
@example(
    body=b'{"channel":"logs:etl:w","message":"m","timestamp":99999999999999999999999}',
    media="application/json",
)
def test_arbitrary_bytes_decode_to_records_or_a_client_error(body, media):
    _decode_and_validate(body, media)


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(
        [
            "logs:etl:ws1",
            "logs:faas:w:x",
            "WARNING",
            "info",
            "2026-01-31T12:00:00Z",
            "2026-02-30T25:61:00+24:00",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+01:00",
            "",
            "logs:etl:*",
        ]
    ),
    st.integers(-1, 253402300800000),
)
json_ish = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=6),
    ),
    max_leaves=25,
)
record_like = st.fixed_dictionaries(
    {
        "channel": st.one_of(st.sampled_from(["logs:etl:ws1", "logs:platform:p:q"]), leaves),
        "message": st.one_of(st.text(max_size=30), leaves),
    },
    optional={key: json_ish for key in ("level", "timestamp", "source", "fields", "id", "x")},
)


def _dumps(value) -> bytes:
    # ``allow_nan`` lets NaN and Infinity through: not JSON, so they must come back as a 400.
    return json.dumps(value, allow_nan=True).encode()


@fuzz_structured
@given(value=st.one_of(json_ish, record_like, st.lists(record_like, max_size=4)), media=MEDIA)
def test_arbitrary_json_values_decode_to_records_or_a_client_error(value, media):
    if media == "application/x-ndjson" and isinstance(value, list):
        body = b"\n".join(_dumps(item) for item in value)
    else:
        body = _dumps(value)
    _decode_and_validate(body, media)


@settings(deadline=None, max_examples=25, derandomize=True)
@given(depth=st.integers(1, 3000), container=st.sampled_from(["[", '{"a":']), media=MEDIA)
def test_json_nested_at_any_depth_is_a_record_or_a_client_error(depth, container, media):
    closing = "]" if container == "[" else "}"
    fields = container * depth + "1" + closing * depth
    body = f'{{"channel":"logs:etl:ws1","message":"m","fields":{{"x":{fields}}}}}'.encode()
    try:
        [valid] = validate_records(decode_batch(body, media), publisher="p", now=NOW)
    except InvalidRequest:
        return
    assert depth + 1 <= MAX_FIELDS_DEPTH
    assert encode_stored(valid.record)


segment = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=64)
channel = st.builds(
    lambda service, parts: ":".join(["logs", service, *parts]),
    st.sampled_from(["etl", "faas", "analytics", "platform"]),
    st.lists(segment, min_size=1, max_size=2),
)
plain_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=15,
)
valid_record = st.fixed_dictionaries(
    {"channel": channel, "message": st.text(max_size=200)},
    optional={
        "level": st.sampled_from(["trace", "DEBUG", "Info", "warn", "WARNING", "error", "FATAL"]),
        "timestamp": st.one_of(
            st.integers(0, 253402300799999),
            st.sampled_from(["2026-01-31T12:00:00Z", "2026-01-31T12:00:00.123456+02:00"]),
        ),
        "source": st.text(max_size=128),
        "fields": st.dictionaries(st.text(max_size=8), plain_json, max_size=5),
        "id": st.text(min_size=1, max_size=128),
    },
)


@fuzz_structured
@given(
    records=st.lists(valid_record, min_size=1, max_size=5),
    media=MEDIA,
    ascii_only=st.booleans(),
    seq=st.integers(1, 2**53),
)
def test_valid_records_round_trip_to_the_delivered_json(records, media, ascii_only, seq):
    if media == "application/x-ndjson":
        body = b"\n".join(json.dumps(r, ensure_ascii=ascii_only).encode() for r in records)
    else:
        body = json.dumps(records, ensure_ascii=ascii_only).encode()
    valid = validate_records(decode_batch(body, media), publisher="tok", now=NOW)
    assert len(valid) == len(records)
    for sent, item in zip(records, valid):
        delivered = json.loads(delivered_json(seq, encode_stored(item.record)))
        assert delivered["seq"] == seq and delivered["publisher"] == "tok"
        for key in ("channel", "message", "source", "fields", "id"):
            assert delivered.get(key) == sent.get(key), key
        level = sent.get("level", "info").lower()
        assert delivered["level"] == ("warn" if level == "warning" else level)
