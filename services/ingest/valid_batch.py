"""A publish body decoded straight into what ingest stores: the fast path of ``decode_batch`` +
``validate_records`` (shared/records.py, which stay the rules and name every problem).

``decode_batch`` makes a ``PublishedRecord`` per record and ``validate_records`` a
``StoredRecord`` and a ``ValidRecord`` per record, about 2 us per record at ingest's rate.
Here one msgspec decode makes a ``Draft`` per record, laid out as ``StoredRecord``: the checks
run over the whole batch (``map`` in C), only records that need normalising (a level alias, a
timestamp, fields, a long message) get a Python call of their own, and once ``received_at``
and ``publisher`` are set a draft encodes to the very bytes of its ``StoredRecord``. Anything
wrong, or not decodable this way, is left to the general path, which names every problem.

No rule of a record is written here: ``Draft`` is derived from ``PublishedRecord`` and every
check is a function of shared/records.py, so the two paths cannot drift apart
(tests/unit/test_record_rules_differential.py holds them to it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from logstream.shared.channels import Channel
from logstream.shared.errors import LogstreamError
from logstream.shared.records import (
    MAX_BATCH_RECORDS,
    NDJSON,
    PublishedRecord,
    RecordProblem,
    StoredRecord,
    ValidRecord,
    all_normal,
    check_count,
    ndjson_lines,
    normalised,
    receipt_time,
    record_channel,
)

__all__ = ["Draft", "ValidBatch", "decode_valid"]

_CHANNEL = attrgetter("channel")


def _draft_fields() -> list[tuple[str, Any] | tuple[str, Any, Any]]:
    """``PublishedRecord``'s fields as declared (type, limits, default), in ``StoredRecord``'s
    order; the stored fields a producer does not send typed ``UnsetType``, so a value for one
    fails the decode as an unknown key does."""
    published = {field.name: field for field in msgspec.structs.fields(PublishedRecord)}
    layout: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name in StoredRecord.__struct_fields__:
        field = published.pop(name, None)
        if field is None:
            layout.append((name, UnsetType, UNSET))
        elif field.required:
            layout.append((name, field.type))
        else:
            layout.append((name, field.type, field.default))
    if published:  # a draft could not be stored as it is
        raise TypeError(f"StoredRecord lacks the published fields {', '.join(published)}")
    return layout


# A producer's record (``PublishedRecord``'s rules) in ``StoredRecord``'s field order. Built,
# not declared, so that it cannot drift from ``PublishedRecord``; hence ``Any`` to mypy.
Draft: Any = msgspec.defstruct(
    "Draft",
    _draft_fields(),
    module=__name__,
    kw_only=True,
    forbid_unknown_fields=PublishedRecord.__struct_config__.forbid_unknown_fields,
    gc=False,
)

_JSON_BATCH = msgspec.json.Decoder(Draft | list[Draft])
_JSON_ONE = msgspec.json.Decoder(Draft)


class ValidBatch(Sequence[ValidRecord]):
    """Valid drafts (each encodes to its stored JSON) and their channels by stored name; as a
    sequence, the ``ValidRecord``s ``validate_records`` would have made, built when asked."""

    __slots__ = ("channels", "drafts")

    def __init__(self, drafts: list[Any], channels: dict[str, Channel]) -> None:
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
    received_at = receipt_time(now)
    if channels is None or not _normalise(drafts, publisher, received_at):
        return None
    return ValidBatch(drafts, channels)


def _decode(body: bytes, media_type: str, max_records: int) -> list[Any] | None:
    try:
        if media_type == NDJSON:
            drafts = list(map(_JSON_ONE.decode, ndjson_lines(body)))
        else:
            decoded = _JSON_BATCH.decode(body)
            drafts = [decoded] if isinstance(decoded, Draft) else decoded
        check_count(len(drafts), max_records)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError, LogstreamError):
        return None
    return drafts


def _channels(drafts: list[Any], services: frozenset[str]) -> dict[str, Channel] | None:
    """The batch's channels by stored name, in record order (drafts renamed to it), or
    ``None``: one is invalid."""
    channels, renamed = {}, {}
    for name in dict.fromkeys(map(_CHANNEL, drafts)):  # few, in record order
        try:
            channel, stored = record_channel(name, services)
        except RecordProblem:
            return None
        channels[stored] = channel
        if stored != name:
            renamed[name] = stored
    if renamed:
        for draft in drafts:
            draft.channel = renamed.get(draft.channel, draft.channel)
    return channels


def _normalise(drafts: list[Any], publisher: str, received_at: str) -> bool:
    """Sets what a draft lacks to be stored; ``False`` when a record is invalid."""
    if all_normal(drafts):  # no timestamp, a level's own name, no fields, a short message
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
