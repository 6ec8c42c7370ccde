"""The wire schema of a log record (docs/reference/records.md) and the one place that validates it.

``PublishedRecord`` is what a producer sends; ``StoredRecord`` is what ingest writes to
JetStream (normalised level and timestamp, plus ``received_at`` and ``publisher``); a delivered
record is the stored JSON with ``seq`` spliced in front by ``delivered_json``, so the gateway
never decodes a record to deliver it.

Every rule of a record is written here once, and both ingest paths take it from here: the
general path (``decode_batch`` + ``validate_records``, which names every problem) and the fast
path of services/ingest/valid_batch.py, whose ``Draft`` is derived from ``PublishedRecord``
(field names, types, size limits, defaults, unknown keys refused) and which calls
``ndjson_lines``, ``check_count``, ``record_channel``, ``receipt_time``, ``all_normal`` and
``normalised`` rather than checking anything itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from logstream.shared.channels import DEFAULT_SERVICES, Channel, parse_channel
from logstream.shared.errors import InvalidChannel, InvalidRequest, PayloadTooLarge

__all__ = [
    "LEVELS",
    "MAX_BATCH_RECORDS",
    "MAX_FIELDS_BYTES",
    "MAX_FIELDS_DEPTH",
    "MAX_MESSAGE_BYTES",
    "NDJSON",
    "SURELY_SHORT_CHARS",
    "PublishedRecord",
    "RecordProblem",
    "StoredRecord",
    "ValidRecord",
    "all_normal",
    "check_count",
    "decode_batch",
    "delivered_json",
    "encode_stored",
    "format_time",
    "level_rank",
    "ndjson_lines",
    "normalised",
    "parse_rfc3339",
    "receipt_time",
    "record_channel",
    "validate_records",
]

# docs/reference/records.md limits. A message over 64 KiB is a document, not a log line.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_FIELDS_BYTES = 16 * 1024
# Nesting of ``fields``: real structured logs go a few levels deep. A bound far below Python's
# recursion limit means no record that passed validation can fail to encode further on.
MAX_FIELDS_DEPTH = 32
MAX_SOURCE_CHARS = 128
MAX_ID_CHARS = 128
# docs/reference/ingest.md: a batch holds at most 1,000 records.
MAX_BATCH_RECORDS = 1000
# The media type of a body of one record per line (docs/reference/ingest.md#body); any other
# accepted type is JSON: one record object or an array of them.
NDJSON = "application/x-ndjson"
LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")
_LEVEL_NAMES = frozenset(LEVELS)
_LEVEL_ALIASES = {"warning": "warn"}
_LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}
# Epoch milliseconds from 1970 to the end of year 9999: anything else is not a timestamp.
_MAX_EPOCH_MS = 253402300799999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# RFC 3339 date-time (section 5.6): ``fromisoformat`` alone also takes ISO 8601 forms such as
# week dates, basic format or a missing offset, which are not part of the contract.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})",
    re.ASCII | re.IGNORECASE,
)


class _Wire(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class PublishedRecord(_Wire, frozen=True):  # (frozen again: mypy reads no inherited config)
    channel: str
    message: Annotated[str, Meta(max_length=MAX_MESSAGE_BYTES)]
    level: str = "info"
    timestamp: str | int | None = None
    source: Annotated[str, Meta(max_length=MAX_SOURCE_CHARS)] | None = None
    fields: dict[str, Any] | None = None
    id: Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)] | None = None


class StoredRecord(_Wire, frozen=True):
    channel: str
    level: str
    message: str
    timestamp: str
    received_at: str
    publisher: str
    source: str | None = None
    fields: dict[str, Any] | None = None
    id: str | None = None


class ValidRecord(msgspec.Struct, frozen=True):
    """A record that passed every check, ready to store."""

    channel: Channel
    record: StoredRecord


_JSON_BATCH = msgspec.json.Decoder(PublishedRecord | list[PublishedRecord])
_JSON_ONE = msgspec.json.Decoder(PublishedRecord)
_JSON_ANY = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()
_PATH_FIELD = re.compile(r"`\$(?:\[\d+\])?\.?([A-Za-z_][A-Za-z0-9_]*)?")
_NAMED_FIELD = re.compile(r"field `([^`]*)`")


def decode_batch(body: bytes, media_type: str, *, max_records: int = MAX_BATCH_RECORDS):
    """Decode a request body into records, or raise with every problem named by index and field."""
    try:
        return _decode_batch(body, media_type, max_records)
    except RecursionError:  # JSON nested hundreds deep: msgspec gives up, and so do we
        raise InvalidRequest("body is nested too deeply to hold log records") from None
    # msgspec raises UnicodeDecodeError, not DecodeError, for invalid UTF-8 inside a string.
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"body is not valid UTF-8 ({exc.reason}: byte 0x{exc.object[exc.start]:02x})"
        ) from None


def ndjson_lines(body: bytes) -> list[bytes]:
    """An NDJSON body's records, one a line: blank lines (and a CR before a LF) are no record."""
    return [line for line in body.split(b"\n") if line.strip()]


def _decode_batch(body: bytes, media_type: str, max_records: int):
    if media_type == NDJSON:
        lines = ndjson_lines(body)
        check_count(len(lines), max_records)
        records, details = [], []
        for index, line in enumerate(lines):
            try:
                records.append(_JSON_ONE.decode(line))
            except msgspec.DecodeError as exc:
                details.append(_detail(index, exc))
        if details:
            raise InvalidRequest(_summary(details), details=details)
        return records
    try:
        decoded = _JSON_BATCH.decode(body)
    except msgspec.ValidationError:
        return _explain_json(body, max_records)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None
    records = [decoded] if isinstance(decoded, PublishedRecord) else decoded
    check_count(len(records), max_records)
    return records


def _explain_json(body: bytes, max_records: int):
    """Slow path, only for invalid bodies: convert record by record to name each problem."""
    try:
        raw = _JSON_ANY.decode(body)
    except msgspec.DecodeError as exc:
        # The typed decode stopped at a bad record before reaching broken JSON further on.
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None
    if isinstance(raw, dict):
        items = [raw]
    elif isinstance(raw, list):
        items = raw
    else:
        raise InvalidRequest("body must be a JSON object or an array of objects")
    check_count(len(items), max_records)
    details = []
    for index, item in enumerate(items):
        try:
            msgspec.convert(item, PublishedRecord)
        except msgspec.ValidationError as exc:
            details.append(_detail(index, exc))
    if not details:
        raise InvalidRequest("body must be a JSON object or an array of record objects")
    raise InvalidRequest(_summary(details), details=details)


def check_count(count: int, max_records: int) -> None:
    """A batch holds 1 to ``max_records`` records: 400 for none, 413 for too many."""
    if count == 0:
        raise InvalidRequest("body holds no records")
    if count > max_records:
        raise PayloadTooLarge(f"batch has {count} records; the limit is {max_records}")


def _detail(index: int, exc: Exception) -> dict[str, Any]:
    text = str(exc)
    named = _NAMED_FIELD.search(text)
    at = _PATH_FIELD.search(text)
    field = named.group(1) if named else (at.group(1) if at and at.group(1) else None)
    message = text.split(" - at `")[0]
    return {"index": index, "field": field, "message": message}


def _summary(details: list[dict[str, Any]]) -> str:
    first = details[0]
    where = f"record {first['index']}" + (f" field {first['field']!r}" if first["field"] else "")
    more = f" (and {len(details) - 1} more problems)" if len(details) > 1 else ""
    return f"{where}: {first['message']}{more}"


def validate_records(
    records: Iterable[PublishedRecord],
    *,
    publisher: str,
    services: Iterable[str] = DEFAULT_SERVICES,
    now: datetime | None = None,
) -> list[ValidRecord]:
    """Check every record's semantics; all problems are reported together, nothing is partial."""
    services = frozenset(services)
    received_at = receipt_time(now)
    valid, details = [], []
    # A batch names few channels: each is parsed (and formatted) once.
    channels: dict[str, tuple[Channel, str] | str] = {}
    for index, record in enumerate(records):
        try:
            valid.append(_validate_one(record, publisher, services, received_at, channels))
        except RecordProblem as problem:
            details.append({"index": index, "field": problem.field, "message": problem.message})
    if details:
        raise InvalidRequest(_summary(details), details=details)
    return valid


class RecordProblem(Exception):
    """One record's problem: the field it lies in and what is wrong, for the 400's details."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message


# A message of at most this many characters fits MAX_MESSAGE_BYTES whatever they are (UTF-8
# spends at most 4 bytes on one): only longer ones are encoded to be measured.
SURELY_SHORT_CHARS = MAX_MESSAGE_BYTES // 4


def receipt_time(now: datetime | None = None) -> str:
    """A request's ``received_at`` (and the ``timestamp`` of its records that have none)."""
    return format_time(now or datetime.now(UTC))


def record_channel(name: str, services: frozenset[str]) -> tuple[Channel, str]:
    """A record's channel (docs/reference/channels.md#grammar) and the name it is stored
    under; ``RecordProblem`` naming ``channel`` otherwise."""
    try:
        channel = parse_channel(name, services)
    except InvalidChannel as exc:
        raise RecordProblem("channel", exc.message) from None
    return channel, str(channel)


def _channel_of(
    name: str, services: frozenset[str], channels: dict[str, tuple[Channel, str] | str]
) -> tuple[Channel, str]:
    """``record_channel``, once per name: ``channels`` keeps each answer (or problem)."""
    known = channels.get(name)
    if known is None:
        try:
            known = record_channel(name, services)
        except RecordProblem as problem:
            known = problem.message
        channels[name] = known
    if isinstance(known, str):
        raise RecordProblem("channel", known)
    return known


def _validate_one(
    record: PublishedRecord,
    publisher: str,
    services: frozenset[str],
    received_at: str,
    channels: dict[str, tuple[Channel, str] | str],
) -> ValidRecord:
    channel, name = _channel_of(record.channel, services, channels)
    level, timestamp = normalised(
        record.level, record.message, record.fields, record.timestamp, received_at
    )
    return ValidRecord(
        channel,
        StoredRecord(
            channel=name,
            level=level,
            message=record.message,
            timestamp=timestamp,
            received_at=received_at,
            publisher=publisher,
            source=record.source,
            fields=record.fields,
            id=record.id,
        ),
    )


def normalised(
    level: str,
    message: str,
    fields: dict[str, Any] | None,
    timestamp: str | int | None,
    received_at: str,
) -> tuple[str, str]:
    """Every check of a record but its channel's (message size, level, fields, timestamp):
    the level and timestamp as stored; ``RecordProblem`` naming the field otherwise."""
    if len(message) > SURELY_SHORT_CHARS and len(message.encode()) > MAX_MESSAGE_BYTES:
        raise RecordProblem("message", f"message is over {MAX_MESSAGE_BYTES} bytes")
    if level not in _LEVEL_NAMES:  # (the usual case is already a level's own name)
        named = _LEVEL_ALIASES.get(level.lower(), level.lower())
        if named not in _LEVEL_NAMES:
            raise RecordProblem("level", f"level {level!r} is not one of {', '.join(LEVELS)}")
        level = named
    if fields is not None:
        if _depth(fields) > MAX_FIELDS_DEPTH:
            raise RecordProblem("fields", f"fields nest deeper than {MAX_FIELDS_DEPTH} levels")
        if len(_ENCODER.encode(fields)) > MAX_FIELDS_BYTES:
            raise RecordProblem("fields", f"fields encode to over {MAX_FIELDS_BYTES} bytes")
    return level, received_at if timestamp is None else _timestamp(timestamp)


_LEVEL_OF = attrgetter("level")
_MESSAGE_OF = attrgetter("message")
_FIELDS_OF = attrgetter("fields")
_TIMESTAMP_OF = attrgetter("timestamp")


def all_normal(records: Sequence[Any]) -> bool:
    """Whether ``normalised`` would pass each of ``records`` (with ``level``, ``message``,
    ``fields`` and ``timestamp``) unchanged, its timestamp ``received_at``, so needs no call:
    no timestamp, a level's own name, no fields (``{}`` is valid as it is) and a message short
    enough to fit whatever its characters. Each step is one ``map`` over the batch, in C."""
    if not records:  # (``max`` needs one; its ``default=`` would add a quarter to this test)
        return True
    return (
        list(map(_TIMESTAMP_OF, records)).count(None) == len(records)
        and _LEVEL_NAMES.issuperset(map(_LEVEL_OF, records))
        and not any(map(_FIELDS_OF, records))
        and max(map(len, map(_MESSAGE_OF, records))) <= SURELY_SHORT_CHARS
    )


def _depth(value: Any) -> int:
    """How deep objects and arrays nest in ``value``; iterative, and it stops past the limit."""
    deepest, pending = 0, [(value, 1)]
    while pending and deepest <= MAX_FIELDS_DEPTH:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in item)
    return deepest


def _timestamp(value: str | int) -> str:
    if isinstance(value, int):
        if not 0 <= value <= _MAX_EPOCH_MS:
            raise RecordProblem("timestamp", f"epoch milliseconds {value} are out of range")
        # Integer arithmetic: a float division would blur the milliseconds of distant dates.
        return format_time(_EPOCH + timedelta(milliseconds=value))
    try:
        return format_time(parse_rfc3339(value))
    except ValueError as exc:
        raise RecordProblem("timestamp", f"timestamp {exc} nor epoch milliseconds") from None


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 date-time with an offset, in UTC; ``ValueError`` saying why otherwise."""
    try:
        if _RFC3339.fullmatch(value):
            return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except ValueError:
        pass  # a day or hour that does not exist: the same answer as bad syntax
    except OverflowError:  # year 1 or 9999 pushed out of range by its offset
        raise ValueError(f"{value[:64]!r} is out of range") from None
    raise ValueError(f"{value[:64]!r} is not RFC 3339 with an offset (e.g. 2026-01-31T12:00:00Z)")


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``: milliseconds, or microseconds where they carry information."""
    moment = moment.astimezone(UTC)
    spec = "milliseconds" if moment.microsecond % 1000 == 0 else "microseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def level_rank(level: str) -> int:
    return _LEVEL_RANK.get(level, 0)


def encode_stored(record: StoredRecord) -> bytes:
    return _ENCODER.encode(record)


def delivered_json(seq: int, stored: bytes) -> bytes:
    """The delivered record: the stored JSON object with ``seq`` first, without a decode."""
    return b'{"seq":%d,%s' % (seq, stored[1:])
