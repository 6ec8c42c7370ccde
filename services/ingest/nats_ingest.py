"""Ingest over NATS (docs/reference/ingest.md#nats): a FastStream subscriber on ``ingest.logs``.

Every ingest instance joins the queue group ``ingest``, so each message is handled once. A
message goes through the same ``IngestPipeline`` as an HTTP request. With a reply subject the
producer gets the HTTP body plus ``"status"``; without one, a refusal is counted and
republished to ``ingest.rejected`` with its reason, so nothing disappears silently. A denial
(401, 403, 429) is also one audit line (``via="nats"``): no HTTP handler is there to write it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from faststream.message import StreamMessage
from faststream.nats import NatsBroker, NatsResponse
from faststream.nats.annotations import NatsMessage
from nats.aio.msg import Msg

from logstream.services.ingest.metrics import NATS, IngestMetrics
from logstream.services.ingest.pipeline import (
    JSON,
    IngestPipeline,
    IngestRequest,
    body_in_memory,
)
from logstream.services.ingest.settings import Settings
from logstream.shared import audit
from logstream.shared.errors import BrokerUnavailable, Forbidden, LogstreamError, RateLimited
from logstream.shared.identities import bearer_token
from logstream.shared.nats_link import broker_options, settle
from logstream.shared.nats_names import INGEST_SUBJECT, REJECTED_SUBJECT
from logstream.shared.nats_permissions import INGEST_QUEUE
from logstream.shared.web import AUDITED_STATUSES, status_of

__all__ = ["QUEUE_GROUP", "NatsIngest", "audit_denial", "rejection_report"]

QUEUE_GROUP = INGEST_QUEUE
# Messages one instance handles at once: each mostly waits on a JetStream ack, so a few dozen
# in flight keep the broker busy without letting one instance hoard the queue group's work.
MAX_IN_FLIGHT = 32
# A rejected payload is copied into its report up to this size: enough to find the producer's
# mistake, small enough that a flood of bad 1 MiB messages does not double the traffic.
REPORT_PAYLOAD_CHARS = 4096
# At shutdown, messages already being handled get this long to finish and reply.
STOP_TIMEOUT_S = 3.0
# An audit line names at most this many refused channels: enough to see what was tried, and a
# 1,000-record batch of distinct channels does not make a 200 KB log line.
AUDIT_CHANNELS = 10
_CONNECTION_NAME = "logstream-ingest-consumer"
_ENCODER = msgspec.json.Encoder()

log = logging.getLogger("logstream.ingest")


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """NATS headers are case-sensitive on the wire; producers are not careful about case."""
    if not headers:
        return None
    if name in headers:
        return headers[name]
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


def rejection_report(reply: Mapping[str, Any], subject: str, payload: bytes) -> bytes:
    """What ``ingest.rejected`` receives: the refusal and the start of the payload, no headers
    (they hold the producer's credential)."""
    text = payload.decode("utf-8", errors="replace")
    truncated = len(text) > REPORT_PAYLOAD_CHARS
    return _ENCODER.encode(
        {
            "status": reply["status"],
            "error": reply["error"],
            "message": reply["message"],
            "details": reply.get("details", []),
            "subject": subject,
            "payload": text[:REPORT_PAYLOAD_CHARS],
            "payload_truncated": truncated,
            "payload_bytes": len(payload),
        }
    )


async def _body_as_is(msg: StreamMessage[Any]) -> bytes:
    """FastStream's own decoder runs ``json.loads`` on every body before the handler: work the
    pipeline does again with msgspec, and a body nested deeper than the recursion limit raises
    inside FastStream, which drops the message without a reply or a report. The handler reads
    the raw message; the body is left as it came."""
    return msg.body


class _Caller:
    """Who sent a message, once its token verified (``anonymous`` until then)."""

    __slots__ = ("who",)

    def __init__(self) -> None:
        self.who = audit.ANONYMOUS

    def identified(self, name: str) -> None:
        self.who = f"token:{name}"


def audit_denial(exc: LogstreamError, status: int, who: str) -> None:
    """The audit line the HTTP exception handler writes for HTTP, written here for NATS: what
    is the refused channels for a 403, else the subject."""
    what = INGEST_SUBJECT
    if isinstance(exc, Forbidden):
        channels = [
            str(d["channel"]) for d in exc.details if isinstance(d, dict) and "channel" in d
        ]
        what = ",".join(channels[:AUDIT_CHANNELS])
        if len(channels) > AUDIT_CHANNELS:
            what += f" (+{len(channels) - AUDIT_CHANNELS} more)"
    audit.denied(
        who=who,
        what=what or INGEST_SUBJECT,
        rule=exc.rule,
        status=status,
        via="nats",
        reason=exc.message,
    )


class NatsIngest:
    """The ``ingest.logs`` consumer; ``start``/``stop`` belong in the app's lifespan."""

    def __init__(
        self, settings: Settings, pipeline: IngestPipeline, metrics: IngestMetrics
    ) -> None:
        self._settings = settings
        self._pipeline = pipeline
        self._metrics = metrics
        self._broker = NatsBroker(
            **broker_options(settings, name=_CONNECTION_NAME),
            logger=None,
            graceful_timeout=STOP_TIMEOUT_S,
        )

        # The titles and descriptions are for the AsyncAPI document (logstream.services.ingest.asyncapi_doc).
        self._rejected = self._broker.publisher(
            REJECTED_SUBJECT,
            title=REJECTED_SUBJECT,
            description="A message refused without a reply subject: the refusal and the start "
            "of the payload, so that nothing disappears silently.",
        )

        @self._broker.subscriber(
            INGEST_SUBJECT,
            queue=QUEUE_GROUP,
            max_workers=MAX_IN_FLIGHT,
            decoder=_body_as_is,
            title=INGEST_SUBJECT,
            description="Log records to store, with the HTTP rules.",
        )
        async def on_ingest(msg: NatsMessage) -> NatsResponse | None:
            return await self.handle(msg.raw_message)

    @property
    def broker(self) -> NatsBroker:
        """The FastStream broker: its subscriber and publisher make the AsyncAPI document."""
        return self._broker

    @property
    def connected(self) -> bool:
        try:
            return self._broker.connection.is_connected  # FastStream's public accessor
        except Exception:  # not connected yet, or stopped
            return False

    async def start(self) -> None:
        """Subscribe, and return once the broker has the subscription: a request sent the
        moment ingest says it is ready finds a responder."""
        try:
            await asyncio.wait_for(self._subscribe(), self._settings.connect_timeout)
        except Exception as exc:  # timeout, refused connection, bad credentials
            raise BrokerUnavailable(
                f"cannot subscribe to {INGEST_SUBJECT} at {self._settings.nats_url} within "
                f"{self._settings.connect_timeout:g}s: {type(exc).__name__} {exc}".rstrip()
            ) from None

    async def _subscribe(self) -> None:
        await self._broker.start()
        await settle(self._broker.connection)

    async def stop(self) -> None:
        """Stop taking messages, let those in hand finish and reply, then close (bounded)."""
        try:
            await asyncio.wait_for(self._broker.stop(), STOP_TIMEOUT_S + 2.0)
        except Exception as exc:  # a broker that is down cannot be drained; close regardless
            log.warning("NATS consumer did not stop cleanly: %s", exc)
            try:
                connection = self._broker.connection
            except Exception:  # never connected: nothing to close
                return
            if connection is not None and not connection.is_closed:
                await connection.close()

    async def handle(self, msg: Msg) -> NatsResponse | None:
        """Run one message through the pipeline; the reply, or ``None`` when nobody asked."""
        reply, refusal = await self._outcome(msg)
        if msg.reply:
            headers = {}
            if isinstance(refusal, (RateLimited, BrokerUnavailable)):
                headers["Retry-After"] = str(refusal.retry_after)
            return NatsResponse(_ENCODER.encode(reply), headers=headers)
        if refusal is not None:
            await self._report_rejection(reply, msg)
        return None

    async def _outcome(self, msg: Msg) -> tuple[dict[str, Any], Exception | None]:
        headers = msg.headers
        caller = _Caller()
        request = IngestRequest(
            transport=NATS,
            content_type=_header(headers, "Content-Type") or JSON,
            declared_length=len(msg.data),
            credential=bearer_token(_header(headers, "Authorization")),
            read_body=body_in_memory(msg.data),
            identified=caller.identified,
        )
        try:
            accepted = await self._pipeline.publish(request)
        except LogstreamError as exc:
            status = status_of(exc)
            if status in AUDITED_STATUSES:
                audit_denial(exc, status, caller.who)
            return {**exc.to_body(), "status": status}, exc
        except Exception as exc:
            log.exception("unhandled error on %s", INGEST_SUBJECT)
            return {
                "error": "internal",
                "message": "internal error",
                "details": [],
                "status": 500,
            }, exc
        return {"accepted": accepted.accepted, "seqs": accepted.seqs, "status": 202}, None

    async def _report_rejection(self, reply: Mapping[str, Any], msg: Msg) -> None:
        self._metrics.rejected_republished.inc()
        log.info(
            "rejected message on %s without reply subject: %s %s",
            msg.subject,
            reply["status"],
            reply["message"],
        )
        try:
            await self._rejected.publish(rejection_report(reply, msg.subject, msg.data))
        except Exception as exc:  # counted and logged above; the broker is likely down
            log.warning("could not republish to %s: %s", REJECTED_SUBJECT, exc)
