"""A publish body decoded straight into what ingest stores: the fast path of ``decode_batch`` +
``validate_records`` (shared/records.py, which stay the rules and name every problem).

``decode_batch`` makes a ``PublishedRecord`` per record and ``validate_records`` a
``StoredRecord`` and a ``ValidRecord`` per record, about 2 us per record at ingest's rate.
Here one msgspec decode makes a ``Draft`` per record, laid out as ``StoredRecord``: the checks
run over the whole batch (``map`` in C), only records that need normalising (a level alias, a
timestamp, fields, a long message) get a Python call of their own, and once ``received_at``
and ``publisher`` are set a draft encodes to the very bytes of its ``StoredRecord``. Anything
wrong, or not decodable this way, is left to the general path, which names every problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from logstream.shared.channels import Channel, parse_channel
from logstream.shared.errors import InvalidChannel
from logstream.shared.records import (
    LEVELS,
    MAX_BATCH_RECORDS,
    MAX_ID_CHARS,
    MAX_MESSAGE_BYTES,
    MAX_SOURCE_CHARS,
    SURELY_SHORT_CHARS,
    RecordProblem,
    StoredRecord,
    ValidRecord,
    format_time,
    normalised,
)

__all__ = ["Draft", "ValidBatch", "decode_valid"]

_LEVEL_SET = frozenset(LEVELS)
_CHANNEL = attrgetter("channel")
_LEVEL = attrgetter("level")
_MESSAGE = attrgetter("message")
_TIMESTAMP = attrgetter("timestamp")
_FIELDS = attrgetter("fields")


class Draft(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """A producer's record (``PublishedRecord``'s rules) in ``StoredRecord``'s field order;
    ``received_at`` and ``publisher`` are not the producer's to send (a value for either fails
    the decode, as an unknown key does)."""

    channel: str
    level: str = "info"
    message: Annotated[str, Meta(max_length=MAX_MESSAGE_BYTES)]
    timestamp: str | int | None = None
    received_at: UnsetType = UNSET
    publisher: UnsetType = UNSET
    source: Annotated[str, Meta(max_length=MAX_SOURCE_CHARS)] | None = None
    fields: dict[str, Any] | None = None
    id: Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)] | None = None


_JSON_BATCH = msgspec.json.Decoder(Draft | list[Draft])
_JSON_ONE = msgspec.json.Decoder(Draft)


class ValidBatch(Sequence[ValidRecord]):
    """Valid drafts (each encodes to its stored JSON) and their channels by stored name; as a
    sequence, the ``ValidRecord``s ``validate_records`` would have made, built when asked."""

    __slots__ = ("channels", "drafts")

    def __init__(self, drafts: list[Draft], channels: dict[str, Channel]) -> None:
        self.drafts = drafts
        self.channels = channels

    def __len__(self) -> int:
        return len(self.drafts)

    def __getitem__(self, index):  # (ints only: nothing slices a batch)
        draft = self.drafts[index]
        return ValidRecord(
            self.channels[draft.channel],
            StoredRecord(
                channel=draft.channel,
                level=draft.level,
                message=draft.message,
                timestamp=draft.timestamp,
                received_at=draft.received_at,
                publisher=draft.publisher,
                source=draft.source,
                fields=draft.fields,
                id=draft.id,
            ),
        )


def decode_valid(
    body: bytes,
    media_type: str,
    *,
    publisher: str,
    services: Iterable[str],
    max_records: int = MAX_BATCH_RECORDS,
    now: datetime | None = None,
) -> ValidBatch | None:
    """The records ``validate_records(decode_batch(...))`` would accept, faster; ``None`` when
    the body is not a batch of valid records (the general path then says what is wrong)."""
    drafts = _decode(body, media_type, max_records)
    if drafts is None:
        return None
    channels = _channels(drafts, frozenset(services))
    received_at = format_time(now or datetime.now(UTC))
    if channels is None or not _normalise(drafts, publisher, received_at):
        return None
    return ValidBatch(drafts, channels)


def _decode(body: bytes, media_type: str, max_records: int) -> list[Draft] | None:
    try:
        if media_type == "application/x-ndjson":
            drafts = [_JSON_ONE.decode(line) for line in body.split(b"\n") if line.strip()]
        else:
            decoded = _JSON_BATCH.decode(body)
            drafts = [decoded] if isinstance(decoded, Draft) else decoded
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None
    return drafts if 0 < len(drafts) <= max_records else None


def _channels(drafts: list[Draft], services: frozenset[str]) -> dict[str, Channel] | None:
    """The batch's channels by stored name, in record order (drafts renamed to it), or
    ``None``: one is invalid."""
    channels, renamed = {}, {}
    for name in dict.fromkeys(map(_CHANNEL, drafts)):  # few, in record order
        try:
            channel = parse_channel(name, services)
        except InvalidChannel:
            return None
        stored = str(channel)
        channels[stored] = channel
        if stored != name:
            renamed[name] = stored
    if renamed:
        for draft in drafts:
            draft.channel = renamed.get(draft.channel, draft.channel)
    return channels


def _normalise(drafts: list[Draft], publisher: str, received_at: str) -> bool:
    """Sets what a draft lacks to be stored; ``False`` when a record is invalid."""
    timestamps = list(map(_TIMESTAMP, drafts))
    usual = (
        timestamps.count(None) == len(timestamps)
        and _LEVEL_SET.issuperset(map(_LEVEL, drafts))
        and not any(map(_FIELDS, drafts))  # ({} is valid as it is)
        and max(map(len, map(_MESSAGE, drafts))) <= SURELY_SHORT_CHARS
    )
    if usual:  # no timestamp, a level's own name, no fields, a short message: nothing to check
        for draft in drafts:
            draft.timestamp = draft.received_at = received_at
            draft.publisher = publisher
        return True
    try:
        for draft in drafts:
            draft.level, draft.timestamp = normalised(
                draft.level, draft.message, draft.fields, draft.timestamp, received_at
            )
            draft.received_at = received_at
            draft.publisher = publisher
    except RecordProblem:
        return False
    return True
