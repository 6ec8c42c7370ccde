"""Storing accepted records in JetStream: the only writer of ``logs.>``.

A batch is written to the connection in one go (``BatchWriter``: one buffer of ``PUB``/``HPUB``
lines, acks matched by reply subject) and confirmed together under one deadline, so a 202 means
every record was acknowledged and a broker that does not answer costs at most
``publish_timeout``. The link's state is checked first: a broker that is down answers 503 at
once instead of making producers wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext

from logstream.services.ingest.batch_commands import draft_commands, draft_messages
from logstream.services.ingest.batch_writer import (
    ATOMIC_REFUSALS,
    MAX_ATOMIC_BATCH,
    MSG_ID_HEAD,
    BatchWriter,
    Commands,
    OutMessage,
    atomic_commands,
    msg_id_header,
    msg_id_value,
    pub_commands,
)
from logstream.services.ingest.settings import Settings
from logstream.services.ingest.valid_batch import ValidBatch
from logstream.shared.channels import to_subject
from logstream.shared.errors import BrokerUnavailable
from logstream.shared.nats_link import NatsLink, ensure_stream
from logstream.shared.nats_names import STREAM_NAME
from logstream.shared.records import ValidRecord, encode_stored

__all__ = [
    "DRAIN_TIMEOUT_S",
    "MIN_ATOMIC_RECORDS",
    "JetStreamPublisher",
    "atomic_messages",
    "message_id",
    "out_messages",
    "record_commands",
    "until_answered",
]

# At shutdown, publishes already handed to JetStream get this long to be confirmed before the
# link closes: well inside uvicorn's graceful window, longer than any healthy confirmation.
DRAIN_TIMEOUT_S = 3.0
# How long a producer should wait before retrying a 503 (Retry-After); the link reconnects
# every 0.5 s, so by then it is back or still genuinely down.
RETRY_AFTER_S = 2
_CONNECTION_NAME = "logstream-ingest"
# The smallest request written as an atomic batch. Under sync_interval: always nats-server
# syncs an atomic batch about 4 times (its staging store, then the stream: strace, bench/README
# "Durable ingest") and a plain publish once per record, so fewer records gain nothing.
MIN_ATOMIC_RECORDS = 5
# At start, how long JetStream may take to answer the stream set-up: a cluster that has just
# formed (several ingests starting together, as Kubernetes starts them) has no meta leader for
# a few seconds and times out or answers "unavailable" meanwhile.
STREAM_SETUP_S = 30.0
STREAM_SETUP_RETRY_S = 1.0
# JetStream answers that mean "not yet", not "no".
_NOT_YET = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
)

log = logging.getLogger("logstream.ingest")


def message_id(publisher: str, record_id: str) -> str:
    """``Nats-Msg-Id``: scoped to the token's name so one producer cannot suppress another's."""
    return f"{publisher}:{record_id}"


def out_messages(records: Sequence[ValidRecord], publisher: str) -> list[OutMessage]:
    """The batch as JetStream messages: subject, ``Nats-Msg-Id`` header when the record has an
    ``id``, stored JSON; each channel's subject is made once per batch."""
    subjects: dict[str, bytes] = {}
    messages = []
    for valid in records:
        record = valid.record
        subject = subjects.get(record.channel)
        if subject is None:
            subject = subjects[record.channel] = to_subject(valid.channel).encode()
        header = None if record.id is None else msg_id_header(message_id(publisher, record.id))
        messages.append(OutMessage(subject, header, encode_stored(record)))
    return messages


def record_commands(records: Sequence[ValidRecord], publisher: str) -> Commands:
    """The batch's protocol lines for ``BatchWriter.write_commands``: ``draft_commands``' for
    the usual ``ValidBatch`` (no Python per record), else ``pub_commands`` over
    ``out_messages``: the same bytes either way."""
    if isinstance(records, ValidBatch):
        fast = draft_commands(records, _header_head(publisher))
        if fast is not None:
            return fast
    return partial(pub_commands, out_messages(records, publisher))


def _header_head(publisher: str) -> bytes:
    """A ``msg_id_header`` of ``publisher``'s records up to the record's id. message_id(...).strip()
    is the publisher part left-stripped and the id right-stripped: the ':' between them is not
    whitespace."""
    return MSG_ID_HEAD + msg_id_value(message_id(publisher.lstrip(), ""))


def atomic_messages(records: Sequence[ValidRecord], publisher: str) -> list[OutMessage]:
    """``out_messages`` of the batch, made by ``draft_messages`` for the usual ``ValidBatch``."""
    if isinstance(records, ValidBatch):
        messages = draft_messages(records, _header_head(publisher))
        if messages is not None:
            return messages
    return out_messages(records, publisher)


class JetStreamPublisher:
    """Owns the ingest service's NATS link and writes batches to the LOGS stream."""

    def __init__(
        self,
        settings: Settings,
        on_atomic_refusal: Callable[[int], None] = lambda code: None,
        durable: Callable[[], bool] = lambda: False,
    ) -> None:
        self._settings = settings
        self._link: NatsLink | None = None
        self._writer: BatchWriter | None = None
        self._timeout = settings.publish_timeout
        self._tasks: set[asyncio.Task] = set()
        # Whether LOGS takes atomic batches (nats-server 2.12+ and allow_atomic set): one
        # fsync per batch under sync_interval: always, instead of one per record.
        self._atomic = False
        self._on_atomic_refusal = on_atomic_refusal
        # Whether the broker fsyncs every write (durability fsync): atomic_batches=auto uses
        # atomic batches then only. A lazy broker gains nothing from them, and each costs it a
        # staging store of its own (created, synced, removed): with the small requests of a
        # steady trickle, publish-to-reader p99 went from 2.9 to 27 ms in the bench.
        self._durable = durable

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.connected

    @property
    def js(self) -> JetStreamContext | None:
        return None if self._link is None else self._link.js

    @property
    def atomic(self) -> bool:
        """Whether requests of ``MIN_ATOMIC_RECORDS`` or more go to JetStream as atomic
        batches: the stream allows them, and ``atomic_batches`` is on, or auto with a broker
        that fsyncs every write."""
        wanted = self._settings.atomic_batches
        return self._atomic and (wanted == "on" or (wanted == "auto" and self._durable()))

    async def start(self) -> None:
        """Connect within ``connect_timeout`` (else ``BrokerUnavailable``) and ensure the stream."""
        self._link = await NatsLink.connect(
            self._settings, name=_CONNECTION_NAME, reconnected_cb=self._reconnected
        )
        self._writer = BatchWriter(self._link.nc)
        await self._writer.start()
        await until_answered(self._ensure_stream, what="the LOGS stream set-up")

    async def _ensure_stream(self) -> None:
        settings = self._settings
        assert self._link is not None  # start() connected before any check of the stream
        config = await ensure_stream(
            self._link.js,
            max_age_s=settings.retention_s,
            max_bytes=settings.retention_bytes,
            duplicate_window_s=settings.duplicate_window_s,
            replicas=settings.stream_replicas,
        )
        self._atomic = bool(config.allow_atomic)

    async def _reconnected(self) -> None:
        log.info("broker link back")
        self._recheck_stream()

    def _recheck_stream(self) -> None:
        """Recreate LOGS in the background: a broker that came back with an empty store (or an
        operator who deleted the stream) would otherwise fail every publish until a restart."""
        if self._tasks:
            return
        task = asyncio.get_running_loop().create_task(self._ensure_stream_quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ensure_stream_quietly(self) -> None:
        try:
            await self._ensure_stream()
        except Exception as exc:  # the next publish reports the broker's state as a 503
            log.warning("could not check stream %s: %s", STREAM_NAME, exc)

    async def store(self, records: Sequence[ValidRecord], publisher: str) -> list[int]:
        """Publish every record and wait for every ack; the stream sequences, in order."""
        writer = self._writer  # set with the link (and cleared with it) in one step
        if not self.connected or writer is None:
            raise BrokerUnavailable(
                "NATS is unavailable; nothing was stored", retry_after=RETRY_AFTER_S
            )
        try:
            if len(records) >= MIN_ATOMIC_RECORDS and self.atomic:
                return await self._store_atomic(writer, records, publisher)
            return await writer.write_commands(
                len(records), record_commands(records, publisher), self._timeout
            )
        except TimeoutError:
            raise BrokerUnavailable(
                f"JetStream did not confirm {len(records)} record(s) within {self._timeout:g}s; "
                "they may or may not be stored (retry with the same ids)",
                retry_after=RETRY_AFTER_S,
            ) from None
        except (nats.errors.Error, OSError) as exc:
            if isinstance(exc, nats.js.errors.NoStreamResponseError):
                self._recheck_stream()
            raise BrokerUnavailable(
                f"JetStream refused the batch ({type(exc).__name__}: {exc}); it may be "
                "partly stored (retry with the same ids)",
                retry_after=RETRY_AFTER_S,
            ) from None

    async def _store_atomic(
        self, writer: BatchWriter, records: Sequence[ValidRecord], publisher: str
    ) -> list[int]:
        """``store`` as atomic batches of at most ``MAX_ATOMIC_BATCH``, all within one
        ``publish_timeout``; a batch the broker refuses as a whole (``ATOMIC_REFUSALS``: a
        retried id still in the duplicate window, too many batches open) is written record by
        record instead, which keeps JetStream's per-message deduplication."""
        deadline = time.monotonic() + self._timeout
        messages = atomic_messages(records, publisher)
        seqs: list[int] = []
        for start in range(0, len(records), MAX_ATOMIC_BATCH):
            end = min(start + MAX_ATOMIC_BATCH, len(records))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            try:
                seqs += await writer.write_atomic(
                    end - start, partial(atomic_commands, messages[start:end]), remaining
                )
                continue
            except nats.js.errors.APIError as exc:
                if exc.err_code not in ATOMIC_REFUSALS:
                    raise
                self._on_atomic_refusal(exc.err_code)
            chunk = (
                ValidBatch(records.drafts[start:end], records.channels)
                if isinstance(records, ValidBatch)
                else records[start:end]
            )
            seqs += await writer.write_commands(
                end - start,
                record_commands(chunk, publisher),
                max(deadline - time.monotonic(), 0.001),
            )
        return seqs

    async def stop(self) -> None:
        """Let handed-over publishes be confirmed (bounded), then close the link."""
        if self._link is None:
            return
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._writer.drained(), DRAIN_TIMEOUT_S)
            except TimeoutError:
                log.warning("closing with %d unconfirmed batches", self._writer.pending)
        for task in list(self._tasks):
            task.cancel()
        await self._link.close()
        self._link = None
        self._writer = None


async def until_answered(
    attempt, *, what: str, within_s: float = STREAM_SETUP_S, pause_s: float = STREAM_SETUP_RETRY_S
):
    """``await attempt()`` again while JetStream answers "not yet" (see ``_NOT_YET``), for at
    most ``within_s``; the last "not yet" is raised when the time is up, anything else at once."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await attempt()
        except _NOT_YET as exc:
            if time.monotonic() + pause_s >= deadline:
                raise
            log.warning("%s: JetStream not ready yet (%s); trying again", what, type(exc).__name__)
            await asyncio.sleep(pause_s)
