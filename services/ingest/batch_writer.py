"""Writing a whole batch of messages to JetStream in one go, and matching its acks by reply.

nats-py's ``publish_async`` costs a future, a semaphore, a NUID, a header dict and a protocol
encode per message, and its ack handler a ``json.loads``: about 60 us per record, most of an
ingest core. Here a batch is one ``bytes`` of ``PUB``/``HPUB`` lines handed to the connection's
write buffer at once; every message's reply subject is ``<inbox>.<batch>.<index>`` under one
wildcard subscription on the connection's own inbox prefix (the ingest NATS user may subscribe
there and nowhere else), so an ack finds its batch and its place with a split and a dict
lookup. A batch is confirmed when every one of its messages is; a late ack of a batch given up
on is dropped.

An *atomic* batch (JetStream's atomic batch publish, nats-server 2.12+, on a stream with
``allow_atomic``) is the same lines with ``Nats-Batch-Id`` / ``Nats-Batch-Sequence`` headers
and a reply subject on the last message only, which carries ``Nats-Batch-Commit``: the broker
stores all of it or none, answers once (the last record's sequence and the count: the records
hold the ``count`` sequences up to it, in order), and, with ``sync_interval: always``, fsyncs
once per batch instead of once per message (bench/README.md, "Durable ingest").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from logstream.shared import fast_paths, nats_internals

__all__ = [
    "ATOMIC_REFUSALS",
    "MAX_ATOMIC_BATCH",
    "MAX_ATOMIC_IN_FLIGHT",
    "MSG_ID_HEAD",
    "MSG_ID_TAIL",
    "AtomicCommands",
    "BatchWriter",
    "Commands",
    "OutMessage",
    "atomic_commands",
    "msg_id_header",
    "msg_id_value",
    "pub_commands",
]

# What JetStream answers a publish with; the other fields (stream, domain) are not needed.
_JS_STATUS = "Status"
# nats-server's answer when nothing listens on a subject: no stream covers it.
_NO_RESPONDERS = "503"
_NO_RESPONDERS_LINE = b"NATS/1.0 503"
# Header values are trimmed and CR/LF become spaces, as nats-py does for its own headers: a
# record id can never end the header line or inject a protocol command.
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
# A header block holding only Nats-Msg-Id: these bytes, the value, then MSG_ID_TAIL.
MSG_ID_HEAD = b"NATS/1.0\r\nNats-Msg-Id: "
MSG_ID_TAIL = b"\r\n\r\n"
# nats-server's limits on atomic batches: at most 1,000 messages in one, and at most 50 of them
# open at once on a stream (the 51st is refused with 10211). One writer keeps at most
# MAX_ATOMIC_IN_FLIGHT open, so a few ingests share a stream's 50 without refusals.
MAX_ATOMIC_BATCH = 1000
MAX_ATOMIC_IN_FLIGHT = 12
# JetStream's error codes that refuse an atomic batch as a whole, storing none of it: disabled
# on the stream (10205), too large (10199), too many open (10211), a Nats-Msg-Id already in the
# duplicate window (10201: a producer's retry), incomplete or invalid (10176, 10177, 10179,
# 10200). The records are then written one by one, as on a stream without atomic batches.
ATOMIC_REFUSALS = frozenset({10176, 10177, 10179, 10199, 10200, 10201, 10205, 10211})
_BATCH_HEADERS = b"Nats-Batch-Id: %s\r\nNats-Batch-Sequence: %d\r\n"
_COMMIT = b"Nats-Batch-Commit: 1\r\n"
_NO_HEADERS = b"NATS/1.0\r\n"


# Makes a batch's PUB/HPUB lines from the reply subject prefix (the index follows it) and the
# broker's max_payload (a longer payload raises ``nats.errors.MaxPayloadError``).
Commands = Callable[[bytes, int], bytes]
# Makes an atomic batch's HPUB lines from its batch id, the commit's reply subject and
# max_payload (``atomic_commands`` over the batch's messages).
AtomicCommands = Callable[[bytes, bytes, int], bytes]


class _PubAck(msgspec.Struct):
    seq: int = 0
    duplicate: bool = False
    count: int = 0  # an atomic batch's commit: how many messages it stored
    error: dict[str, Any] | None = None


_ACK = msgspec.json.Decoder(_PubAck)
_ACKS = msgspec.json.Decoder(list[_PubAck])


def _api_error(error: dict[str, Any]) -> Exception:
    """nats-py's ``APIError.from_error`` returns some errors and raises others (503, 500)."""
    try:
        return nats.js.errors.APIError.from_error(error)
    except nats.js.errors.Error as exc:
        return exc
    except Exception:  # an error object without the fields nats-py expects
        return nats.errors.Error(f"JetStream refused the message: {error!r:.200}")


class OutMessage(msgspec.Struct, array_like=True):
    """One message of a batch: subject, optional header block (``msg_id_header``), payload."""

    subject: bytes
    header: bytes | None
    payload: bytes


def msg_id_header(msg_id: str) -> bytes:
    """The ``HPUB`` header block carrying ``Nats-Msg-Id`` (JetStream's deduplication key)."""
    return MSG_ID_HEAD + msg_id_value(msg_id.strip()) + MSG_ID_TAIL


def msg_id_value(text: str) -> bytes:
    """``text`` (already stripped) as a header value: CR and LF become spaces."""
    if "\r" in text or "\n" in text:  # (translate is slow; ids almost never need it)
        text = text.translate(_NEWLINES)
    return text.encode()


def pub_commands(messages: Sequence[OutMessage], reply: bytes, max_payload: int) -> bytes:
    """The batch's ``PUB``/``HPUB`` protocol lines, as nats-py would write them one by one, each
    with the reply subject ``<reply><index>``; ``MaxPayloadError`` if a payload is too large."""
    parts = []
    for index, message in enumerate(messages):
        payload, header = message.payload, message.header
        if len(payload) > max_payload:
            raise nats.errors.MaxPayloadError
        if header is None:
            parts.append(
                b"PUB %s %s%d %d\r\n%s\r\n" % (message.subject, reply, index, len(payload), payload)
            )
        else:
            parts.append(
                b"HPUB %s %s%d %d %d\r\n%s%s\r\n"
                % (
                    message.subject,
                    reply,
                    index,
                    len(header),
                    len(header) + len(payload),
                    header,
                    payload,
                )
            )
    return b"".join(parts)


def atomic_commands(
    messages: Sequence[OutMessage], batch_id: bytes, reply: bytes, max_payload: int
) -> bytes:
    """An atomic batch's ``HPUB`` lines: the messages as ``pub_commands`` takes them, each
    header block (``msg_id_header``, or none) with the batch headers added, the last message
    with the commit and the only reply subject (the broker answers the commit alone, or an
    error for the whole batch)."""
    last = len(messages) - 1
    parts = []
    for index, message in enumerate(messages):
        payload = message.payload
        if len(payload) > max_payload:
            raise nats.errors.MaxPayloadError
        # A header block ends with an empty line: the batch headers go before it.
        head = _NO_HEADERS if message.header is None else message.header[:-2]
        header = b"%s%s%s\r\n" % (
            head,
            _BATCH_HEADERS % (batch_id, index + 1),
            _COMMIT if index == last else b"",
        )
        parts.append(
            b"HPUB %s %s%d %d\r\n%s%s\r\n"
            % (
                message.subject,
                reply + b" " if index == last else b"",
                len(header),
                len(header) + len(payload),
                header,
                payload,
            )
        )
    return b"".join(parts)


class _Batch:
    """The acks of one batch as they arrive: seqs in message order, and the first error."""

    __slots__ = ("done", "missing", "seqs")

    def __init__(self, size: int) -> None:
        self.seqs = [0] * size
        self.missing = size
        self.done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

    def acked(self, index: int, data: bytes, headers: bytes | None) -> None:
        if self.done.done():
            return
        if headers and not data and headers.startswith(_NO_RESPONDERS_LINE):
            self.done.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            ack = _ACK.decode(data)
        except msgspec.DecodeError:
            self.done.set_exception(nats.errors.Error(f"unreadable JetStream ack {data[:80]!r}"))
            return
        self.take(index, ack)

    def take(self, index: int, ack: _PubAck) -> None:
        """One decoded ack (``index`` may be out of range: ``IndexError``)."""
        if ack.error is not None:
            if not self.done.done():
                self.done.set_exception(_api_error(ack.error))
            return
        seqs = self.seqs
        if seqs[index] == 0:
            seqs[index] = ack.seq
            self.missing -= 1
            if self.missing == 0 and not self.done.done():
                self.done.set_result(seqs)


class _AtomicBatch(_Batch):
    """An atomic batch's one answer: the commit's, at index 0, with the last sequence and the
    count; the records hold the ``count`` sequences up to the last (the broker stores the batch
    in one step, so nothing interleaves)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        super().__init__(1)
        self.size = size

    def take(self, index: int, ack: _PubAck) -> None:
        if index != 0:
            raise IndexError(index)
        if self.done.done():
            return
        if ack.error is not None:
            self.done.set_exception(_api_error(ack.error))
        elif ack.count != self.size or ack.seq < self.size:
            self.done.set_exception(
                nats.errors.Error(
                    f"JetStream committed {ack.count} of an atomic batch of {self.size}"
                )
            )
        else:
            self.done.set_result(list(range(ack.seq - self.size + 1, ack.seq + 1)))


class BatchWriter:
    """Writes batches on one nats-py connection; ``start`` once connected, ``drained`` at stop."""

    def __init__(self, nc: Client) -> None:
        # No other way to write a batch: without these hooks ingest does not start.
        fast_paths.require(
            nats_internals.BATCH_WRITES, nats_internals.check_batch_writes(), "nats-py"
        )
        self._nc = nc
        self._prefix = ""
        self._reply_prefix = b""
        self._batches: dict[int, _Batch] = {}
        self._next_batch = 0
        self._batch_prefix = b""
        self._atomic_slots = asyncio.Semaphore(MAX_ATOMIC_IN_FLIGHT)
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        """Batches handed to the connection and not yet confirmed or given up on."""
        return len(self._batches)

    async def start(self) -> None:
        inbox = self._nc.new_inbox()  # under the connection's inbox prefix (_INBOX_ingest)
        self._prefix = inbox + "."
        self._reply_prefix = self._prefix.encode()
        # Atomic batch ids: unique to this connection (its inbox token) and the batch's number;
        # nats-server takes up to 64 characters.
        self._batch_prefix = inbox.rpartition(".")[2].encode()[:40] + b"-"
        sub = await self._nc.subscribe(inbox + ".*.*", cb=self._on_ack)
        sid = nats_internals.subscription_id(sub)
        # Acks straight from nats-py's protocol reader, skipping the Msg, its headers' parse and
        # the subscription's queue (about 8 us per ack), and read by the AckParser in runs
        # (``logstream.shared.nats_internals``); either one off, ``_on_ack`` still gets them.
        missing = nats_internals.check_ack_lane()
        offset = len(self._reply_prefix)
        intercepted = not missing and nats_internals.take_messages_first(
            self._nc,
            sid,
            lambda subject, data, headers: self._acked(subject[offset:], data, headers),
        )
        fast_paths.record(
            nats_internals.ACK_INTERCEPT,
            missing or ([] if intercepted else ["Client._process_msg"]),
        )
        parsed = not missing and nats_internals.install_ack_parser(
            self._nc, sid, self._reply_prefix, self._on_acks
        )
        fast_paths.record(
            nats_internals.ACK_PARSER,
            missing or ([] if parsed else ["Client._ps is not nats-py's Parser"]),
        )

    async def _on_ack(self, msg: Msg) -> None:
        raw_headers = None
        if msg.headers and msg.headers.get(_JS_STATUS) == _NO_RESPONDERS:
            raw_headers = b"NATS/1.0 503\r\n\r\n"
        self._acked(msg.subject[len(self._prefix) :].encode(), msg.data, raw_headers)

    def _on_acks(self, acks: list[tuple[bytes, bytes, bytes, bytes]]) -> None:
        """Acks read by the ``AckParser``: (batch, index, size, JSON), decoded in one go."""
        try:
            decoded = _ACKS.decode(b"[" + b",".join([ack[3] for ack in acks]) + b"]")
        except msgspec.DecodeError:
            decoded = None
        if decoded is None or len(decoded) != len(acks):  # one is not an ack: each on its own
            for batch_id, index, _, data in acks:
                self._acked(b"%s.%s" % (batch_id, index), data, None)
            return
        batches, last_id, batch = self._batches, None, None
        for (batch_id, index, _, _), ack in zip(acks, decoded):
            if batch_id != last_id:
                last_id, batch = batch_id, batches.get(int(batch_id))
            if batch is not None:
                try:
                    batch.take(int(index), ack)
                except IndexError:
                    continue  # not a reply to anything this writer sent

    def _acked(self, token: bytes, data: bytes, headers: bytes | None) -> None:
        """``token`` is ``<batch>.<index>``; ``headers`` the raw header block, if any."""
        batch_id, _, index = token.partition(b".")
        try:
            batch = self._batches.get(int(batch_id))
            if batch is not None:
                batch.acked(int(index), data, headers)
        except (ValueError, IndexError):
            return  # not a reply to anything this writer sent

    async def write(self, messages: Sequence[OutMessage], timeout: float) -> list[int]:
        """Send every message and wait up to ``timeout`` for all their acks: the stream
        sequences in message order. ``asyncio.TimeoutError`` when JetStream did not confirm
        them all in time; ``nats.errors.Error`` when the connection or JetStream refused."""
        return await self.write_commands(
            len(messages), lambda reply, _: self._commands(messages, reply), timeout
        )

    async def write_commands(self, count: int, commands: Commands, timeout: float) -> list[int]:
        """``write`` for a batch of ``count`` messages whose protocol lines ``commands`` makes
        (what ``_commands`` would make, reply subjects included); as ``write`` otherwise."""
        nc = self._nc
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        if nc.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        batch_id = self._next_batch
        self._next_batch += 1
        command = commands(b"%s%d." % (self._reply_prefix, batch_id), nc.max_payload)
        batch = _Batch(count)
        self._batches[batch_id] = batch
        self._idle.clear()
        try:
            await self._send(command, count)
            return await asyncio.wait_for(batch.done, timeout)
        finally:
            del self._batches[batch_id]
            if not self._batches:
                self._idle.set()

    async def write_atomic(self, count: int, commands: AtomicCommands, timeout: float) -> list[int]:
        """``write_commands`` for an atomic batch of ``count`` (at most ``MAX_ATOMIC_BATCH``)
        messages, made by ``commands`` (``atomic_commands``). A refusal of the whole batch is a
        ``nats.js.errors.APIError`` whose ``err_code`` is in ``ATOMIC_REFUSALS``: none stored."""
        nc = self._nc
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        if nc.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        async with asyncio.timeout(timeout):
            async with self._atomic_slots:
                batch_id = self._next_batch
                self._next_batch += 1
                command = commands(
                    b"%s%d" % (self._batch_prefix, batch_id),
                    b"%s%d.0" % (self._reply_prefix, batch_id),
                    nc.max_payload,
                )
                batch = _AtomicBatch(count)
                self._batches[batch_id] = batch
                self._idle.clear()
                try:
                    await self._send(command, count)
                    return await batch.done
                finally:
                    del self._batches[batch_id]
                    if not self._batches:
                        self._idle.set()

    def _commands(self, messages: Sequence[OutMessage], reply: bytes) -> bytes:
        return pub_commands(messages, reply, self._nc.max_payload)

    async def _send(self, command: bytes, count: int) -> None:
        """Into the connection's write buffer in one go (``nats_internals.send_commands``)."""
        await nats_internals.send_commands(self._nc, command, count)

    async def drained(self) -> None:
        """Returns once no batch is waiting for acks."""
        await self._idle.wait()
