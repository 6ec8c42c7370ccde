"""Fuzzing logstream.shared.sse and the record frames built on it, read back by a spec reader.

Whatever a record holds (CR, LF, NUL, U+2028, a forged ``event:`` line), its frame is one
``event: log`` whose data is the record's JSON, and the frame cannot start another event.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from logstream.shared.records import decode_batch, delivered_json, encode_stored, validate_records
from logstream.shared.sse import sse_frame
from tests.fuzz.sse_spec import SpecReader

# Bounded and reproducible: the same examples on every run (CI).
fuzz = settings(deadline=None, max_examples=200, derandomize=True)

FORGED = '\n\nevent: log\ndata: {"forged":1}\n\n'
# Every character that ends a line somewhere (SSE: CR, LF; Python's splitlines: more of them).
NASTY = st.sampled_from(
    [
        "\r",
        "\n",
        "\r\n",
        "\0",
        "\u2028",
        "\u2029",
        "\x85",
        "\x1c",
        "\x0b",
        "\x0c",
        "\x1e",
        "\x7f",
        FORGED,
        "data: x",
        "id: 9",
        ": c",
        "retry: 1",
    ]
)
nasty_text = st.lists(st.one_of(NASTY, st.text(max_size=8)), max_size=8).map("".join)
NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def _read(frame: bytes) -> SpecReader:
    reader = SpecReader()
    reader.feed(frame)
    return reader


@fuzz
@given(data=nasty_text, event=nasty_text, id=st.one_of(nasty_text, st.integers(0, 2**63)))
@example(data=FORGED, event="log\r\nevent: admin", id="1\n\nid: 2")
def test_any_frame_is_exactly_one_event_whatever_its_fields_hold(data, event, id):
    frame = sse_frame(data=data, event=event, id=id)
    reader = _read(frame)
    assert len(reader.events) == 1, frame
    [read] = reader.events
    assert read.event == (_without_controls(event) or "message")
    assert read.id == _without_controls(str(id))
    assert read.data == data.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "")


def _without_controls(text: str) -> str:
    return "".join(char for char in text if ord(char) >= 0x20 and char != "\x7f")


@settings(fuzz, max_examples=60)
@given(comment=nasty_text)
def test_a_comment_frame_never_dispatches_an_event(comment):
    assert _read(sse_frame(comment=comment)).events == []


channels = st.sampled_from(["logs:etl:ws1", "logs:faas:ws1:fn-1", "logs:analytics:w_2"])
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    nasty_text,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def published_records(draw) -> dict:
    record = {"channel": draw(channels), "message": draw(nasty_text)}
    if draw(st.booleans()):
        record["source"] = draw(nasty_text.map(lambda text: text[:128]))
    if draw(st.booleans()):
        record["fields"] = draw(st.dictionaries(nasty_text, json_values, max_size=4))
    if draw(st.booleans()):
        record["id"] = draw(nasty_text.filter(lambda text: 1 <= len(text) <= 128))
    if draw(st.booleans()):
        record["level"] = draw(st.sampled_from(["WARNING", "Info", "error", "TRACE", "fatal"]))
    return record


@settings(fuzz, max_examples=80)
@given(record=published_records(), seq=st.integers(1, 2**53), ascii_only=st.booleans())
def test_a_stored_record_becomes_one_log_event_that_decodes_to_what_was_published(
    record, seq, ascii_only
):
    body = json.dumps(record, ensure_ascii=ascii_only).encode()
    [valid] = validate_records(decode_batch(body, "application/json"), publisher="p", now=NOW)
    frame = sse_frame(id=seq, event="log", data=delivered_json(seq, encode_stored(valid.record)))
    assert b"\r" not in frame and frame.count(b"\n\n") == 1 and frame.count(b"\n") == 4
    reader = _read(frame)
    [event] = reader.events
    assert (event.event, event.id) == ("log", str(seq))
    delivered = json.loads(event.data)
    assert delivered["seq"] == seq
    level = record.get("level", "info").lower()
    assert delivered["level"] == ("warn" if level == "warning" else level)
    for key in ("channel", "message", "source", "fields", "id"):
        assert delivered.get(key) == record.get(key), key
    assert "forged" not in delivered
