"""The proxy service (docs/reference/stream.md#proxy-routes): Datashop-style routes, the Logs page, dev tokens.

Routes come from the route table (``logstream.services.proxy.routes``); each one becomes a GET handler
that builds its channel from the query and hands it to the pass-through. ``GET /`` serves the
Logs page with the table embedded, and ``/static/`` its script and style, from the same origin
so that the page's ``fetch`` of a stream carries the session cookie. Dev mode alone adds
``GET /dev/token``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import httpx
import msgspec
from litestar import Litestar, MediaType, Request, Response, get
from litestar.datastructures import CacheControlHeader, Cookie
from litestar.static_files import create_static_files_router

from logstream.services.proxy.api_doc import (
    CHANNELS_RESPONSES,
    DEV_TOKEN_RESPONSES,
    HISTORY_RESPONSES,
    ROUTES_RESPONSES,
    STREAM_RESPONSES,
    ChannelsOperation,
    DevTokenOperation,
    GatewayStreamOperation,
    HistoryOperation,
    openapi_config,
    stream_operation,
)
from logstream.services.proxy.passthrough import (
    CHANNELS_QUERY,
    HISTORY_QUERY,
    SESSION_COOKIE,
    STREAM_PATH,
    GatewayPool,
    OpenRelays,
    ProxyMetrics,
    forward_json,
    new_http_client,
    open_stream,
)
from logstream.services.proxy.routes import Route, RouteTable, load_routes
from logstream.services.proxy.settings import Settings
from logstream.shared.api_doc import complete_document
from logstream.shared.errors import BrokerUnavailable, InvalidRequest, LogstreamError
from logstream.shared.identities import DEV_USER_TOKEN_TTL_S, DEV_USERS
from logstream.shared.stream_doc import DEFAULT_MAX_CHANNELS, STREAM_SECURITY, channel_schemas
from logstream.shared.user_tokens import DEV_USER_ROLES, UserTokens
from logstream.shared.web import EXCEPTION_HANDLERS, ServiceState, service_routes

__all__ = ["create_app"]

_STATIC = Path(str(resources.files(__package__).joinpath("static")))
# The page's placeholder for its configuration (routes, dev mode), filled in at start.
_CONFIG_MARK = "__LOGSTREAM_CONFIG__"
# Where clients such as `logstream tail` read the route table (also embedded in the page).
ROUTES_PATH = "/api/logs/routes"
CHANNELS_PATH = "/api/logs/channels"
HISTORY_PATH = "/api/logs/history"
# The page runs only its own script and talks only to its own origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class UnknownDevUser(LogstreamError):
    """A /dev/token request for a user the dev identities do not have (404)."""

    code = "not_found"


@dataclass
class _Proxy:
    """What the handlers share; the HTTP client exists while the app runs (its lifespan)."""

    settings: Settings
    routes: RouteTable
    service: ServiceState
    pool: GatewayPool
    metrics: ProxyMetrics
    relays: OpenRelays
    client: httpx.AsyncClient | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)


def create_app(settings: Settings) -> Litestar:
    # httpx logs every request at INFO: one line per second per gateway for the health checks.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    routes = load_routes(settings.routes_file, settings.service_names)
    service = ServiceState(
        "proxy", readiness=lambda: pool.readiness(), details=lambda: pool.details()
    )
    relays = OpenRelays(service.draining)
    metrics = ProxyMetrics(service.registry, relays.relayed_bytes)
    pool = GatewayPool(settings.gateway_urls, metrics, cookies=settings.forwarded_cookies)
    proxy = _Proxy(settings, routes, service, pool, metrics, relays)
    handlers = [
        *service_routes(),
        _page_handler(proxy),
        _routes_handler(proxy),
        *(_stream_handler(route, proxy) for route in routes),
        *_gateway_handlers(proxy),
    ]
    if settings.dev:
        handlers.append(_dev_token_handler(UserTokens(settings.user_token_secret)))
    handlers.append(
        create_static_files_router(
            path="/static", directories=[_STATIC], cache_control=CacheControlHeader(no_cache=True)
        )
    )
    app = Litestar(
        route_handlers=handlers,
        exception_handlers={UnknownDevUser: _not_found, **EXCEPTION_HANDLERS},
        lifespan=[_lifespan(proxy)],
        openapi_config=openapi_config(settings.dev),
        logging_config=None,  # keep the process's JSON logging (logstream.shared.structured_logging)
    )
    # The gateway's channel limit is its own setting; the proxy documents its default, as the
    # channels parameter's description does (a bound of 1,000 had schemathesis build URLs past
    # what a client can send).
    complete_document(app, channel_schemas(settings.service_names, DEFAULT_MAX_CHANNELS))
    app.state.service = service
    app.state.proxy = proxy
    return app


def _lifespan(proxy: _Proxy):
    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        proxy.client = new_http_client()
        proxy.tasks.append(asyncio.create_task(proxy.pool.watch(proxy.client)))
        proxy.tasks.append(asyncio.create_task(proxy.relays.watch()))
        try:
            yield
        finally:
            for task in proxy.tasks:
                task.cancel()
            await asyncio.gather(*proxy.tasks, return_exceptions=True)
            await proxy.client.aclose()

    return lifespan


def _stream_handler(route: Route, proxy: _Proxy):
    async def stream_logs(request: Request) -> Response:
        query = {name: request.query_params.getall(name, []) for name in route.params}
        channel = route.channel_for(query)
        return await open_stream(
            proxy.pool,
            request,
            [str(channel)],
            workspace=channel.workspace,
            route=route.name,
            relays=proxy.relays,
            metrics=proxy.metrics,
        )

    params = ", ".join(route.params)
    return get(
        route.path,
        name=f"stream-{route.name}",
        summary=f"Stream {route.label} logs",
        description=f"Server-Sent Events of channel `{route.template}` from a gateway. "
        f"Required query parameters: {params}. Also passed through: last_event_id, since, "
        "tail, level, q, and the Last-Event-ID header.",
        tags=["streams"],
        responses=STREAM_RESPONSES,
        security=STREAM_SECURITY,
        operation_class=stream_operation(route),  # the route's parameters and pass-through
    )(stream_logs)


def _gateway_handlers(proxy: _Proxy) -> list:
    """The gateway's own read paths, passed through as they are: a stream of several channels
    (``channels=``), the channel list and history pages. The gateway checks every parameter."""

    @get(
        STREAM_PATH,
        name="stream-channels",
        summary="Stream log records of one or more channels (SSE), from a gateway",
        tags=["streams"],
        responses=STREAM_RESPONSES,
        security=STREAM_SECURITY,
        operation_class=GatewayStreamOperation,
    )
    async def stream_channels(request: Request) -> Response:
        return await open_stream(
            proxy.pool,
            request,
            request.query_params.getall("channels", []),
            workspace=None,
            route="channels",
            relays=proxy.relays,
            metrics=proxy.metrics,
        )

    @get(
        CHANNELS_PATH,
        summary="The channels that hold records, most recently active first (from a gateway)",
        tags=["streams"],
        responses=CHANNELS_RESPONSES,
        security=STREAM_SECURITY,
        operation_class=ChannelsOperation,
    )
    async def channel_list(request: Request) -> Response:
        return await _forward(request, CHANNELS_PATH, CHANNELS_QUERY, "channel-list")

    @get(
        HISTORY_PATH,
        summary="A page of past records before a seq (from a gateway)",
        tags=["streams"],
        responses=HISTORY_RESPONSES,
        security=STREAM_SECURITY,
        operation_class=HistoryOperation,
    )
    async def history(request: Request) -> Response:
        return await _forward(request, HISTORY_PATH, HISTORY_QUERY, "history")

    async def _forward(request: Request, path: str, query: tuple[str, ...], route: str):
        if proxy.client is None:
            raise BrokerUnavailable("the proxy is starting; retry shortly")
        return await forward_json(
            proxy.pool, proxy.client, request, path, query, route=route, metrics=proxy.metrics
        )

    return [stream_channels, channel_list, history]


def _routes_handler(proxy: _Proxy):
    table = {"routes": [route.describe() for route in proxy.routes]}

    @get(
        ROUTES_PATH,
        sync_to_thread=False,
        tags=["routes"],
        responses=ROUTES_RESPONSES,
        summary="The route table: each product route, its parameters and its channel",
    )
    def route_table() -> dict:
        return table

    return route_table


def _page_handler(proxy: _Proxy):
    config = {
        "dev": proxy.settings.dev,
        "routes": [route.describe() for route in proxy.routes],
        # The product's login (its sign-in page, or its session cookie passed on) replaces the
        # dev users' picker: a dev token would win over the product's session at the gateway.
        "dev_users": sorted(DEV_USERS)
        if proxy.settings.dev and not (proxy.settings.sign_in_url or proxy.settings.forward_cookies)
        else [],
        "sign_in_url": proxy.settings.sign_in_url,
    }
    # JSON inside <script>: "</" is escaped so that no value can close the element.
    encoded = msgspec.json.encode(config).decode().replace("</", "<\\/")
    page = (_STATIC / "index.html").read_text().replace(_CONFIG_MARK, encoded)

    @get("/", sync_to_thread=False, include_in_schema=False)
    def logs_page() -> Response:
        return Response(page, media_type=MediaType.HTML, headers=_PAGE_HEADERS)

    return logs_page


def _dev_token_handler(tokens: UserTokens):
    @get(
        "/dev/token",
        sync_to_thread=False,
        tags=["dev"],
        responses=DEV_TOKEN_RESPONSES,
        summary="Issue a dev user token (dev mode only)",
        operation_class=DevTokenOperation,
    )
    def dev_token(user: str | None = None) -> Response:
        """Returns ``{"token": ...}`` for a built-in dev user and sets the session cookie."""
        if not user:
            raise InvalidRequest(
                "query parameter 'user' is required (one of: " + ", ".join(sorted(DEV_USERS)) + ")",
                details=[{"parameter": "user", "problem": "missing"}],
            )
        if user not in DEV_USERS:
            raise UnknownDevUser(
                f"no dev user {user[:64]!r} (one of: " + ", ".join(sorted(DEV_USERS)) + ")",
                details=[{"parameter": "user", "problem": "unknown"}],
            )
        workspaces = DEV_USERS[user]
        token = tokens.issue_dev(user)
        cookie = Cookie(
            key=SESSION_COOKIE,
            value=token,
            path="/",
            httponly=True,
            samesite="lax",
            max_age=int(DEV_USER_TOKEN_TTL_S),
        )
        body = {
            "token": token,
            "user_id": user,
            "workspaces": list(workspaces),
            "roles": list(DEV_USER_ROLES.get(user, ())),
            "expires_in": int(DEV_USER_TOKEN_TTL_S),
        }
        return Response(
            body, media_type=MediaType.JSON, cookies=[cookie], headers={"Cache-Control": "no-store"}
        )

    return dev_token


def _not_found(_: Request, exc: LogstreamError) -> Response:
    return Response(exc.to_body(), status_code=404, media_type=MediaType.JSON)
