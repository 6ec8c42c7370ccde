"""The ingest service: ``POST /api/logs/publish`` and the ``ingest.logs`` NATS consumer.

``create_app(settings)`` wires the pieces; the lifespan connects to NATS (failing within
``connect_timeout`` when the broker is not there), makes sure the LOGS stream exists, starts
the NATS consumer, and on shutdown lets in-flight publishes finish before the link closes.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import msgspec
from litestar import Litestar, Request, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig, ResponseSpec

from shared.errors import LogstreamError, PayloadTooLarge
from shared.identities import bearer_token
from shared.service_tokens import TokenRegistry
from shared.web import EXCEPTION_HANDLERS, ServiceState, service_routes
from services.ingest.metrics import HTTP, IngestMetrics
from services.ingest.nats_ingest import NatsIngest
from services.ingest.pipeline import Accepted, IngestPipeline, IngestRequest
from services.ingest.publisher import JetStreamPublisher
from services.ingest.settings import Settings

__all__ = ["PUBLISH_PATH", "create_app"]

PUBLISH_PATH = "/api/logs/publish"
_VERSION = "0.1.0"

log = logging.getLogger("logstream.ingest")


class ErrorBody(msgspec.Struct):
    """Every refusal: a machine code, a sentence for a human, and details."""

    error: str
    message: str
    details: list[Any]


_ERRORS = {
    400: "a record breaks the contract; details name the record index and field",
    401: "no service token, or one that does not verify",
    403: "the token may not publish to some channels; details list them; nothing was stored",
    413: "body over the size limit, or too many records",
    415: "content type is neither application/json nor application/x-ndjson",
    429: "the token is over its records/s budget; see Retry-After",
    503: "NATS/JetStream did not confirm; the records may or may not be stored; see Retry-After",
}


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes (chunked bodies included)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
    return bytes(body)


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
    description="One record (JSON object), an array of records, or NDJSON lines. All or "
    "nothing: 202 only once JetStream has stored every record. Credential: "
    "`Authorization: Bearer <token>` or `X-Service-Token`.",
    responses={status: ResponseSpec(data_container=ErrorBody, description=text)
               for status, text in _ERRORS.items()},
)
async def publish_logs(request: Request, pipeline: IngestPipeline) -> Accepted:
    headers = request.headers
    credential = bearer_token(headers.get("authorization")) or headers.get(
        "x-service-token")
    return await pipeline.publish(IngestRequest(
        transport=HTTP,
        content_type=headers.get("content-type"),
        declared_length=_declared_length(request),
        credential=credential,
        read_body=lambda limit: _read_capped(request, limit),
    ))


def _service_tokens(settings: Settings) -> TokenRegistry:
    if settings.dev:
        return TokenRegistry.dev(settings.service_names)
    return TokenRegistry.from_file(settings.tokens_file, settings.service_names)


def _lifespan(settings: Settings, service: ServiceState, store: JetStreamPublisher,
              consumer: NatsIngest):
    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            await store.start()
            await consumer.start()
        except LogstreamError as exc:
            # Said once, plainly, before uvicorn's traceback: this is why the service exits.
            log.error("ingest cannot start: %s", exc.message)
            await consumer.stop()
            await store.stop()
            raise
        log.info("ingest ready", extra={"nats_url": settings.nats_url,
                                        "rate_limit": settings.rate_limit})
        try:
            yield
        finally:
            service.draining.set()
            await consumer.stop()  # NATS messages in hand finish and get their replies
            await store.stop()  # then publishes still unconfirmed, then the link closes

    return lifespan


def create_app(settings: Settings) -> Litestar:
    tokens = _service_tokens(settings)
    store = JetStreamPublisher(settings)

    def readiness() -> tuple[bool, str]:
        if not store.connected:
            return False, "NATS link down"
        if not consumer.connected:
            return False, "NATS consumer not connected"
        return True, "NATS connected"

    service = ServiceState("ingest", readiness)
    metrics = IngestMetrics(service.registry)
    pipeline = IngestPipeline(settings, tokens, store, metrics)
    consumer = NatsIngest(settings, pipeline, metrics)
    return Litestar(
        route_handlers=[publish_logs, *service_routes()],
        dependencies={"pipeline": Provide(lambda: pipeline, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[_lifespan(settings, service, store, consumer)],
        state=State({"service": service}),
        openapi_config=OpenAPIConfig(title="Logstream ingest", version=_VERSION),
        logging_config=None,  # the CLI configured structured logging; keep Litestar off it
    )
