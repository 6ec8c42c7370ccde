"""The ingest service: ``POST /api/logs/publish`` and the ``ingest.logs`` NATS consumer.

``create_app(settings)`` wires the pieces; the lifespan connects to NATS (failing within
``connect_timeout`` when the broker is not there), makes sure the LOGS stream exists, starts
the NATS consumer, and on shutdown lets in-flight publishes finish before the link closes.
With a token file, SIGHUP reloads it without a restart (a bad file keeps the old tokens).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from logstream.services.ingest.api_doc import (
    LOKI_RESPONSES,
    OTLP_RESPONSES,
    PUBLISH_RESPONSES,
    PUBLISH_SECURITY,
    LokiOperation,
    OtlpOperation,
    PublishOperation,
    openapi_config,
    record_schemas,
)
from logstream.services.ingest.asyncapi_doc import asyncapi_routes
from logstream.services.ingest.channel_rules import load_channel_rules
from logstream.services.ingest.content_coding import is_identity, read_decoded
from logstream.services.ingest.loki import (
    LOKI_PATH,
    loki_body_coding,
    loki_media_type,
    loki_records,
)
from logstream.services.ingest.metrics import HTTP, LOKI, OTLP, IngestMetrics
from logstream.services.ingest.nats_ingest import NatsIngest
from logstream.services.ingest.otlp import (
    OTLP_PATH,
    PROTOBUF,
    empty_response,
    otlp_media_type,
    otlp_records,
    status_body,
)
from logstream.services.ingest.pipeline import Accepted, IngestPipeline, IngestRequest
from logstream.services.ingest.publisher import JetStreamPublisher
from logstream.services.ingest.settings import Settings
from logstream.shared.api_doc import complete_document
from logstream.shared.durability import BrokerDurability
from logstream.shared.errors import LogstreamError, SettingsError
from logstream.shared.identities import service_credential
from logstream.shared.nats_names import redact_url
from logstream.shared.service_tokens import TokenRegistry
from logstream.shared.web import (
    EXCEPTION_HANDLERS,
    ServiceState,
    refusal,
    service_routes,
    status_of,
)

__all__ = ["PUBLISH_PATH", "create_app", "reload_tokens"]

PUBLISH_PATH = "/api/logs/publish"
# How much more of a refused request's body is read (and dropped) before the connection is cut:
# a client that writes its whole body before reading the answer needs the server to read it
# all, or it sees a reset instead of the 413/401. 16 MiB or 5 s covers a confused client on a
# LAN; an endless body is cut there instead of being read for ever.
LINGER_BYTES = 16 * 1024 * 1024
LINGER_S = 5.0

log = logging.getLogger("logstream.ingest")
_BATCH = msgspec.json.Encoder()
JSON = "application/json"


def close_when_body_unread(app: ASGIApp) -> ASGIApp:
    """Middleware: bound what a refused request's body may still cost.

    A refusal sent before the body was read to its end (a 413 cut off mid-stream, a 401 before
    the body) first reads and drops up to ``LINGER_BYTES`` / ``LINGER_S`` more of it, so that a
    client that sends its whole body before reading (httpx, curl) finishes and sees the answer
    rather than a reset; a body still arriving after that gets ``Connection: close`` and the
    connection ends. Left alone, uvicorn would keep reading and dropping the rest of the body to
    keep the connection alive: an endless chunked body would never stop."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        body_done = not _has_body(scope)

        async def tracked_receive() -> ReceiveMessage:
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def linger() -> None:
            left = LINGER_BYTES
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LINGER_S):
                    while not body_done and left > 0:
                        message = await tracked_receive()
                        if message["type"] == "http.request":  # else a disconnect: no body
                            left -= len(message.get("body", b""))

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_done:
                if b"100-continue" not in dict(scope["headers"]).get(b"expect", b""):
                    await linger()  # (a client waiting for 100 Continue has sent nothing)
                if not body_done:
                    headers = [*message.get("headers", []), (b"connection", b"close")]
                    message = {**message, "headers": headers}
            await send(message)

        await app(scope, tracked_receive, closing_send)

    return middleware


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def _declared_length(request: Request) -> int | None:
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


@post(
    PUBLISH_PATH,
    status_code=202,
    request_max_body_size=None,  # the pipeline enforces max_body_bytes with our error shape
    summary="Publish log records",
    description="One record (JSON object), an array of records, or NDJSON lines, optionally "
    "compressed (`Content-Encoding: gzip`, `deflate` or `zstd`; limits apply to the "
    "decompressed bytes). All or nothing: 202 only once JetStream has stored every record. "
    "Credential: `Authorization: Bearer <token>`, HTTP Basic with the token as password, or "
    "`X-Service-Token`.",
    tags=["publish"],
    response_description="Every record is stored; `seqs` are their stream sequences, in order",
    responses=PUBLISH_RESPONSES,
    security=PUBLISH_SECURITY,
    operation_class=PublishOperation,  # declares the body this handler reads by itself
)
async def publish_logs(request: Request, pipeline: IngestPipeline) -> Accepted:
    coding = request.headers.get("content-encoding")
    return await pipeline.publish(
        _ingest_request(
            request,
            HTTP,
            content_type=request.headers.get("content-type"),
            # a compressed body's length says nothing of what it holds: the reader checks both
            declared_length=_declared_length(request) if is_identity(coding) else None,
            read_body=lambda limit: read_decoded(request.stream(), coding, limit),
        )
    )


def _ingest_request(
    request: Request,
    transport: str,
    *,
    content_type: str | None,
    declared_length: int | None,
    read_body: Callable[[int], Awaitable[bytes]],
) -> IngestRequest:
    """An HTTP publish request as the pipeline takes it: the service token from its headers,
    and the token's name kept for the audit line of a later denial."""
    headers = request.headers
    return IngestRequest(
        transport=transport,
        content_type=content_type,
        declared_length=declared_length,
        credential=service_credential(headers.get("authorization"), headers.get("x-service-token")),
        read_body=read_body,
        identified=lambda name: setattr(request.state, "audit_who", f"token:{name}"),
    )


@post(
    OTLP_PATH,
    status_code=200,
    request_max_body_size=None,  # read_decoded enforces max_body_bytes on the decompressed body
    summary="Publish log records as OTLP/HTTP (OpenTelemetry)",
    description="An OTLP `ExportLogsServiceRequest`, protobuf (`application/x-protobuf`) or "
    "OTLP/JSON (`application/json`), optionally compressed (`Content-Encoding`). Each log "
    "record's channel is its attribute `logstream.channel`, else its resource's. All or "
    "nothing, with the rules, grants and limits of `POST /api/logs/publish`; 200 with an empty "
    "`ExportLogsServiceResponse` once every record is stored. A retried export is stored once.",
    tags=["publish"],
    responses=OTLP_RESPONSES,
    security=PUBLISH_SECURITY,
    operation_class=OtlpOperation,  # declares the body this handler reads by itself
)
async def publish_otlp(request: Request, pipeline: IngestPipeline) -> Response[bytes]:
    media_type = otlp_media_type(request.headers.get("content-type"))
    rules = request.app.state.channel_rules
    try:
        await _publish_converted(
            request, pipeline, OTLP, lambda body, _: otlp_records(body, media_type, rules)
        )
    except LogstreamError as exc:
        if media_type != PROTOBUF:
            raise  # OTLP/JSON: Logstream's JSON error body, from the exception handler
        status = status_of(exc)
        return Response(  # the status, headers and audit line of every refusal; its own body
            status_body(status, exc.message),
            status_code=status,
            headers=refusal(request, exc).headers,
            media_type=PROTOBUF,
        )
    return Response(empty_response(media_type), status_code=200, media_type=media_type)


@post(
    LOKI_PATH,
    status_code=204,
    request_max_body_size=None,  # read_decoded enforces max_body_bytes on the decompressed body
    summary="Publish log records with the Loki push API",
    description="What Promtail, Grafana Alloy, Fluent Bit's `loki` output and Loki clients "
    "send: JSON (`application/json`, optionally with `Content-Encoding`) or snappy-compressed "
    "protobuf (`application/x-protobuf`, Loki's `PushRequest`). Each entry's channel is its "
    "stream's label `channel`. All or nothing, with the rules, grants and limits of "
    "`POST /api/logs/publish`; 204 once every entry is stored. A retried push is stored once.",
    tags=["publish"],
    responses=LOKI_RESPONSES,
    security=PUBLISH_SECURITY,
    operation_class=LokiOperation,  # declares the body this handler reads by itself
)
async def publish_loki(request: Request, pipeline: IngestPipeline) -> None:
    media_type = loki_media_type(request.headers.get("content-type"))
    rules = request.app.state.channel_rules
    await _publish_converted(
        request,
        pipeline,
        LOKI,
        lambda body, limit: loki_records(body, media_type, limit, rules),
        coding=loki_body_coding(request.headers.get("content-encoding"), media_type),
    )


async def _publish_converted(
    request: Request,
    pipeline: IngestPipeline,
    transport: str,
    convert: Callable[[bytes, int], list[dict[str, Any]]],
    *,
    coding: str | None = None,
) -> None:
    """Another tool's request, as a native batch through the same pipeline: credential, then
    the body (decompressed as ``coding``, by default its Content-Encoding, within
    max_body_bytes) turned into records by ``convert``."""
    headers = request.headers
    if coding is None:
        coding = headers.get("content-encoding")

    async def read_records(limit: int) -> bytes:
        body = await read_decoded(request.stream(), coding, limit)
        # the limit held the request; its records, re-encoded as a native batch, go on as one
        return _BATCH.encode(convert(body, limit))

    await pipeline.publish(
        _ingest_request(
            request, transport, content_type=JSON, declared_length=None, read_body=read_records
        )
    )


def _service_tokens(settings: Settings) -> TokenRegistry:
    if settings.dev:
        return TokenRegistry.dev(settings.service_names)
    return TokenRegistry.from_file(settings.tokens_file, settings.service_names)


def reload_tokens(tokens: TokenRegistry, metrics: IngestMetrics) -> bool:
    """Read the token file again (on SIGHUP); a file that does not load keeps the old tokens."""
    try:
        count = tokens.reload()
    except SettingsError as exc:
        metrics.token_reloads.labels("failed").inc()
        log.error(
            "service tokens not reloaded, still using the %d loaded before: %s",
            len(tokens),
            exc.message,
        )
        return False
    metrics.token_reloads.labels("ok").inc()
    metrics.tokens.set(count)
    log.info("service tokens reloaded from %s: %d token(s)", tokens.source, count)
    return True


def _on_sighup(reload: Callable[[], object]) -> Callable[[], object]:
    """Run ``reload`` on SIGHUP (uvicorn handles only SIGINT/SIGTERM); returns the undo."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (AttributeError, NotImplementedError, RuntimeError, ValueError) as exc:
        # No SIGHUP (Windows), or not the main thread (an app served from a test thread).
        log.warning("no SIGHUP reload of service tokens here: %s", exc)
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGHUP)


def _lifespan(
    settings: Settings,
    service: ServiceState,
    tokens: TokenRegistry,
    store: JetStreamPublisher,
    consumer: NatsIngest,
    reload: Callable[[], object] | None,
    durability: BrokerDurability,
):
    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            await store.start()
            await consumer.start()
            await durability.refresh(store.js)
        except LogstreamError as exc:
            # Said once, plainly, before uvicorn's traceback: this is why the service exits.
            log.error("ingest cannot start: %s", exc.message)
            await consumer.stop()
            await store.stop()
            raise
        log.info(
            "ingest ready",
            extra={
                "nats_url": redact_url(settings.nats_url),
                "service_tokens": len(tokens),
                "publish_rate": settings.publish_rate or None,
                "publish_burst": settings.burst if settings.publish_rate else None,
                "durability": durability.mode,
            },
        )
        if settings.atomic_batches == "auto" and durability.mode == "unknown":
            log.warning(
                "the broker's durability is unknown (%s): requests are written record by "
                "record; on a broker with sync_interval: always that is one fsync per record. "
                "Set nats_monitor_url (or atomic_batches=on) for one per batch",
                durability.problem,
            )
        undo_sighup = _on_sighup(reload) if reload is not None else (lambda: None)
        watcher = asyncio.create_task(durability.watch(store.js))
        try:
            yield
        finally:
            watcher.cancel()
            undo_sighup()
            service.draining.set()
            await consumer.stop()  # NATS messages in hand finish and get their replies
            await store.stop()  # then publishes still unconfirmed, then the link closes

    return lifespan


def create_app(settings: Settings) -> Litestar:
    tokens = _service_tokens(settings)
    channel_rules = load_channel_rules(settings.channel_rules, frozenset(settings.service_names))
    store = JetStreamPublisher(
        settings,
        on_atomic_refusal=lambda code: metrics.atomic_refused(code),
        durable=lambda: durability.mode == "fsync",
    )

    def readiness() -> tuple[bool, str]:
        if not store.connected:
            return False, "NATS link down"
        if not consumer.connected:
            return False, "NATS consumer not connected"
        return True, "NATS connected"

    service = ServiceState("ingest", readiness, details=lambda: durability.details())
    durability = BrokerDurability(settings.nats_monitor_urls, service.registry)
    metrics = IngestMetrics(service.registry)
    metrics.tokens.set(len(tokens))
    reload = None if tokens.source is None else functools.partial(reload_tokens, tokens, metrics)
    pipeline = IngestPipeline(settings, tokens, store, metrics)
    consumer = NatsIngest(settings, pipeline, metrics)
    app = Litestar(
        route_handlers=[
            publish_logs,
            publish_otlp,
            publish_loki,
            *service_routes(),
            *asyncapi_routes(consumer.broker, settings),
        ],
        dependencies={"pipeline": Provide(lambda: pipeline, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[close_when_body_unread],
        lifespan=[_lifespan(settings, service, tokens, store, consumer, reload, durability)],
        state=State({"service": service, "channel_rules": channel_rules}),
        openapi_config=openapi_config(),
        logging_config=None,  # the CLI configured structured logging; keep Litestar off it
    )
    complete_document(app, record_schemas(settings.service_names, settings.max_batch_records))
    return app
