"""Atomic batches without a broker: their wire bytes, the commit's answer, and the publisher's
way round a refusal (tests/integration/test_ingest_durability.py holds the claims about
JetStream)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import nats.errors
import nats.js.errors
import pytest

from logstream.services.ingest.batch_writer import (
    MAX_ATOMIC_BATCH,
    OutMessage,
    _AtomicBatch,
    _PubAck,
    atomic_commands,
    msg_id_header,
)
from logstream.services.ingest.publisher import (
    MIN_ATOMIC_RECORDS,
    JetStreamPublisher,
    atomic_messages,
)
from logstream.services.ingest.settings import Settings
from logstream.services.ingest.valid_batch import ValidBatch, decode_valid
from logstream.shared.channels import DEFAULT_SERVICES
from logstream.shared.records import PublishedRecord, validate_records


def validate_batch(drafts: list[dict], *, publisher: str) -> ValidBatch:
    batch = decode_valid(
        msgspec.json.encode(drafts),
        "application/json",
        publisher=publisher,
        services=DEFAULT_SERVICES,
        max_records=100_000,
    )
    assert batch is not None
    return batch


def _parse(command: bytes) -> list[tuple[list[bytes], dict[bytes, bytes], bytes]]:
    """HPUB lines back into (words of the command line, headers, payload), as nats-server
    reads them."""
    messages, rest = [], command
    while rest:
        line, _, rest = rest.partition(b"\r\n")
        words = line.split(b" ")
        assert words[0] == b"HPUB"
        header_size, total = int(words[-2]), int(words[-1])
        block, rest = rest[:total], rest[total + 2 :]
        header_lines = block[:header_size].split(b"\r\n")
        assert header_lines[0] == b"NATS/1.0" and block[:header_size].endswith(b"\r\n\r\n")
        headers = dict(line.split(b": ", 1) for line in header_lines[1:] if line)
        messages.append((words[1:-2], headers, block[header_size:]))
    return messages


def test_every_message_carries_the_batch_headers_and_only_the_last_commits_and_has_a_reply():
    command = atomic_commands(
        [
            OutMessage(b"logs.etl.a", msg_id_header("etl:1"), b"{1}"),
            OutMessage(b"logs.etl.b", None, b"{2}"),
            OutMessage(b"logs.etl.a", msg_id_header("etl:3"), b"{3}"),
        ],
        b"batch-7",
        b"_INBOX_ingest.x.7.0",
        1024,
    )
    messages = _parse(command)
    assert [words for words, _, _ in messages] == [
        [b"logs.etl.a"],
        [b"logs.etl.b"],
        [b"logs.etl.a", b"_INBOX_ingest.x.7.0"],
    ]
    assert [payload for _, _, payload in messages] == [b"{1}", b"{2}", b"{3}"]
    assert [headers for _, headers, _ in messages] == [
        {b"Nats-Msg-Id": b"etl:1", b"Nats-Batch-Id": b"batch-7", b"Nats-Batch-Sequence": b"1"},
        {b"Nats-Batch-Id": b"batch-7", b"Nats-Batch-Sequence": b"2"},
        {
            b"Nats-Msg-Id": b"etl:3",
            b"Nats-Batch-Id": b"batch-7",
            b"Nats-Batch-Sequence": b"3",
            b"Nats-Batch-Commit": b"1",
        },
    ]


def test_a_payload_over_max_payload_is_refused_before_anything_is_sent():
    with pytest.raises(nats.errors.MaxPayloadError):
        atomic_commands([OutMessage(b"s", None, b"x" * 2000)], b"b", b"r", 1024)


def test_the_fast_messages_of_a_valid_batch_equal_the_general_ones():
    drafts = [
        {"channel": "logs:etl:w1:a", "message": "one", "id": "7 "},
        {"channel": "logs:etl:w1", "message": "two", "id": "8"},
    ]
    batch = validate_batch(drafts, publisher="etl")
    records = validate_records([PublishedRecord(**draft) for draft in drafts], publisher="etl")
    fast, general = atomic_messages(batch, "etl"), atomic_messages(records, "etl")
    assert [m.subject for m in fast] == [m.subject for m in general]
    assert [m.subject for m in fast] == [b"logs.etl.w1.a", b"logs.etl.w1"]
    assert [m.header for m in fast] == [m.header for m in general]
    assert [m.header for m in fast] == [msg_id_header("etl:7"), msg_id_header("etl:8")]


async def test_the_commit_answer_gives_each_record_its_own_sequence_in_order():
    batch = _AtomicBatch(3)
    batch.take(0, _PubAck(seq=12, count=3))
    assert await batch.done == [10, 11, 12]


async def test_a_commit_that_stored_another_count_is_an_error_not_wrong_sequences():
    batch = _AtomicBatch(3)
    batch.take(0, _PubAck(seq=12, count=2))
    with pytest.raises(nats.errors.Error, match="committed 2 of an atomic batch of 3"):
        await batch.done


async def test_a_refused_batch_carries_jetstreams_error_code():
    batch = _AtomicBatch(3)
    batch.take(0, _PubAck(error={"code": 400, "err_code": 10201, "description": "dup"}))
    with pytest.raises(nats.js.errors.APIError) as refused:
        await batch.done
    assert refused.value.err_code == 10201


class _Writer:
    """A BatchWriter double: atomic batches answer ``atomic_answer`` (a list of sequences, or
    an exception), plain writes number records from ``next_seq``."""

    def __init__(self, atomic_answer) -> None:
        self.atomic_answer = atomic_answer
        self.next_seq = 100
        self.atomic_sizes: list[int] = []
        self.plain_sizes: list[int] = []

    async def write_atomic(self, count: int, commands, timeout: float) -> list[int]:
        self.atomic_sizes.append(count)
        commands(b"b", b"r", 1 << 20)  # the lines must be makeable
        if isinstance(self.atomic_answer, Exception):
            raise self.atomic_answer
        seqs = list(range(self.next_seq, self.next_seq + count))
        self.next_seq += count
        return seqs

    async def write_commands(self, count: int, commands, timeout: float) -> list[int]:
        self.plain_sizes.append(count)
        commands(b"r.", 1 << 20)
        seqs = list(range(self.next_seq, self.next_seq + count))
        self.next_seq += count
        return seqs


def _publisher(
    refused: list[int], *, atomic_batches: str = "auto", durable: bool = True
) -> JetStreamPublisher:
    publisher = JetStreamPublisher(
        Settings(env="dev", atomic_batches=atomic_batches),  # type: ignore[arg-type]
        on_atomic_refusal=refused.append,
        durable=lambda: durable,
    )
    publisher._atomic = True  # the stream allows atomic batches
    publisher._link = type("Link", (), {"connected": True})()
    return publisher


def _batch(count: int) -> Sequence:
    return validate_batch(
        [{"channel": "logs:etl:w1", "message": f"m{i}", "id": str(i)} for i in range(count)],
        publisher="etl",
    )


@pytest.mark.parametrize("code", [10201, 10211, 10199, 10205])
async def test_a_batch_refused_as_a_whole_is_written_record_by_record(code):
    refused: list[int] = []
    writer = _Writer(nats.js.errors.APIError(code=400, err_code=code, description="no"))
    seqs = await _publisher(refused)._store_atomic(writer, _batch(5), "etl")
    assert seqs == [100, 101, 102, 103, 104]
    assert writer.atomic_sizes == [5] and writer.plain_sizes == [5] and refused == [code]


async def test_another_refusal_is_not_retried_record_by_record():
    writer = _Writer(nats.js.errors.APIError(code=503, err_code=10008, description="away"))
    with pytest.raises(nats.js.errors.APIError):
        await _publisher([])._store_atomic(writer, _batch(5), "etl")
    assert writer.plain_sizes == []


async def test_a_request_larger_than_an_atomic_batch_goes_as_several_in_order():
    writer = _Writer(None)
    seqs = await _publisher([])._store_atomic(writer, _batch(2 * MAX_ATOMIC_BATCH + 5), "etl")
    assert writer.atomic_sizes == [MAX_ATOMIC_BATCH, MAX_ATOMIC_BATCH, 5]
    assert seqs == list(range(100, 100 + 2 * MAX_ATOMIC_BATCH + 5))


@pytest.mark.parametrize(
    ("atomic_batches", "durable", "records", "atomic"),
    [
        ("auto", True, 1000, True),  # a broker that fsyncs: one fsync per batch
        ("auto", True, MIN_ATOMIC_RECORDS, True),
        ("auto", True, MIN_ATOMIC_RECORDS - 1, False),  # fewer records than a batch's syncs
        ("auto", False, 1000, False),  # lazy, or not known: nothing to gain
        ("on", False, 1000, True),
        ("off", True, 1000, False),
        ("on", True, 1, False),
    ],
)
async def test_which_requests_go_as_atomic_batches(atomic_batches, durable, records, atomic):
    writer = _Writer(None)
    publisher = _publisher([], atomic_batches=atomic_batches, durable=durable)
    publisher._writer = writer
    assert await publisher.store(_batch(records), "etl") == list(range(100, 100 + records))
    assert (writer.atomic_sizes, writer.plain_sizes) == (
        ([records], []) if atomic else ([], [records])
    )
