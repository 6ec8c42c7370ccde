"""What every Logstream HTTP service shares: the error shape, health/ready/metrics, the runner.

This is the route layer for errors: the only place a ``LogstreamError`` becomes a status code.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from typing import Any

import msgspec
import uvicorn
from litestar import Litestar, MediaType, Request, Response, get
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from logstream.shared import audit, fast_paths
from logstream.shared.errors import (
    AuthUnavailable,
    BrokerUnavailable,
    Forbidden,
    InvalidRequest,
    LogstreamError,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    UnsupportedMediaType,
)
from logstream.shared.settings import ServiceSettings
from logstream.shared.structured_logging import uvicorn_log_config
from logstream.shared.uvicorn_adapter import (
    CONNECTION_KEY,
    FAST_PATH,
    EdgeLimits,
    check,
    open_connections,
    protocol_with,
)

__all__ = [
    "AUDITED_STATUSES",
    "EXCEPTION_HANDLERS",
    "ServiceState",
    "audit_denial",
    "error_response",
    "limit_request_headers",
    "refusal",
    "run_service",
    "service_routes",
    "status_of",
]

_STATUS = (
    (InvalidRequest, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (RateLimited, 429),
    (BrokerUnavailable, 503),
    (AuthUnavailable, 503),
)
# The statuses that are denials: each one leaves one line in the audit log (``logstream.shared.audit``).
AUDITED_STATUSES = frozenset({401, 403, 429})
# Request headers, all together: a browser sends 1-4 KiB, a JWT in a header and a cookie a few
# KiB more; 32 KiB leaves room and stops a client that streams megabytes of headers.
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADER_COUNT = 100
# The most descriptors a service raises its limit to (and assumes when it cannot tell).
_MAX_DESCRIPTORS = 1 << 20
# uvicorn's own backstop after SIGTERM: our streams close at once on the drain event; this only
# bounds a handler that ignores it.
GRACEFUL_SHUTDOWN_S = 5

log = logging.getLogger("logstream.web")


def status_of(exc: LogstreamError) -> int:
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), 500)


def error_response(exc: LogstreamError) -> Response:
    headers = {}
    if isinstance(exc, (RateLimited, BrokerUnavailable, AuthUnavailable)):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return Response(
        exc.to_body(), status_code=status_of(exc), headers=headers, media_type=MediaType.JSON
    )


def refusal(request: Request, exc: LogstreamError) -> Response:
    """The answer to a refused request, in the JSON error shape; a denial leaves its audit line."""
    response = error_response(exc)
    status = status_of(exc)
    # A caller the auth backend could not vouch for is refused too (fail closed): audited.
    if status in AUDITED_STATUSES or isinstance(exc, AuthUnavailable):
        audit_denial(request, rule=exc.rule, status=status, reason=exc.message)
    return response


def _http_error(request: Request, exc: HTTPException) -> Response:
    code = "".join("_" + c.lower() if c.isupper() else c for c in type(exc).__name__).lstrip("_")
    code = code.removesuffix("_exception") or "http_error"
    body: dict[str, Any] = {"error": code, "message": str(exc.detail), "details": []}
    if getattr(exc, "extra", None):
        body["details"] = exc.extra if isinstance(exc.extra, list) else [exc.extra]
    if exc.status_code in AUDITED_STATUSES:  # Litestar's own guards and middleware refuse too
        audit_denial(request, rule=code, status=exc.status_code, reason=str(exc.detail))
    return Response(
        body, status_code=exc.status_code, headers=exc.headers or {}, media_type=MediaType.JSON
    )


def audit_denial(request: Request, *, rule: str, status: int, reason: str) -> None:
    """One audit line for a refused request: who (as a guard recorded it), method and path.

    ``what`` is the path alone: the query string may carry ``access_token``. A failure to log
    must never turn a 401 into a 500, so it is logged and swallowed.
    """
    try:
        who = request.state.get("audit_who")
        audit.denied(
            who=str(who) if who else audit.ANONYMOUS,
            what=f"{request.method} {request.url.path}",
            rule=rule,
            status=status,
            remote=request.client.host if request.client else None,
            reason=reason,
        )
    except Exception:
        log.exception("could not write the audit line of a denial")


def _unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return Response(
        {"error": "internal", "message": "internal error", "details": []},
        status_code=500,
        media_type=MediaType.JSON,
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    LogstreamError: refusal,
    HTTPException: _http_error,
    Exception: _unexpected,
}


class RuntimeCollector(Collector):
    """What a leak would show first, sampled at each scrape: ``logstream_asyncio_tasks`` (tasks
    alive on the service's loop) and ``logstream_http_connections`` (open HTTP connections)."""

    def collect(self) -> Any:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped off the loop (a test's registry read): nothing to count
            tasks = 0
        yield GaugeMetricFamily(
            "logstream_asyncio_tasks", "asyncio tasks alive on the service's event loop", tasks
        )
        yield GaugeMetricFamily(
            "logstream_http_connections",
            "HTTP connections open on this process (every client, streams included)",
            open_connections(),
        )


class ServiceState:
    """Per-app state every service exposes: readiness, metrics registry, the drain signal."""

    def __init__(
        self,
        name: str,
        readiness: Callable[[], tuple[bool, str]],
        *,
        details: Callable[[], dict[str, Any]] | None = None,
        wrap: Callable[[Any], Any] | None = None,
    ) -> None:
        self.name = name
        self.readiness = readiness
        # More of the service's state for /ready's body (the broker's durability, the user
        # keys' freshness): what an operator checks, not what decides readiness.
        self.details = details
        # An ASGI wrapper the service puts around its app, outside Litestar (the gateway's
        # paced admission): applied by ``run_service``.
        self.wrap = wrap
        self.registry = CollectorRegistry()
        self.registry.register(fast_paths.FastPathCollector())
        self.registry.register(RuntimeCollector())
        # process_resident_memory_bytes, process_open_fds, ... (Linux /proc; nothing elsewhere)
        ProcessCollector(registry=self.registry)
        self.draining = asyncio.Event()


@get("/health", sync_to_thread=False, include_in_schema=True)
def health(request: Request) -> dict[str, str]:
    return {"status": "ok", "service": request.app.state.service.name}


@get("/ready", sync_to_thread=False)
def ready(request: Request) -> Response:
    service: ServiceState = request.app.state.service
    ok, why = service.readiness()
    if service.draining.is_set():
        ok, why = False, "shutting down"
    body: dict[str, Any] = {"ready": ok, "service": service.name, "reason": why}
    if service.details is not None:
        body.update(service.details())
    return Response(
        body,
        status_code=200 if ok else 503,
        media_type=MediaType.JSON,
    )


@get("/metrics", sync_to_thread=False, media_type=CONTENT_TYPE_LATEST)
def metrics(request: Request) -> Response:
    body = generate_latest(request.app.state.service.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def service_routes() -> list:
    return [health, ready, metrics]


class _DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM first tells open streams to end (else it waits on them for ever)."""

    def __init__(self, config: uvicorn.Config, draining: asyncio.Event) -> None:
        super().__init__(config)
        self._draining = draining

    def handle_exit(self, sig: int, frame: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
            loop.call_soon_threadsafe(self._draining.set)
        except RuntimeError:
            self._draining.set()
        super().handle_exit(sig, frame)


def limit_request_headers(
    app: Any, max_bytes: int = MAX_HEADER_BYTES, max_count: int = MAX_HEADER_COUNT
) -> Any:
    """ASGI wrapper: a request whose headers exceed ``max_bytes`` in all, or ``max_count`` in
    number, gets a 431 in the JSON error shape before any handler runs (uvicorn's httptools
    parser sets no limit of its own)."""

    async def guarded(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            size = sum(len(name) + len(value) for name, value in headers)
            if size > max_bytes or len(headers) > max_count:
                body = msgspec.json.encode(
                    {
                        "error": "request_headers_too_large",
                        "message": f"request headers too large: {len(headers)} headers, {size} "
                        f"bytes (at most {max_count} headers, {max_bytes} bytes)",
                        "details": [],
                    }
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"connection", b"close"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        try:
            await app(scope, receive, send)
        finally:
            # The request's HttpConnection holds uvicorn's cycle, which holds this scope: a
            # reference cycle per request that only a full collection would free (with 10,000
            # streams that is a pause of hundreds of ms for every stream). Break it.
            scope.pop(CONNECTION_KEY, None)

    return guarded


def descriptor_limit() -> int:
    """The process's open-file limit, raised to its hard limit first (as Go's runtime does:
    a server that holds one descriptor per client should not stop at a login shell's 1,024)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, _MAX_DESCRIPTORS)
        wanted = min(wanted, _MAX_DESCRIPTORS)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError) as exc:
        log.warning("could not read or raise the open-file limit: %s", exc)
        return _MAX_DESCRIPTORS
    return _MAX_DESCRIPTORS if soft == resource.RLIM_INFINITY else int(soft)


def edge_limits(settings: ServiceSettings) -> EdgeLimits:
    """The HTTP edge's limits from the settings; ``max_connections`` 0 is the descriptor limit
    less a tenth (at least 64) kept for the broker's connections, files and refusals."""
    ceiling = settings.max_connections
    if ceiling == 0:
        limit = descriptor_limit()
        ceiling = max(limit - max(limit // 10, 64), 16)
    return EdgeLimits(
        header_timeout=settings.header_timeout,
        body_min_rate=settings.body_min_rate,
        max_pending_per_address=settings.max_pending_per_address,
        max_connections=ceiling,
    )


def run_service(app: Litestar, settings: ServiceSettings, name: str) -> int:
    """Serve ``app`` until SIGINT/SIGTERM; returns the process exit code.

    The HTTP protocol is named, not left to uvicorn's choice: ``HttpProtocol`` when this uvicorn
    has what it hooks (``logstream.shared.uvicorn_adapter.check``), else uvicorn's own httptools
    protocol, and the fast path is reported off."""
    direct = fast_paths.record(FAST_PATH, check())
    limits = edge_limits(settings)
    if direct:
        log.info(
            "HTTP edge: headers within %gs, bodies at %d bytes/s, %d pending per address, "
            "%d connections",
            limits.header_timeout,
            limits.body_min_rate,
            limits.max_pending_per_address,
            limits.max_connections,
        )
    wrap = app.state.service.wrap
    config = uvicorn.Config(
        limit_request_headers(wrap(app) if wrap is not None else app),
        host=settings.host,
        port=settings.port,
        http=protocol_with(limits) if direct else "httptools",
        log_config=uvicorn_log_config(name, settings.log_level),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        access_log=False,
        server_header=False,
    )
    server = _DrainingServer(config, app.state.service.draining)
    server.run()
    return 0 if server.started else 1
