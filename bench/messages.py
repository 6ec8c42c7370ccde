"""The benchmark's log messages: 200 bytes, each carrying its number and when it was sent.

``BM|<seq:10>|<monotonic ns:19>|xxxx...``: readers count messages by counting ``MARK`` in the
bytes they receive (no parsing), and parse the send time only on sampled connections.
``time.monotonic_ns`` is CLOCK_MONOTONIC, one clock for every process on the machine.
"""

from __future__ import annotations

import time

import msgspec

from bench.credentials import WORKSPACE
from logstream.shared.records import PublishedRecord, StoredRecord, encode_stored

__all__ = [
    "MARK",
    "MESSAGE_BYTES",
    "STAMP_END",
    "STAMP_START",
    "bench_channel",
    "message",
    "published_records",
    "stamp_at",
    "stored_record_factory",
]

MARK = b"BM|"
# The bench's workload: 200-byte messages.
MESSAGE_BYTES = 200
STAMP_START = len(MARK) + 11
STAMP_END = STAMP_START + 19
_PAD = b"x" * MESSAGE_BYTES
_PLACEHOLDER = "\x00MESSAGE\x00"


def message(seq: int) -> bytes:
    head = b"BM|%010d|%019d|" % (seq, time.monotonic_ns())
    return head + _PAD[: MESSAGE_BYTES - len(head)]


def stamp_at(data: bytes, index: int) -> int | None:
    """The send time of the message whose mark starts at ``index``, if it is all there."""
    if index + STAMP_END > len(data):
        return None
    try:
        return int(data[index + STAMP_START : index + STAMP_END])
    except ValueError:
        return None


def bench_channel(name: str) -> str:
    return f"logs:etl:{WORKSPACE}:{name}"


def stored_record_factory(channel: str):
    """``seq -> bytes``: the JSON ingest would store for a record carrying ``message(seq)``.

    Encoded once through ``logstream.shared.records``; each message is spliced into the same bytes.
    """
    template = encode_stored(
        StoredRecord(
            channel=channel,
            level="info",
            message=_PLACEHOLDER,
            timestamp="2026-01-01T00:00:00Z",
            received_at="2026-01-01T00:00:00Z",
            publisher="bench",
        )
    )
    head, _, tail = template.partition(msgspec.json.encode(_PLACEHOLDER)[1:-1])
    return lambda seq: head + message(seq) + tail


def published_records(channel: str, first_seq: int, count: int, tag: str) -> bytes:
    """A JSON array of records as a producer publishes them (each with an idempotency id)."""
    return msgspec.json.encode(
        [
            PublishedRecord(channel=channel, message=message(seq).decode(), id=f"{tag}-{seq}")
            for seq in range(first_seq, first_seq + count)
        ]
    )
