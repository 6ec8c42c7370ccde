"""The ack parser's fast lane reads what nats-py's parser reads, however the bytes arrive.

A double of nats-py's client records what the parser hands it (``_process_msg``, ``PING``,
``-ERR``); the claims about a real broker are in tests/integration/test_ingest_batch_store.py.
"""

from __future__ import annotations

import pytest
from nats.protocol.parser import Parser

from logstream.shared.nats_internals import AckParser, install_ack_parser

PREFIX = b"_INBOX_ingest.abc123."
SID = 4


class _Client:
    """What the parser calls on nats-py's client, recorded as (kind, ...) tuples."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    async def _process_msg(self, sid, subject, reply, data, headers) -> None:
        self.seen.append(("msg", sid, bytes(subject), bytes(reply), data, headers))

    async def _process_ping(self) -> None:
        self.seen.append(("ping",))

    async def _process_err(self, message) -> None:
        self.seen.append(("err", message))


def _ack(batch: int, index: int, seq: int, extra: bytes = b"") -> bytes:
    data = b'{"stream":"LOGS","seq":%d%s}' % (seq, extra)
    return b"MSG %s%d.%d %d %d\r\n%s\r\n" % (PREFIX, batch, index, SID, len(data), data)


def _as_process_msg(acks):
    """The fast lane's acks as nats-py's parser would have handed them to ``_process_msg``."""
    return [
        ("msg", SID, PREFIX + batch + b"." + index, b"", data, None)
        for batch, index, size, data in acks
    ]


async def _feed(parser_class, stream: bytes, cut: int):
    client = _Client()
    parser: Parser
    if parser_class is AckParser:
        parser = AckParser(
            client, SID, PREFIX, lambda acks: client.seen.extend(_as_process_msg(acks))
        )
    else:
        parser = Parser(client)
    for start in range(0, len(stream), cut):
        await parser.parse(stream[start : start + cut])
    return client.seen, bytes(parser.buf)


MIXED = b"".join(
    [
        _ack(1, 0, 10),
        _ack(1, 1, 11, b',"duplicate":true'),
        b"PING\r\n",
        _ack(1, 2, 12),
        b"HMSG %s1.3 %d 16 16\r\nNATS/1.0 503\r\n\r\n\r\n" % (PREFIX, SID),  # no responders
        b"MSG other.subject 9 5\r\nhello\r\n",  # another subscription
        b"MSG %s2.0 %d 7\r\nab\r\ncde\r\n" % (PREFIX, SID),  # a payload with a line break
        b"MSG %s2.1 %d reply.to 2\r\nhi\r\n" % (PREFIX, SID),  # a reply subject: not an ack
        _ack(2, 2, 13, b',"error":{"code":503}'),
        b"-ERR 'Permissions Violation for Publish'\r\n",
        _ack(3, 0, 14),
    ]
)


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 16, 50, 4096])
async def test_the_fast_lane_reads_every_frame_as_nats_py_would_at_any_read_boundary(cut):
    expected, _ = await _feed(Parser, MIXED, cut)
    got, left = await _feed(AckParser, MIXED, cut)
    assert got == expected and left == b""
    assert len(got) == 11  # nine messages, a PING and an -ERR


async def test_a_run_of_acks_comes_in_one_call_and_a_partial_ack_waits_for_its_rest():
    calls: list = []
    parser = AckParser(_Client(), SID, PREFIX, calls.append)
    stream = b"".join(_ack(5, index, 100 + index) for index in range(100))
    await parser.parse(stream + _ack(5, 100, 200)[:-4])
    assert len(calls) == 1 and [int(ack[1]) for ack in calls[0]] == list(range(100))
    await parser.parse(_ack(5, 100, 200)[-4:])
    assert calls[1] == [(b"5", b"100", b"27", b'{"stream":"LOGS","seq":200}')]
    assert parser.buf == bytearray()


async def test_a_frame_hidden_in_a_payload_is_not_taken_for_an_ack():
    hidden = b"ab\r\n" + _ack(1, 9, 99)[:-2]
    stream = b"MSG %s1.0 %d %d\r\n%s\r\n" % (PREFIX, SID, len(hidden), hidden) + _ack(1, 1, 5)
    for cut in (1, 5, len(stream)):
        expected, _ = await _feed(Parser, stream, cut)
        got, _ = await _feed(AckParser, stream, cut)
        assert got == expected and len(got) == 2


async def test_the_parser_is_swapped_in_with_what_the_old_one_had_buffered():
    client = _Client()
    client._ps = Parser(client)
    await client._ps.parse(_ack(1, 0, 10)[:5])
    calls: list = []
    assert install_ack_parser(client, SID, PREFIX, calls.append)
    assert isinstance(client._ps, AckParser)
    await client._ps.parse(_ack(1, 0, 10)[5:])
    assert [ack[:2] for ack in calls[0]] == [(b"1", b"0")]


def test_a_client_without_nats_py_s_parser_keeps_its_own():
    client = _Client()
    client._ps = object()
    assert not install_ack_parser(client, SID, PREFIX, print)
