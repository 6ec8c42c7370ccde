"""The gateway: ``GET /api/logs/stream`` (SSE), stats, and the dev test route (docs/reference/stream.md)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.response import Stream

from logstream.services.gateway.admission import paced
from logstream.services.gateway.api_doc import (
    CHANNELS_RESPONSES,
    HISTORY_RESPONSES,
    STATS_RESPONSES,
    TEST_RECORD_RESPONSES,
    ChannelsOperation,
    HistoryOperation,
    StreamOperation,
    TestRecordOperation,
    openapi_config,
    stream_schemas,
)
from logstream.services.gateway.auth import require_admin, require_user, user_tokens_for
from logstream.services.gateway.callout import AuthCallout, CalloutMetrics
from logstream.services.gateway.channel_list import list_channels, parse_channels_request
from logstream.services.gateway.connection import StreamWriter
from logstream.services.gateway.gc_policy import keep_collections_short
from logstream.services.gateway.history import read_history
from logstream.services.gateway.hub import Hub
from logstream.services.gateway.live import NatsLiveFeed
from logstream.services.gateway.metrics import GatewayMetrics
from logstream.services.gateway.outbox import Outbox
from logstream.services.gateway.replay import plan_replay, start_after_client
from logstream.services.gateway.settings import Settings
from logstream.services.gateway.source import NatsLogSource
from logstream.services.gateway.sse_answer import SseAnswer
from logstream.services.gateway.stream_request import (
    authorise,
    parse_history_request,
    parse_stream_request,
)
from logstream.services.gateway.subjects import covering_filters
from logstream.services.gateway.subscription import Subscription
from logstream.services.gateway.test_route import publish_test_record
from logstream.services.gateway.ticker import Ticker
from logstream.services.gateway.user_keys import UserKeyRefresh, fixed_keys_details
from logstream.shared.api_doc import complete_document
from logstream.shared.durability import BrokerDurability
from logstream.shared.errors import BrokerUnavailable, LogstreamError, RateLimited
from logstream.shared.nats_link import NatsLink
from logstream.shared.sse import SSE_HEADERS
from logstream.shared.stream_doc import STREAM_RESPONSES, STREAM_SECURITY
from logstream.shared.user_tokens import UserTokens
from logstream.shared.uvicorn_adapter import connection_of
from logstream.shared.web import (
    EXCEPTION_HANDLERS,
    ServiceState,
    service_routes,
    status_of,
)

__all__ = ["Settings", "create_app"]

log = logging.getLogger("logstream.gateway")
# How soon a recreated stream (its seqs starting over) is noticed: one cheap request per period.
STREAM_CHECK_S = 2.0
NO_REPUBLISH = (
    "stream LOGS does not republish its records on live.logs.> (it was made by an "
    "older ingest): start an ingest of this version, which adds it"
)
# How often the loop's lateness is sampled (logstream_gateway_loop_lag_seconds).
LOOP_LAG_SAMPLE_S = 0.1
# A client over its connection cap waits this long: about the time a closed tab takes to let go.
CONNECTION_CAP_RETRY_S = 5
# X-User-Id/X-Workspace-Id are logged, never trusted; a longer value is cut, not stored.
MAX_CLAIMED_CHARS = 128
# Lists and pages of records are the caller's alone: no shared cache may keep them.
NO_STORE = {"Cache-Control": "no-store"}


class GatewayState:
    def __init__(self, settings: Settings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.link: NatsLink | None = None
        self.hub: Hub | None = None
        self.source: NatsLogSource | None = None
        self.per_user: Counter[str] = Counter()
        self.started = time.monotonic()
        self.durability: BrokerDurability | None = None
        # Where the user-token keys come from, for /ready: the JWKS endpoint's refresher, or
        # what /ready says of keys that never change (a secret, a key file).
        self.user_keys: UserKeyRefresh | None = None
        self.fixed_keys: dict[str, Any] = {}

    def running(self) -> tuple[NatsLink, NatsLogSource, Hub]:
        """What the lifespan started; before that (or once it ended) a request gets a 503."""
        if self.link is None or self.source is None or self.hub is None:
            raise BrokerUnavailable("the gateway is starting; retry shortly")
        return self.link, self.source, self.hub

    def details(self) -> dict[str, Any]:
        """More of the gateway's state for /ready's body."""
        found = {} if self.durability is None else self.durability.details()
        keys = self.user_keys.details() if self.user_keys is not None else self.fixed_keys
        return {**found, "user_keys": keys}

    def ready(self) -> tuple[bool, str]:
        if self.link is None:
            return False, "starting"
        if not self.link.connected:
            return False, "NATS link down"
        if self.source is not None and self.source.republishes is False:
            return False, NO_REPUBLISH
        return True, "ok"


@get(
    "/api/logs/stream",
    guards=[require_user],
    summary="Stream log records (SSE)",
    tags=["stream"],
    responses=STREAM_RESPONSES,
    security=STREAM_SECURITY,
    operation_class=StreamOperation,
)  # declares the query and headers it reads by itself
async def stream(request: Request) -> Response:
    gateway: GatewayState = request.app.state.gateway
    try:
        return await _open_stream(request, gateway)
    except LogstreamError as exc:
        gateway.metrics.streams_refused.labels(str(status_of(exc))).inc()
        raise


async def _open_stream(request: Request, gateway: GatewayState) -> Response:
    settings, user = gateway.settings, request.state.user
    wanted = parse_stream_request(
        request, services=settings.service_names, max_channels=settings.max_channels
    )
    authorise(user, wanted)
    if gateway.per_user[user.user_id] >= settings.max_connections_per_user:
        raise RateLimited(
            f"user {user.user_id!r} already has "
            f"{settings.max_connections_per_user} open streams; close one or "
            "retry later",
            retry_after=CONNECTION_CAP_RETRY_S,
            rule="connection_cap",
        )
    link, source, hub = gateway.running()
    if not link.connected:
        raise BrokerUnavailable("the broker is unavailable; retry shortly")
    sub = Subscription(
        uuid.uuid4().hex[:16],
        user.user_id,
        wanted.patterns,
        Outbox(settings.outbox_bytes),
        wanted.min_level,
        wanted.query,
        wanted.where,
    )
    gateway.per_user[user.user_id] += 1
    try:
        cursor = await hub.subscribe(sub)
    except BaseException:
        _release(gateway, user.user_id)
        raise
    try:
        plan = await plan_replay(source, wanted, covering_filters(sub.subjects), cursor)
        if plan is None:
            cursor = await start_after_client(source, sub, wanted.last_event_id, cursor)
    except BaseException:
        hub.unsubscribe(sub)
        _release(gateway, user.user_id)
        raise
    if plan is not None:
        cursor = wanted.last_event_id if wanted.last_event_id is not None else plan.start_seq - 1
    gateway.metrics.connections.inc()
    log.info(
        "stream opened",
        extra={
            "connection_id": sub.connection_id,
            "user_id": user.user_id,
            "channels": [str(p) for p in sub.patterns],
            "cursor": cursor,
            "claimed_user": _claimed(request, "x-user-id"),
            "claimed_workspace": _claimed(request, "x-workspace-id"),
        },
    )

    def on_end(reason: str) -> None:
        _release(gateway, user.user_id)
        gateway.metrics.connections.dec()
        gateway.metrics.streams_ended.labels(reason).inc()
        log.info("stream ended", extra={"connection_id": sub.connection_id, "reason": reason})

    connection = connection_of(request.scope)
    writer = StreamWriter(
        hub,
        sub,
        cursor,
        settings.retry_ms,
        settings.heartbeat,
        request.app.state.service.draining,
        user.expires_at,
        on_end,
        source,
        plan,
        connection,
        key_watch=tokens.watch(user) if (tokens := request.app.state.user_tokens) else None,
        renew=request.state.get("callout_renewal"),
        recheck_at=user.recheck_at,
    )
    if connection is not None:

        def gone() -> bool:
            return connection.gone

        sub.set_client_probe(gone)
        # A client that leaves lets go of its slot, subscription and fan-out share at once.
        let_go = connection.on_lost(lambda: sub.lost_sink(gone=True))
        return SseAnswer(
            writer.frames(),
            gone,
            let_go,
            abort=connection.abort,
            close_unless_read=connection.close_unless_read,
            send_timeout=settings.send_timeout,
        )
    return Stream(writer.frames(), media_type="text/event-stream", headers=SSE_HEADERS)


def _claimed(request: Request, header: str) -> str | None:
    value = request.headers.get(header)
    return value[:MAX_CLAIMED_CHARS] if value is not None else None


def _release(gateway: GatewayState, user_id: str) -> None:
    gateway.per_user[user_id] -= 1
    if gateway.per_user[user_id] <= 0:
        del gateway.per_user[user_id]


@get(
    "/api/logs/channels",
    guards=[require_user],
    summary="List the channels that hold records, most recently active first",
    tags=["stream"],
    responses=CHANNELS_RESPONSES,
    security=STREAM_SECURITY,
    operation_class=ChannelsOperation,
)
async def channels(request: Request) -> Response:
    gateway: GatewayState = request.app.state.gateway
    services = gateway.settings.service_names
    wanted = parse_channels_request(request, services=services)
    _, source, _ = gateway.running()
    listed = await list_channels(source, request.state.user, wanted, services=services)
    return Response({"channels": listed}, media_type=MediaType.JSON, headers=NO_STORE)


@get(
    "/api/logs/history",
    guards=[require_user],
    summary="A page of past records before a seq (scroll back)",
    tags=["stream"],
    responses=HISTORY_RESPONSES,
    security=STREAM_SECURITY,
    operation_class=HistoryOperation,
)
async def history(request: Request) -> Response:
    gateway: GatewayState = request.app.state.gateway
    settings = gateway.settings
    wanted = parse_history_request(
        request, services=settings.service_names, max_channels=settings.max_channels
    )
    authorise(request.state.user, wanted)
    _, source, hub = gateway.running()
    page = await read_history(source, wanted, on_read=hub.count_read)
    return Response(page.to_json(), media_type=MediaType.JSON, headers=NO_STORE)


@get(
    "/admin/logs/stats",
    guards=[require_admin],
    sync_to_thread=False,
    tags=["admin"],
    summary="Connection and delivery counters",
    responses=STATS_RESPONSES,
    security=[{"adminBearer": []}],
)
def stats(request: Request) -> dict[str, Any]:
    gateway: GatewayState = request.app.state.gateway
    hub = gateway.hub
    return {
        "connections": len(hub.subscriptions) if hub else 0,
        # Connections whose records the hub writes straight to the socket (caught up).
        "direct_connections": sum(s.sink is not None for s in hub.subscriptions) if hub else 0,
        "users": len(gateway.per_user),
        "channels": hub.channel_counts() if hub else {},
        "delivered_total": hub.delivered_total if hub else 0,
        "read_total": hub.read_total if hub else 0,
        "last_seq": hub.last_seq if hub else 0,
        "buffered": hub.buffered if hub else 0,
        # Subject patterns this gateway asks the broker for (channels and wildcards watched now
        # or a moment ago), and what it asked: see logstream.services.gateway.hub.
        "interests": hub.interests if hub else 0,
        "broker": {
            "subscribes": hub.subscribes if hub else 0,
            "settles": hub.settles if hub else 0,
            "catch_ups": hub.catch_ups if hub else 0,
            "repairs": hub.repairs if hub else 0,
            # Replays by seq (resumes, tail) and the group reads that served them.
            "replays": hub.replays.replays if hub else 0,
            "replay_reads": hub.replays.reads if hub else 0,
        },
        "uptime_s": round(time.monotonic() - gateway.started, 3),
    }


@post(
    "/test/logs",
    status_code=202,
    tags=["dev"],
    summary="Publish a test record (dev mode only)",
    responses=TEST_RECORD_RESPONSES,
    operation_class=TestRecordOperation,
)
async def test_logs(request: Request) -> Response:
    """Dev mode only: publish one test record through ingest (section 4 rules apply)."""
    gateway: GatewayState = request.app.state.gateway
    body = await request.body()
    link, _, _ = gateway.running()
    status, reply = await publish_test_record(link, gateway.settings, body)
    return Response(reply, status_code=status, media_type=MediaType.JSON)


def _lifespan(gateway: GatewayState, service: ServiceState):
    @asynccontextmanager
    async def lifespan(app: Litestar):
        settings = gateway.settings
        link = gateway.link = await NatsLink.connect(settings, name="logstream-gateway")
        metrics = gateway.metrics
        source = gateway.source = NatsLogSource(link.nc, link.js)
        live = NatsLiveFeed(link.nc)
        link.on_disconnect(live.missed)
        hub = gateway.hub = Hub(source, live, on_read=metrics.records_read.inc)
        metrics.watch(hub)
        ticker = Ticker(settings.heartbeat, lambda: hub.subscriptions)
        if gateway.durability is not None:
            await gateway.durability.refresh(link.js)
        watchers = [
            asyncio.create_task(_wake_on_drain(gateway, service.draining)),
            asyncio.create_task(_watch_stream(hub, source)),
            asyncio.create_task(_watch_loop_lag(metrics)),
            asyncio.create_task(keep_collections_short()),
            asyncio.create_task(ticker.run()),
        ]
        if gateway.durability is not None:
            watchers.append(asyncio.create_task(gateway.durability.watch(link.js)))
        if gateway.user_keys is not None:
            watchers.append(asyncio.create_task(gateway.user_keys.run()))
        try:
            yield
        finally:
            for watcher in watchers:
                watcher.cancel()
            await hub.close()
            await link.close()
            if gateway.user_keys is not None:
                await gateway.user_keys.aclose()
            if app.state.callout is not None:
                await app.state.callout.aclose()

    return lifespan


async def _watch_stream(hub: Hub, source: NatsLogSource) -> None:
    """Look for a recreated LOGS stream every few seconds (see ``Hub.check_stream``)."""
    warned = False
    while True:
        try:
            await hub.check_stream()
        except Exception as exc:  # broker away, or no stream yet: look again later
            log.debug("stream check: %s", exc)
        if source.republishes is False and not warned:
            log.error(NO_REPUBLISH)
        warned = source.republishes is False
        await asyncio.sleep(STREAM_CHECK_S)


async def _watch_loop_lag(metrics: GatewayMetrics) -> None:
    """How late a timer fires: a stall of the loop (bookkeeping, a burst of work) delays every
    connection by as much, so operators and the bench can see it."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(LOOP_LAG_SAMPLE_S)
        metrics.loop_lag.observe(max(0.0, loop.time() - asked - LOOP_LAG_SAMPLE_S))


def _wake_every_stream(gateway: GatewayState) -> None:
    """A user-token key was withdrawn: each stream checks its token's key (``KeyWatch``) now,
    not at its next heartbeat, and those signed with it end with ``auth-expired``."""
    for sub in gateway.hub.subscriptions if gateway.hub is not None else ():
        sub.outbox.ready.set()


async def _wake_on_drain(gateway: GatewayState, draining: asyncio.Event) -> None:
    """On SIGTERM wake every connection so it sends its final frame and ends."""
    await draining.wait()
    for sub in gateway.hub.subscriptions if gateway.hub is not None else ():
        sub.outbox.ready.set()


def create_app(settings: Settings) -> Litestar:
    service = ServiceState(
        "gateway",
        lambda: gateway.ready(),
        details=lambda: gateway.details(),
        wrap=lambda app: paced(app, settings.max_opening),
    )
    gateway = GatewayState(settings, GatewayMetrics(service.registry))
    gateway.durability = BrokerDurability(settings.nats_monitor_urls, service.registry)
    routes: list = [stream, channels, history, stats, *service_routes()]
    if settings.dev:
        routes.append(test_logs)
    app = Litestar(
        route_handlers=routes,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[_lifespan(gateway, service)],
        openapi_config=openapi_config(settings.dev),
        debug=False,
        logging_config=None,
    )
    complete_document(app, stream_schemas(settings.service_names, settings.max_channels))
    app.state.service = service
    app.state.gateway = gateway
    app.state.settings = settings
    app.state.callout = None
    if settings.auth_callout_url:
        app.state.callout = AuthCallout(
            settings.auth_callout_url,
            settings.callout_headers,
            timeout_s=settings.auth_callout_timeout,
            ttl_s=settings.auth_callout_ttl,
            max_entries=settings.auth_callout_cache_size,
            cookies=settings.callout_cookies,
            metrics=CalloutMetrics(service.registry),
        )
    app.state.user_tokens = None
    if settings.takes_user_tokens:
        app.state.user_tokens = _user_tokens(settings, gateway)
    return app


def _user_tokens(settings: Settings, gateway: GatewayState) -> UserTokens:
    tokens = user_tokens_for(settings)
    if settings.jwt_jwks_url:
        gateway.user_keys = UserKeyRefresh(
            settings.jwt_jwks_url,
            tokens,
            every_s=settings.jwks_refresh_s,
            metrics=gateway.metrics,
            on_withdrawn=lambda: _wake_every_stream(gateway),
        )
    else:
        source = next(
            (name for name in ("jwt_public_key_file", "jwt_secret") if getattr(settings, name)),
            "dev_secret",
        )
        gateway.fixed_keys = fixed_keys_details(source, tokens.keys)
    gateway.metrics.user_keys.set_function(lambda: len(tokens.keys))
    if tokens.keys.skipped:  # why a kid the issuer uses may be refused: say so at start
        log.warning(
            "some user-token keys cannot verify tokens here; they are left out",
            extra={"skipped": list(tokens.keys.skipped)},
        )
    return tokens
