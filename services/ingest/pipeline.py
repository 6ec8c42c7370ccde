"""The publish rules of docs/reference/ingest.md and docs/reference/ingest.md#nats, one code path for HTTP and NATS.

A request passes, in this order: media type (415), declared size (413), credential (401), body
read under the size cap (413), decoding (400, 413 for too many records), record validation
(400), channel grants (403), the token's rate budget (413 for a batch over the burst, 429),
then storage (503 unless JetStream confirms every record). Nothing is stored unless the whole
batch passed every check before it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import msgspec

from logstream.services.ingest.metrics import IngestMetrics
from logstream.services.ingest.rate_limit import RecordRateLimiter
from logstream.services.ingest.settings import Settings
from logstream.services.ingest.valid_batch import ValidBatch, decode_valid
from logstream.shared.errors import (
    BrokerUnavailable,
    Forbidden,
    LogstreamError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from logstream.shared.records import NDJSON, ValidRecord, decode_batch, validate_records
from logstream.shared.service_tokens import ServiceToken, TokenRegistry
from logstream.shared.web import status_of

__all__ = [
    "JSON",
    "MEDIA_TYPES",
    "NDJSON",
    "Accepted",
    "BodyReader",
    "IngestPipeline",
    "IngestRequest",
    "RecordStore",
    "body_in_memory",
    "media_type_of",
]

JSON = "application/json"
MEDIA_TYPES = (JSON, NDJSON)

# Reads the body, raising PayloadTooLarge past the given number of bytes.
BodyReader = Callable[[int], Awaitable[bytes]]


class RecordStore(Protocol):
    async def store(self, records: Sequence[ValidRecord], publisher: str) -> list[int]: ...


class Accepted(msgspec.Struct, frozen=True):
    """The 202 body: every record is stored, with its stream sequence."""

    accepted: int
    seqs: list[int]


class IngestRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One publish request as either transport sees it, before the body is read."""

    transport: str
    content_type: str | None
    declared_length: int | None
    credential: str | None
    read_body: BodyReader
    # Told the token's name as soon as the credential verifies (for the audit's ``who``).
    identified: Callable[[str], None] | None = None


def media_type_of(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``; else 415."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in MEDIA_TYPES:
        shown = repr(content_type[:80]) if content_type else "none"
        raise UnsupportedMediaType(f"content type {shown} is not accepted; send {JSON} or {NDJSON}")
    return media_type


class IngestPipeline:
    """Checks, authorises and stores a publish request; raises ``LogstreamError`` when refused."""

    def __init__(
        self, settings: Settings, tokens: TokenRegistry, store: RecordStore, metrics: IngestMetrics
    ) -> None:
        self._settings = settings
        self._services = settings.service_names
        self._tokens = tokens
        self._store = store
        self._metrics = metrics
        self._limiter = (
            RecordRateLimiter(settings.publish_rate, settings.burst)
            if settings.publish_rate
            else None
        )

    async def publish(self, request: IngestRequest) -> Accepted:
        counted = [0]
        try:
            accepted = await self._publish(request, counted)
        except LogstreamError as exc:
            self._metrics.rejected(request.transport, status_of(exc), exc.code, counted[0])
            raise
        except Exception:
            self._metrics.rejected(request.transport, 500, "internal", counted[0])
            raise
        self._metrics.accepted(request.transport, accepted.accepted)
        return accepted

    async def _publish(self, request: IngestRequest, counted: list[int]) -> Accepted:
        limit = self._settings.max_body_bytes
        media_type = media_type_of(request.content_type)
        if request.declared_length is not None and request.declared_length > limit:
            raise PayloadTooLarge(
                f"body of {request.declared_length} bytes is over the limit of {limit} bytes"
            )
        token = self._tokens.verify(request.credential)
        if request.identified is not None:
            request.identified(token.name)
        body = await request.read_body(limit)
        valid = self._decode(body, media_type, token, counted)
        self._authorise(token, valid)
        if self._limiter is not None:
            self._limiter.take(token.name, len(valid))
        started = time.perf_counter()
        try:
            seqs = await self._store.store(valid, token.name)
        except BrokerUnavailable:
            if self._limiter is not None:
                self._limiter.give_back(token.name, len(valid))
            raise
        self._metrics.publish_seconds.observe(time.perf_counter() - started)
        return Accepted(accepted=len(seqs), seqs=seqs)

    def _decode(
        self, body: bytes, media_type: str, token: ServiceToken, counted: list[int]
    ) -> Sequence[ValidRecord]:
        limit = self._settings.max_batch_records
        valid = decode_valid(
            body, media_type, publisher=token.name, services=self._services, max_records=limit
        )
        if valid is not None:
            counted[0] = len(valid)
            return valid
        records = decode_batch(body, media_type, max_records=limit)  # (raises, names problems)
        counted[0] = len(records)
        return validate_records(records, publisher=token.name, services=self._services)

    @staticmethod
    def _authorise(token: ServiceToken, valid: Sequence[ValidRecord]) -> None:
        allowed: dict[str, bool] = {}  # a batch names few channels: each is checked once
        refused: dict[str, None] = {}
        named = (
            valid.channels.items()
            if isinstance(valid, ValidBatch)  # (in record order)
            else ((item.record.channel, item.channel) for item in valid)
        )
        for name, channel in named:  # name: str(channel)
            verdict = allowed.get(name)
            if verdict is None:
                verdict = allowed[name] = token.may_publish(channel)
            if not verdict:
                refused.setdefault(name)
        if refused:
            channels = list(refused)
            grants = ", ".join(str(g) for g in token.grants) or "none"
            raise Forbidden(
                f"token {token.name!r} may not publish to {', '.join(channels[:5])}"
                + (f" (and {len(channels) - 5} more)" if len(channels) > 5 else "")
                + f"; its grants: {grants}; nothing was stored",
                details=[{"channel": channel} for channel in channels],
                rule="grant",
            )


def body_in_memory(body: bytes) -> BodyReader:
    """A ``BodyReader`` for a body that is already in memory (a NATS message)."""

    async def read(limit: int) -> bytes:
        if len(body) > limit:
            raise PayloadTooLarge(f"body of {len(body)} bytes is over the limit of {limit} bytes")
        return body

    return read
