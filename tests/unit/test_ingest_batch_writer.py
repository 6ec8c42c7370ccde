"""The batch writer's wire bytes and ack bookkeeping, without a broker (the integration tests
in tests/integration/test_ingest_batch_store.py hold the claims about JetStream)."""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
import pytest
from nats.protocol.command import hpub_cmd, pub_cmd

from logstream.services.ingest.batch_writer import BatchWriter, OutMessage, _Batch, msg_id_header
from logstream.services.ingest.publisher import message_id, out_messages
from logstream.shared.records import PublishedRecord, validate_records


class _Connection:
    """What ``BatchWriter._commands`` reads of a nats-py client."""

    max_payload = 1024


def test_the_batch_bytes_are_the_pub_and_hpub_lines_nats_py_would_write():
    writer = BatchWriter(_Connection())
    header = msg_id_header("etl:r1")
    command = writer._commands(
        [
            OutMessage(b"logs.etl.w", None, b'{"a":1}'),
            OutMessage(b"logs.etl.w", header, b'{"b":2}'),
        ],
        b"_INBOX_x.7.",
    )
    assert command == (
        pub_cmd("logs.etl.w", "_INBOX_x.7.0", b'{"a":1}')
        + hpub_cmd("logs.etl.w", "_INBOX_x.7.1", header, b'{"b":2}')
    )


def test_a_message_over_the_broker_max_payload_is_refused_before_anything_is_sent():
    with pytest.raises(nats.errors.MaxPayloadError):
        BatchWriter(_Connection())._commands([OutMessage(b"s", None, b"x" * 2000)], b"r.")


def test_a_msg_id_with_line_breaks_becomes_one_header_line():
    assert (
        msg_id_header(" etl:a\r\nPUB x 1\r\n ")
        == b"NATS/1.0\r\nNats-Msg-Id: etl:a  PUB x 1\r\n\r\n"
    )
    assert msg_id_header("etl:plain") == b"NATS/1.0\r\nNats-Msg-Id: etl:plain\r\n\r\n"


def test_out_messages_carry_subject_msg_id_and_stored_json_in_record_order():
    records = validate_records(
        [
            PublishedRecord(channel="logs:etl:w1:a", message="one", id="7"),
            PublishedRecord(channel="logs:etl:w1", message="two"),
        ],
        publisher="etl",
    )
    first, second = out_messages(records, "etl")
    assert (first.subject, second.subject) == (b"logs.etl.w1.a", b"logs.etl.w1")
    assert first.header == msg_id_header(message_id("etl", "7")) and second.header is None
    assert b'"message":"one"' in first.payload and b'"publisher":"etl"' in second.payload


async def test_a_batch_is_done_when_every_message_is_acked_in_any_order_and_repeats_ignored():
    batch = _Batch(3)
    batch.acked(2, b'{"stream":"LOGS","seq":12}', None)
    batch.acked(0, b'{"stream":"LOGS","seq":10}', None)
    batch.acked(2, b'{"stream":"LOGS","seq":99}', None)  # a redelivered ack changes nothing
    assert not batch.done.done()
    batch.acked(1, b'{"stream":"LOGS","seq":10,"duplicate":true}', None)
    assert await batch.done == [10, 10, 12]


async def test_a_no_responders_answer_fails_the_batch_as_no_stream():
    batch = _Batch(2)
    batch.acked(0, b"", b"NATS/1.0 503\r\n\r\n")
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await batch.done


async def test_a_jetstream_error_ack_fails_the_batch_with_its_api_error():
    batch = _Batch(1)
    batch.acked(0, b'{"error":{"code":503,"err_code":10077,"description":"store full"}}', None)
    with pytest.raises(nats.js.errors.APIError, match="store full"):
        await batch.done


async def test_an_unreadable_ack_fails_the_batch_rather_than_hanging():
    batch = _Batch(1)
    batch.acked(0, b"not json", None)
    with pytest.raises(nats.errors.Error):
        await asyncio.wait_for(batch.done, 1.0)
