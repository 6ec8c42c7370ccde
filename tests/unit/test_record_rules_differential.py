"""The two ingest paths hold the same record rules (docs/reference/records.md, ingest.md#body).

Arbitrary bodies, valid and not, go to both the fast path (``decode_valid``) and the general
path (``decode_batch`` + ``validate_records``), which must agree:

- the fast path accepts: the general path accepts the very same records (equal, and encoded to
  the same stored bytes) with the same channels, in the same order;
- the fast path declines (``None``): allowed, the general path has the last word;
- the fast path refuses (a ``LogstreamError``): the general path refuses with the same error
  code and HTTP status. Any other exception out of either path fails the test.

Records are drawn field by field from values on both sides of every rule: sizes at each limit
and one past it, in 1- to 4-byte characters; every level spelling; timestamps of each accepted
and refused form; channels in and out of the grammar; missing, extra, duplicate and wrong-typed
keys. A batch is a JSON array, one object or NDJSON; all good, spoilt in exactly one way (the
likeliest to slip through one path and not the other), or spoilt every way at once: the same
record twice, items that are not objects, the other media type, past ``max_records``, invalid
UTF-8, cut short.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from logstream.services.ingest.batch_commands import _encode
from logstream.services.ingest.valid_batch import ValidBatch, decode_valid
from logstream.shared.errors import LogstreamError
from logstream.shared.records import (
    LEVELS,
    MAX_FIELDS_BYTES,
    MAX_FIELDS_DEPTH,
    MAX_MESSAGE_BYTES,
    SURELY_SHORT_CHARS,
    decode_batch,
    encode_stored,
    validate_records,
)
from logstream.shared.web import status_of

JSON = "application/json"
NDJSON = "application/x-ndjson"
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
SERVICES = frozenset({"etl", "billing"})
MAX_EPOCH_MS = 253402300799999  # 9999-12-31T23:59:59.999Z (records.md#timestamps)


class Raw(str):
    """JSON text written into the body as it is (what ``json.dumps`` would not write)."""


class Pairs(list):
    """A JSON object as its key-value pairs, in order, a key possibly more than once."""


def _dumps(value: Any, ascii_only: bool) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Pairs):
        items = (f"{_dumps(k, ascii_only)}:{_dumps(v, ascii_only)}" for k, v in value)
        return "{" + ",".join(items) + "}"
    if isinstance(value, dict):
        return _dumps(Pairs(value.items()), ascii_only)
    if isinstance(value, list):
        return "[" + ",".join(_dumps(item, ascii_only) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)


# Values on both sides of each rule: ``GOOD`` ones a record may hold, ``BAD`` ones it may not
# (as far as this test knows: a misfiled value only shifts which branch an example takes).

EMOJI = "\U0001f600"  # 4 bytes in UTF-8; two escapes (a surrogate pair) in ASCII-only JSON
WRONG_TYPES = st.sampled_from([None, 0, 7, -1.5, True, False, [], {}, ["x"], {"a": 1}])

good_channel = st.one_of(
    st.sampled_from(
        [
            "logs:etl:ws1:wf1",
            "logs:etl:ws1",
            "logs:billing:ws2:inv",
            "logs:billing:a-b_C9:Z",
            "logs:etl:" + "w" * 64 + ":" + "r" * 64,
        ]
    ),
    st.from_regex(r"logs:(etl|billing):[A-Za-z0-9_-]{1,4}(:[A-Za-z0-9_-]{1,4})?", fullmatch=True),
)
bad_channel = st.one_of(
    st.sampled_from(
        [
            "logs:nope:ws1",
            "logs:faas:ws1",  # a default service, but not one configured here
            "logs:etl",
            "logs:etl:*",
            "logs:etl:ws1:*",
            "logs:etl:ws1:wf1:x",
            "logs:etl:ws1\n",
            "logs:etl:ws 1",
            "logs:etl:ws.1",
            "logs:etl:wś",
            "LOGS:etl:ws1",
            "logs:ETL:ws1",
            "logs:etl:" + "w" * 65,
            "logs:etl::x",
            "",
        ]
    ),
    st.from_regex(
        r"logs:(etl|nope|\*):[A-Za-z0-9_.* -]{0,4}(:[A-Za-z0-9_.*-]{0,4})?", fullmatch=True
    ),
    st.text(max_size=12),
    WRONG_TYPES,
)


def _near(unit: str, limit_bytes: int) -> tuple[str, str]:
    """``unit`` repeated as often as fits in ``limit_bytes`` of UTF-8, and once more."""
    fits = limit_bytes // len(unit.encode())
    return unit * fits, unit * (fits + 1)


_AT_LIMIT = [_near(unit, MAX_MESSAGE_BYTES) for unit in ("a", "é", "€", EMOJI)]
good_message = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            *(fits for fits, _ in _AT_LIMIT),
            "a" * SURELY_SHORT_CHARS,
            "a" * (SURELY_SHORT_CHARS + 1),  # past the shortcut, still under the limit
            "é" * (SURELY_SHORT_CHARS + 1),
        ]
    ),
)
bad_message = st.one_of(
    st.sampled_from(
        [
            *(over for _, over in _AT_LIMIT),
            "a" * (MAX_MESSAGE_BYTES - 1) + "é",  # one character more, one byte over
            Raw('"\\ud800"'),  # a lone surrogate
            Raw('"\\u00"'),
        ]
    ),
    WRONG_TYPES,
)

good_level = st.sampled_from(
    [
        *LEVELS,
        *(name.upper() for name in LEVELS),
        *(name.title() for name in LEVELS),
        "warning",
        "WARNING",
        "Warning",
        "wARNING",
    ]
)
bad_level = st.one_of(
    st.sampled_from(
        ["", "loud", "critical", "warn ", " info", "info\n", "warnings", "İNFO", "ınfo", "ＩＮＦＯ"]
    ),
    st.text(max_size=8),
    WRONG_TYPES,
)


@st.composite
def rfc3339ish(draw) -> str:
    """Date-times in and around RFC 3339: every part sometimes out of range or misspelt."""

    def part(low: int, high: int, wild: int) -> int:
        return draw(st.one_of(st.integers(low, high), st.integers(0, wild)))

    date = f"{part(1, 9999, 99999):04d}-{part(1, 12, 99):02d}-{part(1, 28, 99):02d}"
    time = f"{part(0, 23, 99):02d}:{part(0, 59, 99):02d}:{part(0, 59, 99):02d}"
    fraction = draw(st.one_of(st.just(""), st.from_regex(r"\.[0-9]{0,10}", fullmatch=True)))
    offset = f"{draw(st.sampled_from('+-'))}{part(0, 23, 99):02d}:{part(0, 59, 99):02d}"
    zone = draw(st.sampled_from(["Z", "z", offset, offset, "", offset.replace(":", ""), "UTC"]))
    separator = draw(st.sampled_from(["T", "T", "t", " ", "_"]))
    if draw(st.integers(0, 9)) == 0:  # other ISO 8601 spellings
        basic = date.replace("-", "") + "T" + time.replace(":", "") + "Z"
        return draw(st.sampled_from([date, basic, "2026-W05-6T12:00:00Z"]))
    return f"{date}{separator}{time}{fraction}{zone}"


good_timestamp = st.one_of(
    st.none(),
    st.integers(0, MAX_EPOCH_MS),
    st.sampled_from([0, MAX_EPOCH_MS, "2026-01-31T12:00:00Z", "2024-02-29t12:00:00.5+01:00"]),
    st.builds(
        lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        st.integers(-23 * 60 - 59, 23 * 60 + 59),
    ).map(datetime.isoformat),
)
bad_timestamp = st.one_of(
    rfc3339ish(),  # (some are good)
    st.sampled_from(
        [
            -1,
            MAX_EPOCH_MS + 1,
            2**63,
            2**64,
            10**30,
            -(2**63) - 1,
            "0001-01-01T00:00:00+01:00",  # pushed out of range by the offset
            "9999-12-31T23:59:59-01:00",
            "2026-02-29T12:00:00Z",
            "2026-01-31T24:00:00Z",
            "2026-01-31T23:59:60Z",
            "2026-01-31T12:00:00",
            "yesterday",
            "",
            "1769860800123",
            Raw("1.0"),
            Raw("1e3"),
            Raw("1e999"),
        ]
    ),
    st.integers(),
    WRONG_TYPES,
)

good_source = st.one_of(
    st.none(), st.text(max_size=20), st.sampled_from(["", "s" * 128, "é" * 128, EMOJI * 128])
)
bad_source = st.one_of(st.sampled_from(["s" * 129, EMOJI * 129]), WRONG_TYPES)

good_id = st.one_of(
    st.none(),
    st.text(min_size=1, max_size=20),
    st.sampled_from(["i", "i" * 128, EMOJI * 128, "a\r\nPUB x 1\r\n", "b  ", "dup"]),
)
bad_id = st.one_of(st.sampled_from(["", "i" * 129, EMOJI * 129]), WRONG_TYPES)


def _nested(depth: int) -> dict:
    """``fields`` whose objects and arrays nest ``depth`` levels deep (itself the first)."""
    value: object = 1
    for level in range(depth - 1):
        value = [value] if level % 2 else {"k": value}
    return {"k": value}


def _fields_of_size(size: int, unit: str = "x") -> dict:
    """``fields`` that encode to exactly ``size`` bytes (msgspec writes them without spaces)."""
    room = size - len(b'{"k":""}')
    text = unit * (room // len(unit.encode())) + "x" * (room % len(unit.encode()))
    assert len(json.dumps({"k": text}, ensure_ascii=False, separators=(",", ":")).encode()) == size
    return {"k": text}


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
good_fields = st.one_of(
    st.none(),
    st.just({}),
    st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    st.sampled_from(
        [
            _nested(MAX_FIELDS_DEPTH),
            _fields_of_size(MAX_FIELDS_BYTES),
            _fields_of_size(MAX_FIELDS_BYTES, "é"),
            {"k": Raw('"\\u00e9"'), "n": Raw("1E2"), "z": Raw("-0.0"), "": Raw("[]")},
        ]
    ),
)
bad_fields = st.one_of(
    st.sampled_from(
        [
            _nested(MAX_FIELDS_DEPTH + 1),
            _fields_of_size(MAX_FIELDS_BYTES + 1),
            _fields_of_size(MAX_FIELDS_BYTES + 1, "é"),
            {"n": Raw("1e999")},
            {"n": Raw("NaN")},
        ]
    ),
    WRONG_TYPES,
)

# key: (good values, bad values, in how many records of 10 it is left out when optional)
FIELDS = {
    "channel": (good_channel, bad_channel, 0),
    "message": (good_message, bad_message, 0),
    "level": (good_level, bad_level, 4),
    "timestamp": (good_timestamp, bad_timestamp, 4),
    "source": (good_source, bad_source, 5),
    "fields": (good_fields, bad_fields, 5),
    "id": (good_id, bad_id, 3),
}
EXTRA_KEYS = st.one_of(
    st.sampled_from(["received_at", "publisher", "seq", "colour", "Channel", "MESSAGE", "id "]),
    st.text(max_size=6),
)
NOT_OBJECTS = st.sampled_from([1, "x", None, [], [{"channel": "logs:etl:ws1", "message": "m"}]])


@st.composite
def records(draw, messy: bool) -> Pairs:
    """A record object of good values; a ``messy`` one mixes in bad values and keys."""
    pairs = Pairs()
    for key, (good, bad, left_out) in FIELDS.items():
        roll = draw(st.integers(0, 9))
        if roll < left_out or (messy and roll == 9 and draw(st.booleans())):
            continue
        pairs.append((key, draw(st.one_of(good, good, bad) if messy else good)))
    if messy and draw(st.integers(0, 3)) == 0:
        pairs.append((draw(EXTRA_KEYS), draw(st.one_of(json_values, bad_timestamp))))
    return Pairs(draw(st.permutations(pairs)))


@st.composite
def one_flaw(draw, batch: list) -> str:
    """Spoils ``batch`` in exactly one way (when it can); says how, for the statistics."""
    index = draw(st.integers(0, len(batch) - 1))
    record = batch[index] = Pairs(batch[index])
    flaw = draw(st.sampled_from(["bad value"] * 6 + ["missing", "extra key", "twice", "item"]))
    if flaw == "bad value":
        key = draw(st.sampled_from(list(FIELDS)))
        value = draw(FIELDS[key][1])
        at = next((i for i, (name, _) in enumerate(record) if name == key), None)
        if at is None:
            record.append((key, value))
        else:
            record[at] = (key, value)
        return f"bad {key}"
    if flaw == "missing":
        required = draw(st.sampled_from(["channel", "message"]))
        record[:] = [pair for pair in record if pair[0] != required]
    elif flaw == "extra key":
        record.append((draw(EXTRA_KEYS), draw(json_values)))
    elif flaw == "twice" and record:  # a key twice: the decoder keeps one of the values
        key, _ = record[draw(st.integers(0, len(record) - 1))]
        record.insert(draw(st.integers(0, len(record))), (key, draw(FIELDS[key][1])))
    else:
        batch.insert(draw(st.integers(0, len(batch))), draw(NOT_OBJECTS))
    return flaw


@st.composite
def bodies(draw) -> tuple[bytes, str, int]:
    """(body, media type, max_records): a batch as a producer might send it, or spoil it.

    ``good``: good values only. ``flaw`` and ``spoilt``: good values but one record, or the
    body, spoilt in one way: the likeliest to slip through one path and not the other.
    ``messy``: anything, several ways at once."""
    kind = draw(st.sampled_from(["good", "good", "flaw", "flaw", "spoilt", "messy"]))
    messy = kind == "messy"
    batch = draw(st.lists(records(messy), min_size=0 if messy else 1, max_size=5))
    if batch and draw(st.integers(0, 3)) == 0:  # the same record again (same id, if any)
        batch.insert(draw(st.integers(0, len(batch))), batch[draw(st.integers(0, len(batch) - 1))])
    if kind == "flaw":
        event(f"flaw: {draw(one_flaw(batch))}")
    if messy and draw(st.integers(0, 4)) == 0:
        batch.insert(draw(st.integers(0, len(batch))), draw(NOT_OBJECTS))
    ascii_only = draw(st.booleans())
    shape = draw(st.sampled_from(["array", "object", "ndjson"]))
    if shape == "object" and batch:
        text = _dumps(batch[0], ascii_only)
    elif shape == "ndjson":
        lines = [_dumps(item, ascii_only) for item in batch]
        if draw(st.booleans()):  # blank lines between
            blank = st.sampled_from(["", " ", "\t", "\r"])
            lines = [line for item in lines for line in (item, draw(blank))]
        end = draw(st.sampled_from(["\n", "\r\n"]))
        text = end.join(lines) + draw(st.sampled_from(["", end]))
    else:
        text = _dumps(batch, ascii_only)
    if draw(st.integers(0, 9)) == 0:  # JSON whitespace, line breaks included
        text = text.replace(",", ",\n ").replace("{", "{ ")
    body = text.encode("utf-8", "surrogatepass")
    native = NDJSON if shape == "ndjson" else JSON
    media, max_records = native, 1000
    spoils = ["cut", "byte", "latin-1", "bom", "media", "count"]
    if kind == "spoilt":
        spoil = draw(st.sampled_from(spoils))
    elif messy:
        spoil = draw(st.sampled_from(["none"] * 6 + spoils))
    else:
        spoil = "none"
    if spoil == "none":
        pass
    elif spoil == "cut":
        body = body[: draw(st.integers(0, len(body)))]
    elif spoil == "byte":  # (inside a string or out)
        at = draw(st.integers(0, len(body)))
        extra = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\n", b"]"]))
        body = body[:at] + extra + body[at:]
    elif spoil == "latin-1":
        body = text.encode("latin-1", "replace")
    elif spoil == "bom":
        body = b"\xef\xbb\xbf" + body
    elif spoil == "media":
        media = JSON if native == NDJSON else NDJSON
    else:  # past the limit, or at it
        max_records = draw(st.integers(max(len(batch) - 1, 0), len(batch)))
    if spoil != "none":
        event(f"spoilt: {spoil}")
    return body, media, max_records


def _fast(body: bytes, media: str, max_records: int) -> ValidBatch | LogstreamError | None:
    try:
        return decode_valid(
            body, media, publisher="etl", services=SERVICES, max_records=max_records, now=NOW
        )
    except LogstreamError as exc:
        return exc


def _general(body: bytes, media: str, max_records: int):
    try:
        records = decode_batch(body, media, max_records=max_records)
        return validate_records(records, publisher="etl", services=SERVICES, now=NOW)
    except LogstreamError as exc:
        return exc


def _emoji_message(chars: int) -> tuple[bytes, str, int]:
    return json.dumps({"channel": "logs:etl:ws1", "message": EMOJI * chars}).encode(), JSON, 1000


@settings(max_examples=1200, deadline=None, derandomize=True)
@given(case=bodies())
@example(case=_emoji_message(SURELY_SHORT_CHARS))  # 65,536 bytes: accepted
@example(case=_emoji_message(SURELY_SHORT_CHARS + 1))  # 65,540 bytes: refused
@example(case=(b'{"channel":"logs:etl:ws1","message":"m","id":""}', JSON, 1000))
@example(case=(b'{"channel":"logs:etl:ws1","message":"m","level":"wArNiNg"}', NDJSON, 1000))
@example(case=(b'{"channel":"logs:etl:ws1","message":"m","received_at":"x"}', JSON, 1000))
@example(case=(b'[{"channel":"logs:etl:ws1","message":"m"}]\n', JSON, 0))
def test_the_fast_path_accepts_only_what_the_general_path_accepts_and_makes_the_same_records(case):
    body, media, max_records = case
    fast = _fast(body, media, max_records)
    general = _general(body, media, max_records)
    if isinstance(general, Exception):
        event(f"general path refuses: {status_of(general)} {general.code}")
    if fast is None:
        event("fast path declines" + (" a valid body" if isinstance(general, list) else ""))
        return
    if isinstance(fast, LogstreamError):
        event("fast path refuses")
        assert isinstance(general, LogstreamError), f"general path accepts: {general}"
        assert (fast.code, status_of(fast)) == (general.code, status_of(general))
        return
    event("fast path accepts")
    assert isinstance(general, list), f"general path refuses: {general!r}"
    assert list(fast) == general
    assert [_encode(draft) for draft in fast.drafts] == [
        encode_stored(valid.record) for valid in general
    ]
    assert list(fast.channels.items()) == list(
        {valid.record.channel: valid.channel for valid in general}.items()
    )
