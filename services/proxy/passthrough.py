"""Streaming pass-through to a gateway: pick one, forward the credential, copy bytes back.

The proxy never decodes the stream. It opens ``GET {gateway}/api/logs/stream?channels=...``
with the browser's credential (and ``X-User-Id``/``X-Workspace-Id``, which the gateway records
but never trusts), then relays the upstream's raw chunks as they arrive. When the browser goes
away, Litestar cancels the relay and its ``finally`` closes the upstream response at once, so
the gateway sees the disconnect too. An upstream refusal (4xx/5xx before the stream opens) is
relayed with its status, JSON body and ``Retry-After``; no reachable gateway is a 502.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from typing import AsyncIterator, Sequence

import anyio
import httpx
import jwt
import msgspec
from litestar import MediaType, Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream
from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.channels import Channel
from shared.identities import bearer_token
from shared.sse import SSE_HEADERS, sse_frame

__all__ = [
    "HEALTH_INTERVAL_S",
    "SESSION_COOKIE",
    "GatewayPool",
    "ProxyMetrics",
    "bad_gateway",
    "new_http_client",
    "open_stream",
]

SESSION_COOKIE = "logstream_session"
STREAM_PATH = "/api/logs/stream"
# Query parameters the gateway understands besides `channels`; everything else is dropped.
# access_token goes through untouched so that the gateway alone decides whether it is allowed.
FORWARDED_QUERY = ("last_event_id", "since", "tail", "level", "q", "access_token")
# Readiness and round-robin use each gateway's last /ready answer (503 while its broker is
# down: the proxy is then not ready either, and new streams go to a ready gateway first), at
# most this old. CONTRACT 9: /ready must not hang, so it reads this cache, never a gateway.
HEALTH_INTERVAL_S = 1.0
HEALTH_TIMEOUT_S = 1.0
# Answers older than this (the checker is stuck) no longer count as healthy.
HEALTH_STALE_S = 5 * HEALTH_INTERVAL_S
# A gateway that does not accept a TCP connection within 2 s is treated as down; a stream
# itself has no read timeout (the gateway's heartbeats keep it alive).
CONNECT_TIMEOUT_S = 2.0
# An error body is a small JSON object; anything longer is cut rather than buffered.
MAX_ERROR_BODY = 64 * 1024
# Sent when the proxy drains (SIGTERM): the gateway's default reconnect delay.
DRAIN_RETRY_MS = 2000
# How long the browser should wait before retrying after a 502.
BAD_GATEWAY_RETRY_S = 2
_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,128}", re.ASCII)

log = logging.getLogger("logstream.proxy")


def new_http_client() -> httpx.AsyncClient:
    """One client per app: no pool cap (streams are long-lived), no read timeout, no env proxy."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=CONNECT_TIMEOUT_S, read=None, write=10.0, pool=None),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        trust_env=False,
        follow_redirects=False,
    )


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.streams_open = Gauge("logstream_proxy_streams_open", "streams being relayed",
                                  ["route"], registry=registry)
        self.requests = Counter("logstream_proxy_stream_requests_total",
                                "stream requests by route and answered status",
                                ["route", "status"], registry=registry)
        self.relayed_bytes = Counter("logstream_proxy_relayed_bytes_total",
                                     "bytes copied from gateways to clients", registry=registry)
        self.gateway_up = Gauge("logstream_proxy_gateway_up",
                                "1 when the gateway answered its last health check",
                                ["gateway"], registry=registry)


class GatewayPool:
    """The configured gateways, their last health answer, and round-robin among healthy ones."""

    def __init__(self, urls: Sequence[str], metrics: ProxyMetrics | None = None) -> None:
        self.urls = tuple(urls)
        self._healthy: dict[str, bool | None] = {url: None for url in self.urls}
        self._turn = itertools.count()
        self._checked_at: float | None = None
        self._metrics = metrics

    def candidates(self) -> list[str]:
        """Gateways to try, in order: the healthy (or unknown) ones rotated, then the rest."""
        start = next(self._turn)
        rotated = [self.urls[(start + i) % len(self.urls)] for i in range(len(self.urls))]
        good = [url for url in rotated if self._healthy[url] is not False]
        return good + [url for url in rotated if url not in good]

    def mark(self, url: str, healthy: bool) -> None:
        self._healthy[url] = healthy
        if self._metrics is not None:
            self._metrics.gateway_up.labels(url).set(1 if healthy else 0)

    def readiness(self) -> tuple[bool, str]:
        if self._checked_at is None:
            return False, "gateways not checked yet"
        if time.monotonic() - self._checked_at > HEALTH_STALE_S:
            return False, "gateway health checks have stalled"
        up = [url for url in self.urls if self._healthy[url]]
        if up:
            return True, f"{len(up)} of {len(self.urls)} gateways answer"
        return False, "no gateway is ready (GET /ready)"

    async def check(self, client: httpx.AsyncClient) -> None:
        async def one(url: str) -> None:
            try:
                answer = await client.get(url + "/ready", timeout=HEALTH_TIMEOUT_S)
                self.mark(url, answer.status_code == 200)
            except httpx.HTTPError:
                self.mark(url, False)

        await asyncio.gather(*(one(url) for url in self.urls))
        self._checked_at = time.monotonic()

    async def watch(self, client: httpx.AsyncClient) -> None:
        """Refresh the health of every gateway every ``HEALTH_INTERVAL_S`` until cancelled."""
        while True:
            try:
                await self.check(client)
            except Exception:  # a bug here must not freeze readiness: log it and keep checking
                log.exception("gateway health check failed")
            await asyncio.sleep(HEALTH_INTERVAL_S)


def _credential(request: Request) -> str | None:
    return (bearer_token(request.headers.get("authorization"))
            or request.cookies.get(SESSION_COOKIE) or request.query_params.get("access_token"))


def _user_id(token: str | None) -> str | None:
    """The token's ``sub``, read WITHOUT verification: only a hint for the gateway's records."""
    if not token:
        return None
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.InvalidTokenError:
        return None
    return sub if isinstance(sub, str) and _HEADER_SAFE.fullmatch(sub) else None


def _upstream_request(base: str, request: Request, channel: Channel) -> httpx.Request:
    params = [("channels", str(channel))]
    for name in FORWARDED_QUERY:
        # EventSource resends its own, newer Last-Event-ID header on reconnect to the same URL;
        # a last_event_id still in that URL is stale then, so the header wins.
        if name == "last_event_id" and "last-event-id" in request.headers:
            continue
        params.extend((name, value) for value in request.query_params.getall(name, []))
    headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity",
               "User-Agent": "logstream-proxy", "X-Workspace-Id": channel.workspace}
    for name in ("authorization", "last-event-id"):
        if name in request.headers:
            headers[name] = request.headers[name]
    session = request.cookies.get(SESSION_COOKIE)
    if session:  # only our own cookie: the browser's other cookies are not the gateway's business
        headers["Cookie"] = f"{SESSION_COOKIE}={session}"
    user_id = _user_id(_credential(request))
    if user_id:
        headers["X-User-Id"] = user_id
    if request.client:
        headers["X-Forwarded-For"] = request.client.host
    # A Request built here (not by client.build_request) never picks up the shared client's
    # cookie jar, so one user's cookies cannot leak into another user's upstream request.
    return httpx.Request("GET", base + STREAM_PATH, params=params, headers=headers)


async def open_stream(client: httpx.AsyncClient, pool: GatewayPool, request: Request,
                      channel: Channel, *, route: str, draining: asyncio.Event,
                      metrics: ProxyMetrics) -> Response:
    """Open the channel's stream on a gateway and answer with it (or with the refusal)."""
    for base in pool.candidates():
        try:
            upstream = await client.send(_upstream_request(base, request, channel), stream=True)
        except httpx.TransportError as exc:
            pool.mark(base, False)
            log.warning("gateway unreachable", extra={"gateway": base, "problem": repr(exc)})
            continue
        metrics.requests.labels(route, str(upstream.status_code)).inc()
        if upstream.status_code != 200:
            return await _relay_refusal(upstream)
        headers = {**SSE_HEADERS, "Content-Type": "text/event-stream; charset=utf-8"}
        relay = _relay(upstream, draining, metrics, route, str(channel))
        # The relay's `finally` closes the upstream; if the client is gone before the relay
        # ever starts, that `finally` never runs, and this background close still does it.
        return Stream(relay, status_code=200, headers=headers, media_type="text/event-stream",
                      background=BackgroundTask(upstream.aclose))
    metrics.requests.labels(route, "502").inc()
    return bad_gateway()


def bad_gateway() -> Response:
    body = {"error": "bad_gateway", "message": "no log gateway is reachable; try again shortly",
            "details": []}
    return Response(body, status_code=502, media_type=MediaType.JSON,
                    headers={"Retry-After": str(BAD_GATEWAY_RETRY_S)})


async def _relay_refusal(upstream: httpx.Response) -> Response:
    body = b""
    try:
        async for chunk in upstream.aiter_bytes():
            body += chunk
            if len(body) >= MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass
    finally:
        with anyio.CancelScope(shield=True):
            await upstream.aclose()
    try:
        content = msgspec.json.decode(body)
        if not isinstance(content, dict):
            raise ValueError("not an object")
    except (msgspec.DecodeError, ValueError):
        content = {"error": "upstream_error", "details": [],
                   "message": body[:500].decode(errors="replace") or upstream.reason_phrase}
    headers = {name: upstream.headers[name] for name in ("retry-after", "www-authenticate")
               if name in upstream.headers}
    return Response(content, status_code=upstream.status_code, headers=headers,
                    media_type=MediaType.JSON)


async def _relay(upstream: httpx.Response, draining: asyncio.Event, metrics: ProxyMetrics,
                 route: str, channel: str) -> AsyncIterator[bytes]:
    """Yield the upstream's raw chunks until it ends, the proxy drains, or the client leaves."""
    chunks = upstream.aiter_raw()
    drained = asyncio.ensure_future(draining.wait())
    pending: asyncio.Future | None = None
    at_frame_end, relayed, started = True, 0, time.monotonic()
    metrics.streams_open.labels(route).inc()
    try:
        while True:
            pending = asyncio.ensure_future(anext(chunks))
            await asyncio.wait((pending, drained), return_when=asyncio.FIRST_COMPLETED)
            if not pending.done():
                # Draining: a final retry hint, unless we are mid-frame (then just end: a
                # reader drops an unfinished event).
                if at_frame_end:
                    yield sse_frame(retry=DRAIN_RETRY_MS)
                return
            try:
                chunk = pending.result()
            except StopAsyncIteration:
                return
            except httpx.HTTPError as exc:
                log.info("gateway stream ended", extra={"problem": repr(exc)})
                return
            pending = None
            at_frame_end = chunk.endswith(b"\n\n")
            relayed += len(chunk)
            metrics.relayed_bytes.inc(len(chunk))
            yield chunk
    finally:
        metrics.streams_open.labels(route).dec()
        log.info("stream relayed", extra={"route": route, "channel": channel, "bytes": relayed,
                                          "seconds": round(time.monotonic() - started, 3)})
        # Our awaits here run while Litestar cancels us: shield them, or the upstream stays open.
        with anyio.CancelScope(shield=True):
            drained.cancel()
            if pending is not None:
                if not pending.done():
                    pending.cancel()
                    await asyncio.wait((pending,))
                if not pending.cancelled():
                    pending.exception()  # retrieved, so asyncio does not warn about it
            await upstream.aclose()
