"""A ``ValidBatch``'s ``PUB``/``HPUB`` lines with no Python bytecode per record.

``pub_commands`` formats each record's line with ``bytes %``: about 1 us per record, most of
it turning three integers into digits. Here every per-record step is a ``map`` in C (encode,
lengths, sums, digits looked up in a table) and the lines are one ``b"".join`` of the pieces,
interleaved by ``zip``. The usual batch qualifies: every record with an ``id`` (or none with
one), ids without CR or LF. Any other batch gets ``None`` and ``pub_commands``; so do the lines
of a batch with a size past the digit tables.
"""

from __future__ import annotations

from itertools import chain, repeat
from operator import add, attrgetter

import msgspec
import nats.errors

from logstream.services.ingest.batch_writer import MSG_ID_TAIL, Commands, OutMessage, pub_commands
from logstream.services.ingest.valid_batch import ValidBatch
from logstream.shared.channels import to_subject

__all__ = ["draft_commands", "draft_messages"]

# Digits of every index and size below this, looked up instead of formatted (payloads of up to
# 16 KiB: a 200-byte log line is ~450 bytes stored); about 1.5 MB for the two tables.
_TABLE_SIZE = 16 * 1024
_SPACED = [b"%d " % n for n in range(_TABLE_SIZE)]
_DIGITS = [b"%d" % n for n in range(_TABLE_SIZE)]
_CRLF = b"\r\n"
_CHANNEL = attrgetter("channel")
_ID = attrgetter("id")
_encode = msgspec.json.Encoder().encode


def draft_commands(batch: ValidBatch, header_head: bytes) -> Commands | None:
    """The batch's lines as ``pub_commands`` writes them (``header_head``: the header block
    up to the id), or ``None`` when the batch is not the usual kind."""
    drafts = batch.drafts
    ids = list(map(_ID, drafts))
    with_ids = len(ids) - ids.count(None)
    if with_ids and (with_ids != len(ids) or _has_newline(ids)):
        return None
    if len(drafts) > _TABLE_SIZE:
        return None
    subjects = {name: to_subject(channel).encode() for name, channel in batch.channels.items()}
    names = list(map(_CHANNEL, drafts))

    def commands(reply: bytes, max_payload: int) -> bytes:
        payloads = list(map(_encode, drafts))
        sizes = list(map(len, payloads))
        if max(sizes) > max_payload:
            raise nats.errors.MaxPayloadError
        verb = b"HPUB " if with_ids else b"PUB "
        heads = {name: b"%s%s %s" % (verb, subject, reply) for name, subject in subjects.items()}
        head_of = heads.__getitem__
        try:
            if with_ids:
                return _hpub_lines(map(head_of, names), ids, header_head, sizes, payloads)
            return b"".join(
                chain.from_iterable(
                    zip(
                        map(head_of, names),
                        _SPACED,
                        map(_DIGITS.__getitem__, sizes),
                        repeat(_CRLF),
                        payloads,
                        repeat(_CRLF),
                    )
                )
            )
        except IndexError:  # a size past the tables: the general formatting
            headers = (
                [header_head + value + MSG_ID_TAIL for value in _id_values(ids)]
                if with_ids
                else repeat(None)
            )
            return pub_commands(
                list(map(OutMessage, map(subjects.__getitem__, names), headers, payloads)),
                reply,
                max_payload,
            )

    return commands


def draft_messages(batch: ValidBatch, header_head: bytes) -> list[OutMessage] | None:
    """The batch as ``out_messages`` makes it (``header_head``: the header block up to the id),
    with the per-record steps in C as in ``draft_commands``; ``None`` when the batch is not the
    usual kind."""
    drafts = batch.drafts
    ids = list(map(_ID, drafts))
    with_ids = len(ids) - ids.count(None)
    if with_ids and (with_ids != len(ids) or _has_newline(ids)):
        return None
    subjects = {name: to_subject(channel).encode() for name, channel in batch.channels.items()}
    headers = (
        [header_head + value + MSG_ID_TAIL for value in _id_values(ids)]
        if with_ids
        else repeat(None)
    )
    return list(
        map(
            OutMessage,
            map(subjects.__getitem__, map(_CHANNEL, drafts)),
            headers,
            map(_encode, drafts),
        )
    )


def _has_newline(ids: list[str]) -> bool:
    joined = "".join(ids)
    return "\r" in joined or "\n" in joined


def _id_values(ids: list[str]) -> list[bytes]:
    """Header values of ids without CR or LF (``msg_id_value`` of the right-stripped id)."""
    return list(map(str.encode, map(str.rstrip, ids)))


def _hpub_lines(
    heads, ids: list[str], header_head: bytes, sizes: list[int], payloads: list[bytes]
) -> bytes:
    values = _id_values(ids)
    header_sizes = list(map((len(header_head) + len(MSG_ID_TAIL)).__add__, map(len, values)))
    totals = map(add, header_sizes, sizes)
    return b"".join(
        chain.from_iterable(
            zip(
                heads,
                _SPACED,
                map(_SPACED.__getitem__, header_sizes),
                map(_DIGITS.__getitem__, totals),
                repeat(_CRLF + header_head),
                values,
                repeat(MSG_ID_TAIL),
                payloads,
                repeat(_CRLF),
            )
        )
    )
