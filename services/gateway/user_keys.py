"""User-token keys from the identity provider's JWKS endpoint (``LOGSTREAM_JWT_JWKS_URL``).

At start the JWKS is fetched once with a blocking request, before the event loop runs: the
gateway has nothing to verify tokens with until it has it, and an unreachable or unusable
endpoint stops it with one line naming the URL and the problem (exit status 2), as a bad
setting does (``logstream.cli``).

While the gateway runs, the JWKS is fetched on the event loop with httpx's async client. Not
PyJWT's ``PyJWKClient``: its urllib request would block the loop, and every open stream with
it, for as long as the identity provider takes to answer (up to the timeout). A thread would
not block, but it cannot be cancelled at shutdown and the new keys must be swapped in on the
loop anyway; the async request is cancellable, bounded by one deadline, and needs no lock
(the keys are swapped between two awaits). The document is parsed with PyJWT's ``PyJWK``
(``logstream.shared.user_tokens.key_set_from_jwks``).

- Every ``jwt_jwks_refresh`` (default 5 minutes) the JWKS is read again; the keys it lists
  replace the keys held.
- A token whose kid is not held makes the request wait for one fetch (``refetch_for``), so a
  key published since the last refresh verifies at once. At most one such fetch per
  ``MIN_REFETCH_S`` (whatever the kids), and one fetch in flight is shared by every request
  waiting for it: a flood of forged kids costs the identity provider one request per 10 s per
  gateway besides the schedule, and the forgeries a 401 ``jwt_unknown_key``.
- A failed fetch keeps the keys held (tokens keep verifying), logs a warning, counts it
  (``logstream_gateway_user_key_refreshes_total{outcome="failed"}``), and ``/ready`` says the
  keys are stale. The gateway stays ready: every gateway reads the same identity provider, and
  turning them all unready would make an outage of the identity provider one of Logstream.
  While stale, the JWKS is retried every ``STALE_RETRY_S`` (or sooner, per the schedule).
- When a key leaves the set, every open stream is woken: one whose token that key verified
  ends with ``auth-expired`` (``KeyWatch``, ``logstream.services.gateway.connection``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import httpx

from logstream.services.gateway.metrics import GatewayMetrics
from logstream.shared.errors import SettingsError
from logstream.shared.records import format_time
from logstream.shared.settings import env_name
from logstream.shared.user_tokens import KeySet, UserTokens, key_set_from_jwks

__all__ = [
    "MIN_REFETCH_S",
    "SCHEDULE",
    "UNKNOWN_KID",
    "UserKeyRefresh",
    "fetch_at_start",
    "fixed_keys_details",
]

log = logging.getLogger("logstream.gateway.user_keys")

_SETTING = f"jwt_jwks_url ({env_name('jwt_jwks_url')})"
# An unknown kid fetches the JWKS at most this often, whatever the kids: bounds what forged
# kids can make a gateway ask of the identity provider.
MIN_REFETCH_S = 10.0
# At start: an identity provider that takes longer is down as far as the gateway can tell.
START_TIMEOUT_S = 10.0
# While running, a request with a new kid waits on the fetch: keep that wait short.
FETCH_TIMEOUT_S = 5.0
# While the keys are stale, try again this often (sooner than a long refresh period): the
# identity provider coming back is noticed within seconds, at little cost to it.
STALE_RETRY_S = 30.0
# A JWKS is a few KiB; an endpoint answering megabytes is not one (and would cost a parse).
MAX_JWKS_BYTES = 1024 * 1024
# What the refresh triggers are called in the metrics and the logs.
SCHEDULE = "schedule"
UNKNOWN_KID = "unknown_kid"
_ACCEPT = {"Accept": "application/jwk-set+json, application/json"}


class JwksUnavailable(Exception):
    """The endpoint answered, but not with a JWKS (a status other than 200, too large)."""


def _checked_status(response: httpx.Response) -> None:
    if response.status_code != 200:
        hint = " (a redirect: give its target as the URL)" if response.is_redirect else ""
        raise JwksUnavailable(f"it answered HTTP {response.status_code}{hint}")


def _checked_size(body: bytearray) -> None:
    if len(body) > MAX_JWKS_BYTES:
        raise JwksUnavailable(f"it answered more than {MAX_JWKS_BYTES} bytes: not a JWKS")


def _describe(exc: BaseException) -> str:
    """A person's account of a failed fetch (httpx's own text may be empty)."""
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return "no answer in time"
    if isinstance(exc, (JwksUnavailable, SettingsError)):
        return str(exc)
    text = str(exc) or "no detail"
    return f"{type(exc).__name__}: {text}"


def fetch_at_start(url: str, timeout_s: float = START_TIMEOUT_S) -> KeySet:
    """The JWKS at ``url``, fetched with a blocking request (the event loop does not run yet);
    ``SettingsError`` naming the setting, the URL and the problem if it cannot be had."""
    problem = f"invalid setting {_SETTING}: cannot use the JWKS at {url}"
    try:
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=False) as client,
            client.stream("GET", url, headers=_ACCEPT) as response,
        ):
            _checked_status(response)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                _checked_size(body)
    except (httpx.HTTPError, JwksUnavailable) as exc:
        raise SettingsError(f"{problem}: {_describe(exc)}") from None
    return key_set_from_jwks(bytes(body), source=problem)


def _in_the_clear(url: str) -> bool:
    """An http:// URL to another host (loopback stays on the machine: a sidecar, a test)."""
    parsed = urlparse(url)
    if parsed.scheme != "http":
        return False
    host = parsed.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: resolved elsewhere, reached over the network


def fixed_keys_details(source: str, keys: KeySet) -> dict[str, Any]:
    """What /ready says of keys that never change while the gateway runs (``source``: the
    setting they come from)."""
    return {"source": source, "state": "static", "keys": len(keys), "kids": keys.kids}


def _names(keys: KeySet) -> set[tuple[str | None, str, str]]:
    """What a key set is, for telling whether a refresh changed it: a key renamed (a new kid
    for the same key material) is a change too, or tokens with the new kid would not verify."""
    return {(key.kid, key.fingerprint, key.algorithm) for key in keys.keys}


def _when(moment: float | None) -> str | None:
    return None if moment is None else format_time(datetime.fromtimestamp(moment, UTC))


class UserKeyRefresh:
    """Keeps ``tokens``' keys those of the JWKS at ``url`` (see the module's docstring).

    ``fetch`` (the JWKS document's bytes), ``clock`` (monotonic seconds, for the refetch limit)
    and ``wall`` (epoch seconds, for what /ready says) are for tests; by default the URL is
    read with httpx and the clocks are ``time``'s. ``on_withdrawn`` runs when a key left the
    set (the gateway wakes its streams so they check).
    """

    def __init__(
        self,
        url: str,
        tokens: UserTokens,
        *,
        every_s: float,
        metrics: GatewayMetrics,
        fetch: Callable[[], Awaitable[bytes]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        min_refetch_s: float = MIN_REFETCH_S,
        on_withdrawn: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self._tokens = tokens
        self._every_s = every_s
        self._metrics = metrics
        self._fetch = fetch or self._fetch_http
        self._clock = clock
        self._wall = wall
        self._min_refetch_s = min_refetch_s
        self.on_withdrawn = on_withdrawn
        self._client: httpx.AsyncClient | None = None
        self._inflight: asyncio.Task[bool] | None = None
        # When an unknown kid last made a fetch (the limit counts only those: the schedule
        # bounds its own fetches, and a key published just after one is still fetched at once).
        self._last_refetch = -math.inf
        self.refreshed_at: float = wall()
        self.stale_since: float | None = None
        self.error: str | None = None
        self._skipped = tokens.keys.skipped
        tokens.refetch = self.refetch_for
        metrics.user_keys_stale.set_function(self._stale_seconds)
        if _in_the_clear(url):
            log.warning(
                "the JWKS is fetched over plain HTTP: whoever can change it on the way can sign "
                "user tokens this gateway accepts; give an https:// URL",
                extra={"jwks_url": url},
            )

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    def _stale_seconds(self) -> float:
        return 0.0 if self.stale_since is None else max(0.0, self._wall() - self.stale_since)

    async def run(self) -> None:
        """Refresh on the schedule until cancelled (the gateway's lifespan)."""
        while True:
            wait = self._every_s if not self.stale else min(self._every_s, STALE_RETRY_S)
            await asyncio.sleep(wait)
            await self.refresh(SCHEDULE)

    async def refresh(self, trigger: str = SCHEDULE) -> bool:
        """Fetch the JWKS now, or join the fetch under way; True when it was fetched (the
        keys are then the ones it lists), False when it failed (the keys held are kept)."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._refresh(trigger))
        # Shielded: a client that leaves while waiting must not cancel the others' fetch.
        return await asyncio.shield(self._inflight)

    async def refetch_for(self, kid: str) -> bool:
        """``UserTokens.refetch``: a token names ``kid``, which is not held. Join the fetch
        under way, or fetch unless an unknown kid made one under ``min_refetch_s`` ago."""
        if self._inflight is None:
            now = self._clock()
            if now - self._last_refetch < self._min_refetch_s:
                self._metrics.user_key_refetches_limited.inc()
                return False
            self._last_refetch = now
        return await self.refresh(UNKNOWN_KID)

    async def aclose(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _refresh(self, trigger: str) -> bool:
        try:
            body = await self._fetch()
            keys = key_set_from_jwks(body, source="not a usable JWKS")
        except Exception as exc:  # whatever went wrong, the keys held stay in use
            self._failed(trigger, _describe(exc))
            return False
        finally:
            self._inflight = None
        self._use(keys, trigger)
        return True

    async def _fetch_http(self) -> bytes:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=False)
        # httpx's timeout bounds each read; this bounds the whole fetch (a server that drips).
        async with (
            asyncio.timeout(FETCH_TIMEOUT_S),
            self._client.stream("GET", self.url, headers=_ACCEPT) as response,
        ):
            _checked_status(response)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                _checked_size(body)
            return bytes(body)

    def _failed(self, trigger: str, why: str) -> None:
        self._metrics.user_key_refreshes.labels(trigger, "failed").inc()
        if self.stale_since is None:
            self.stale_since = self._wall()
        self.error = why
        held = self._tokens.keys
        log.warning(
            "the JWKS could not be fetched; the %d user-token keys held stay in use",
            len(held),
            extra={
                "jwks_url": self.url,
                "trigger": trigger,
                "error": why,
                "kids": held.kids,
                "stale_since": _when(self.stale_since),
            },
        )

    def _use(self, keys: KeySet, trigger: str) -> None:
        self._metrics.user_key_refreshes.labels(trigger, "ok").inc()
        if self.stale_since is not None:
            log.info(
                "the JWKS answers again; user-token keys are fresh",
                extra={"jwks_url": self.url, "stale_since": _when(self.stale_since)},
            )
        self.refreshed_at, self.stale_since, self.error = self._wall(), None, None
        if keys.skipped != self._skipped:
            self._skipped = keys.skipped
            if keys.skipped:
                log.warning(
                    "the JWKS lists keys that cannot verify user tokens; they are left out",
                    extra={"jwks_url": self.url, "skipped": list(keys.skipped)},
                )
        held = self._tokens.keys
        if _names(held) == _names(keys):
            return  # the same keys by the same kids: open streams need not look again
        withdrawn = [key for key in held.keys if not keys.holds(key.fingerprint)]
        added = [key for key in keys.keys if not held.holds(key.fingerprint)]
        self._tokens.use_keys(keys)
        log.info(
            "user-token keys changed",
            extra={
                "jwks_url": self.url,
                "trigger": trigger,
                "kids": keys.kids,
                "added": [key.kid for key in added],
                "withdrawn": [key.kid for key in withdrawn],
            },
        )
        if withdrawn and self.on_withdrawn is not None:
            self.on_withdrawn()

    def details(self) -> dict[str, Any]:
        """What /ready says of the keys (``user_keys``); stale keys do not make it 503."""
        keys = self._tokens.keys
        state: dict[str, Any] = {
            "source": "jwt_jwks_url",
            "state": "stale" if self.stale else "fresh",
            "keys": len(keys),
            "kids": keys.kids,
            "refreshed_at": _when(self.refreshed_at),
        }
        if self.stale:
            state["stale_since"] = _when(self.stale_since)
            state["error"] = self.error
        return state
