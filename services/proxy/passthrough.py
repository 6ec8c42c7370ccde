"""Streaming pass-through to a gateway: pick one, forward the credential, copy bytes back.

The proxy never decodes the stream. It opens ``GET {gateway}/api/logs/stream?channels=...``
with the browser's credential (and ``X-User-Id``/``X-Workspace-Id``, which the gateway records
but never trusts) on a connection of its own (``logstream.services.proxy.upstream``), then relays the
body bytes as they arrive (``logstream.services.proxy.relay``). When the browser goes away, the relay
closes that connection at once, so the gateway sees the disconnect too. An upstream refusal
(4xx/5xx before the stream opens) is relayed with its status, JSON body, ``Retry-After`` and
``WWW-Authenticate``; no reachable gateway is a 502. The shared httpx client serves only the
health checks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import jwt
import msgspec
from litestar import MediaType, Request, Response
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from logstream.services.proxy.relay import OpenRelays, StreamRelay
from logstream.services.proxy.upstream import (
    CONNECT_TIMEOUT_S,
    GatewayStream,
    GatewayUnreachable,
    open_gateway_stream,
)
from logstream.shared.cookies import pick_cookies
from logstream.shared.durability import MODES
from logstream.shared.identities import bearer_token

__all__ = [
    "HEALTH_INTERVAL_S",
    "SESSION_COOKIE",
    "GatewayPool",
    "OpenRelays",
    "ProxyMetrics",
    "bad_gateway",
    "forward_json",
    "new_http_client",
    "open_stream",
]

SESSION_COOKIE = "logstream_session"
STREAM_PATH = "/api/logs/stream"
# Query parameters the gateway understands besides `channels`; everything else is dropped.
# access_token goes through untouched so that the gateway alone decides whether it is allowed.
FORWARDED_QUERY = ("last_event_id", "since", "tail", "level", "q", "where", "access_token")
# The query of the JSON routes, passed on as given (the gateway checks it).
HISTORY_QUERY = ("channels", "before", "limit", "level", "q", "where", "access_token")
CHANNELS_QUERY = ("prefix", "limit", "access_token")
# A page of history takes the gateway a few broker round trips; past this it is stuck.
JSON_TIMEOUT = httpx.Timeout(connect=CONNECT_TIMEOUT_S, read=30.0, write=10.0, pool=None)
# A stream of many channels is logged with its channel list cut to this length.
MAX_LOGGED_CHANNELS = 512
# Readiness and round-robin use each gateway's last /ready answer (503 while its broker is
# down: the proxy is then not ready either, and new streams go to a ready gateway first), at
# most this old. docs/reference/stream.md#service-endpoints: /ready must not hang, so it reads this cache, never a gateway.
HEALTH_INTERVAL_S = 1.0
HEALTH_TIMEOUT_S = 1.0
# Answers older than this (the checker is stuck) no longer count as healthy.
HEALTH_STALE_S = 5 * HEALTH_INTERVAL_S
# An error body is a small JSON object; anything longer is cut rather than buffered.
MAX_ERROR_BODY = 64 * 1024
# How long the browser should wait before retrying after a 502.
BAD_GATEWAY_RETRY_S = 2
_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,128}", re.ASCII)

log = logging.getLogger("logstream.proxy")


def new_http_client() -> httpx.AsyncClient:
    """One client per app, for the health checks: no pool cap, no read timeout, no env proxy."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=CONNECT_TIMEOUT_S, read=None, write=10.0, pool=None),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        trust_env=False,
        follow_redirects=False,
    )


class _RelayedBytes(Collector):
    """``logstream_proxy_relayed_bytes_total``, read from the relays at each scrape."""

    _NAME, _HELP = "logstream_proxy_relayed_bytes", "bytes copied from gateways to clients"

    def __init__(self, total: Callable[[], int]) -> None:
        self._total = total

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self._NAME, self._HELP)]

    def collect(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self._NAME, self._HELP, value=self._total())]


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry, relayed_bytes: Callable[[], int]) -> None:
        self.streams_open = Gauge(
            "logstream_proxy_streams_open", "streams being relayed", ["route"], registry=registry
        )
        self.requests = Counter(
            "logstream_proxy_stream_requests_total",
            "stream requests by route and answered status",
            ["route", "status"],
            registry=registry,
        )
        registry.register(_RelayedBytes(relayed_bytes))
        self.gateway_up = Gauge(
            "logstream_proxy_gateway_up",
            "1 when the gateway answered its last health check",
            ["gateway"],
            registry=registry,
        )
        self.durability = Enum(
            "logstream_broker_durability",
            "What an acknowledged record survives, as the gateways' /ready says: fsync, "
            "replicated, lazy or unknown (logstream.shared.durability).",
            states=list(MODES),
            registry=registry,
        )
        self.durability.state("unknown")


class GatewayPool:
    """The configured gateways, their last health answer, and round-robin among healthy ones."""

    def __init__(
        self,
        urls: Sequence[str],
        metrics: ProxyMetrics | None = None,
        *,
        cookies: Sequence[str] = (),
    ) -> None:
        self.urls = tuple(urls)
        # The browser's cookies the gateways are given besides our own session cookie: the
        # product's session cookie, for the gateway's auth callout (``forward_cookies``).
        self.cookies = tuple(cookies)
        self._healthy: dict[str, bool | None] = {url: None for url in self.urls}
        self._turn = itertools.count()
        self._checked_at: float | None = None
        self._metrics = metrics
        # The broker's durability as each gateway's /ready body last said it.
        self._durability: dict[str, str] = {}

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

    def durability(self) -> str:
        """The broker's durability as the healthy gateways report it (the weakest when they
        differ, as during a change of the broker's settings); ``unknown`` before any says."""
        said = {self._durability.get(url) for url in self.urls if self._healthy[url]}
        said.discard(None)
        for mode in reversed(MODES):  # unknown, lazy, replicated, fsync: weakest first
            if mode in said:
                return mode
        return "unknown"

    def details(self) -> dict[str, Any]:
        return {"durability": self.durability()}

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
                self._take_durability(url, answer)
            except httpx.HTTPError:
                self.mark(url, False)

        await asyncio.gather(*(one(url) for url in self.urls))
        self._checked_at = time.monotonic()
        if self._metrics is not None:
            self._metrics.durability.state(self.durability())

    def _take_durability(self, url: str, answer: httpx.Response) -> None:
        try:
            mode = answer.json().get("durability")
        except (ValueError, AttributeError):
            mode = None
        if mode in MODES:
            self._durability[url] = mode
        else:
            self._durability.pop(url, None)

    async def watch(self, client: httpx.AsyncClient) -> None:
        """Refresh the health of every gateway every ``HEALTH_INTERVAL_S`` until cancelled."""
        while True:
            try:
                await self.check(client)
            except Exception:  # a bug here must not freeze readiness: log it and keep checking
                log.exception("gateway health check failed")
            await asyncio.sleep(HEALTH_INTERVAL_S)


def _credential(request: Request) -> str | None:
    return (
        bearer_token(request.headers.get("authorization"))
        or request.cookies.get(SESSION_COOKIE)
        or request.query_params.get("access_token")
    )


def _user_id(token: str | None) -> str | None:
    """The token's ``sub``, read WITHOUT verification: only a hint for the gateway's records."""
    if not token:
        return None
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.InvalidTokenError:
        return None
    return sub if isinstance(sub, str) and _HEADER_SAFE.fullmatch(sub) else None


def _upstream_request(
    base: str,
    path: str,
    request: Request,
    params: list[tuple[str, str | int | float | bool | None]],
    *,
    accept: str,
    workspace: str | None,
    cookies: Sequence[str] = (),
) -> httpx.Request:
    """A gateway request on behalf of the browser's: its credential (the Authorization header,
    our own cookie and the ``cookies`` named), the given query, and hints the gateway records
    but never trusts."""
    headers = {
        "Accept": accept,
        "Accept-Encoding": "identity",
        "User-Agent": "logstream-proxy",
    }
    if workspace:
        headers["X-Workspace-Id"] = workspace
    for name in ("authorization", "last-event-id"):
        if name in request.headers:
            headers[name] = request.headers[name]
    # Only our own cookie and those named: the browser's others are not the gateway's business.
    passed = pick_cookies(request.headers.get("cookie", ""), (SESSION_COOKIE, *cookies))
    if passed:
        headers["Cookie"] = passed
    user_id = _user_id(_credential(request))
    if user_id:
        headers["X-User-Id"] = user_id
    if request.client:
        headers["X-Forwarded-For"] = request.client.host
    # A Request built here (not by client.build_request) never picks up the shared client's
    # cookie jar, so one user's cookies cannot leak into another user's upstream request.
    return httpx.Request("GET", base + path, params=params, headers=headers)


def _stream_params(
    request: Request, channels: list[str]
) -> list[tuple[str, str | int | float | bool | None]]:
    # httpx's query type, as a list of pairs (a list[tuple[str, str]] is not one to mypy)
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("channels", channel) for channel in channels
    ]
    for name in FORWARDED_QUERY:
        # EventSource resends its own, newer Last-Event-ID header on reconnect to the same URL;
        # a last_event_id still in that URL is stale then, so the header wins.
        if name == "last_event_id" and "last-event-id" in request.headers:
            continue
        params.extend((name, value) for value in request.query_params.getall(name, []))
    return params


def _stream_request(
    base: str,
    request: Request,
    channels: list[str],
    workspace: str | None,
    cookies: Sequence[str] = (),
):
    return _upstream_request(
        base,
        STREAM_PATH,
        request,
        _stream_params(request, channels),
        accept="text/event-stream",
        workspace=workspace,
        cookies=cookies,
    )


async def open_stream(
    pool: GatewayPool,
    request: Request,
    channels: list[str],
    *,
    workspace: str | None,
    route: str,
    relays: OpenRelays,
    metrics: ProxyMetrics,
) -> Response:
    """Open the channels' stream on a gateway and answer with it (or with the refusal)."""
    for base in pool.candidates():
        try:
            upstream = await open_gateway_stream(
                _stream_request(base, request, channels, workspace, pool.cookies)
            )
        except GatewayUnreachable as exc:
            pool.mark(base, False)
            log.warning("gateway unreachable", extra={"gateway": base, "problem": str(exc)})
            continue
        metrics.requests.labels(route, str(upstream.status)).inc()
        if upstream.status != 200:
            return await _relay_refusal(upstream)
        return StreamRelay(
            upstream,
            relays,
            open_gauge=metrics.streams_open.labels(route),
            route=route,
            channel=",".join(channels)[:MAX_LOGGED_CHANNELS],
        )
    metrics.requests.labels(route, "502").inc()
    return bad_gateway()


async def forward_json(
    pool: GatewayPool,
    client: httpx.AsyncClient,
    request: Request,
    path: str,
    forwarded: tuple[str, ...],
    *,
    route: str,
    metrics: ProxyMetrics,
) -> Response:
    """A JSON GET (channels, history) answered by a gateway with the browser's credential:
    the gateway's status, body, ``Retry-After`` and ``WWW-Authenticate`` as they came."""
    params: list[tuple[str, str | int | float | bool | None]] = [
        (name, value) for name in forwarded for value in request.query_params.getall(name, [])
    ]
    for base in pool.candidates():
        upstream = _upstream_request(
            base,
            path,
            request,
            params,
            accept="application/json",
            workspace=None,
            cookies=pool.cookies,
        )
        upstream.extensions["timeout"] = JSON_TIMEOUT.as_dict()
        try:
            answer = await client.send(upstream)
        except httpx.TimeoutException:
            metrics.requests.labels(route, "504").inc()
            return _refusal(504, "gateway_timeout", "the log gateway did not answer in time")
        except httpx.TransportError as exc:
            pool.mark(base, False)
            log.warning("gateway unreachable", extra={"gateway": base, "problem": str(exc)})
            continue
        metrics.requests.labels(route, str(answer.status_code)).inc()
        headers = {"Cache-Control": "no-store"}
        for name in ("retry-after", "www-authenticate"):
            if name in answer.headers:
                headers[name] = answer.headers[name]
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=MediaType.JSON,
            headers=headers,
        )
    metrics.requests.labels(route, "502").inc()
    return bad_gateway()


def bad_gateway() -> Response:
    return _refusal(502, "bad_gateway", "no log gateway is reachable; try again shortly")


def _refusal(status: int, error: str, message: str) -> Response:
    return Response(
        {"error": error, "message": message, "details": []},
        status_code=status,
        media_type=MediaType.JSON,
        headers={"Retry-After": str(BAD_GATEWAY_RETRY_S)},
    )


async def _relay_refusal(upstream: GatewayStream) -> Response:
    try:
        body = await upstream.read_body(MAX_ERROR_BODY)
    finally:
        upstream.close()
    try:
        content = msgspec.json.decode(body)
        if not isinstance(content, dict):
            raise ValueError("not an object")
    except (msgspec.DecodeError, ValueError):
        content = {
            "error": "upstream_error",
            "details": [],
            "message": body[:500].decode(errors="replace")
            or upstream.reason.decode(errors="replace"),
        }
    headers = {}
    for name in ("retry-after", "www-authenticate"):
        values = [
            value.decode("latin-1") for key, value in upstream.headers if key == name.encode()
        ]
        if values:
            headers[name] = ", ".join(values)
    return Response(
        content, status_code=upstream.status, headers=headers, media_type=MediaType.JSON
    )
