"""``record_commands`` writes the very bytes ``out_messages`` + ``BatchWriter._commands`` did."""

from __future__ import annotations

from datetime import UTC, datetime

import nats.errors
import pytest

from logstream.services.ingest.batch_writer import BatchWriter
from logstream.services.ingest.publisher import out_messages, record_commands
from logstream.shared.records import PublishedRecord, validate_records

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
REPLY = b"_INBOX_ingest.abc.7."


class _Connection:
    max_payload = 4096


def _valid(*records: PublishedRecord, publisher: str = "etl"):
    return validate_records(records, publisher=publisher, now=NOW)


@pytest.mark.parametrize("publisher", ["etl", " etl", "etl\r\n", "a b"])
def test_the_one_pass_batch_bytes_equal_the_message_by_message_ones(publisher):
    valid = _valid(
        PublishedRecord(channel="logs:etl:w1:a", message="one", id="7"),
        PublishedRecord(channel="logs:etl:w1", message="two"),
        PublishedRecord(channel="logs:faas:w2", message="three", id=" spaced id \t"),
        PublishedRecord(channel="logs:etl:w1:a", message="four", id="x\r\nPUB evil 1\r\n"),
        PublishedRecord(channel="logs:etl:w1:a", message="five", id="é ünïcode"),
        publisher=publisher,
    )
    expected = BatchWriter(_Connection())._commands(out_messages(valid, publisher), REPLY)
    assert record_commands(valid, publisher)(REPLY, _Connection.max_payload) == expected


def test_a_record_over_the_broker_max_payload_is_refused_before_anything_is_sent():
    valid = _valid(PublishedRecord(channel="logs:etl:w1", message="x" * 5000))
    with pytest.raises(nats.errors.MaxPayloadError):
        record_commands(valid, "etl")(REPLY, _Connection.max_payload)
