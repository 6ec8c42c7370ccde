"""Who a caller without a Logstream token is, asked of the product's backend: the auth callout
(docs/reference/identities.md "The auth callout").

A product whose users sign in with its own session cookie (or its own bearer token) gives the
gateway ``auth_callout_url``. A stream, history or channel-list request that carries no
Logstream token is then answered by a ``GET`` to that URL with the request's forwarded headers
(``auth_callout_headers``: ``Cookie`` and ``Authorization`` by default; of the ``Cookie`` header
only the cookies ``auth_callout_cookies`` names, when it names any). The backend answers::

    200 {"user": "alice", "workspaces": ["ws1"], "roles": [], "expires_in": 300}
    401 or 403, with a message (JSON ``message``/``error``/``detail``, or text) passed on

Anything else (down, slower than ``auth_callout_timeout``, a 5xx, a redirect, a body that is
not that shape) is ``503 auth_unavailable`` with ``Retry-After``: never a grant.

The answer is kept per credential, under a SHA-256 of the forwarded values (never the values
themselves, never shared between two callers' credentials), for ``auth_callout_ttl`` or the
answer's ``expires_in`` if sooner; a refusal for a few seconds, so a wrong cookie sent in a loop
does not become a loop of callouts. Concurrent requests with one credential share one callout.
The cache is bounded (least recently used out first).

The answer's ``expires_in`` is the identity's expiry, as a token's ``exp``: a stream opened
on it ends with ``auth-expired`` then (the client reconnects, and is asked for again). Every
``auth_callout_ttl`` before that, an open stream asks again (through the cache): still granted
and still covering its channels, it goes on; refused, unavailable or narrowed, it ends with
``auth-expired``. So signing out of the product ends its streams within the TTL.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated

import httpx
import msgspec
from msgspec import Meta
from prometheus_client import CollectorRegistry, Counter, Histogram

from logstream.shared.cookies import pick_cookies
from logstream.shared.errors import AuthUnavailable, Forbidden, LogstreamError, Unauthenticated
from logstream.shared.user_tokens import MAX_SUBJECT_CHARS, UserIdentity

__all__ = ["AuthCallout", "CalloutAnswer", "CalloutMetrics", "Renewal"]

log = logging.getLogger("logstream.gateway.callout")

# A refusal is kept this long (at most the TTL): a wrong cookie retried in a loop (a page
# reloading) asks the backend once per this, and a user who signs in gets a new cookie anyway.
DENIAL_TTL_S = 5.0
# An identity lives at least this long, whatever expires_in says: a stream on it must not ask
# the backend again in a tight loop.
MIN_LIFETIME_S = 1.0
# An answer is a few hundred bytes; more is not an answer.
MAX_ANSWER_BYTES = 64 * 1024
# The backend's refusal message, passed on to the caller: one line, this long at most.
MAX_MESSAGE_CHARS = 300
MAX_WORKSPACES = 10_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f\s]+")
# Told to a client refused for want of an answer: about when the backend may be back.
RETRY_AFTER_S = 2


class CalloutAnswer(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """The backend's 200: who the caller is (extra fields are the backend's own business)."""

    user: Annotated[str, Meta(min_length=1, max_length=MAX_SUBJECT_CHARS)]
    workspaces: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=256)]], Meta(max_length=MAX_WORKSPACES)
    ]
    roles: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=256)]], Meta(max_length=256)
    ] = []
    expires_in: Annotated[float, Meta(gt=0)] | None = None


_decode_answer = msgspec.json.Decoder(CalloutAnswer).decode


class CalloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.callouts = Counter(
            "logstream_gateway_auth_callouts",
            "requests to the product's auth backend, by outcome (granted, denied, unavailable)",
            ["outcome"],
            registry=registry,
        )
        self.cached = Counter(
            "logstream_gateway_auth_callout_cache_hits",
            "stream, history and channel-list requests answered from the callout cache",
            registry=registry,
        )
        self.seconds = Histogram(
            "logstream_gateway_auth_callout_seconds",
            "how long the product's auth backend took to answer",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )


@dataclass(slots=True)
class _Entry:
    outcome: UserIdentity | LogstreamError
    until: float  # time.monotonic()


# An open stream's way to ask again: the renewed identity, or why not (an error to show).
Renewal = Callable[[], Awaitable["UserIdentity | LogstreamError"]]


class AuthCallout:
    """The callout to one backend URL, its cache and its in-flight requests."""

    def __init__(
        self,
        url: str,
        headers: Iterable[str],
        *,
        timeout_s: float,
        ttl_s: float,
        max_entries: int,
        cookies: Iterable[str] = (),
        metrics: CalloutMetrics | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.headers = tuple(name.lower() for name in headers)
        # The cookies forwarded (and keyed on); empty: the whole Cookie header.
        self.cookies = tuple(cookies)
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.metrics = metrics
        self._client = client or httpx.AsyncClient(
            # No per-phase timeouts of its own: the whole callout (connect, send, read) is
            # bounded once, by timeout_s (``_call``), so a slow backend is always told as such.
            timeout=None,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._asking: dict[str, asyncio.Future[UserIdentity | LogstreamError]] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    def __len__(self) -> int:
        return len(self._entries)

    def forwarded(self, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """The configured headers the request carries, in the configured order; of the
        ``Cookie`` header only the cookies named (``auth_callout_cookies``), if any are."""
        found = []
        for name in self.headers:
            value = headers.get(name)
            if value and name == "cookie" and self.cookies:
                value = pick_cookies(value, self.cookies)
            if value:
                found.append((name, value))
        return tuple(found)

    async def identify(
        self, forwarded: tuple[tuple[str, str], ...], *, client_host: str | None = None
    ) -> UserIdentity:
        """Who the backend says the caller is; raises what the caller is to be told."""
        outcome = await self._outcome(forwarded, client_host)
        if isinstance(outcome, LogstreamError):
            raise outcome
        return outcome

    def renewal(
        self, forwarded: tuple[tuple[str, str], ...], *, client_host: str | None = None
    ) -> Renewal:
        """For a stream opened on a callout identity: ask again (through the cache)."""

        async def renew() -> UserIdentity | LogstreamError:
            return await self._outcome(forwarded, client_host)

        return renew

    async def _outcome(
        self, forwarded: tuple[tuple[str, str], ...], client_host: str | None
    ) -> UserIdentity | LogstreamError:
        key = _key_of(forwarded)
        entry = self._entries.get(key)
        if entry is not None:
            if time.monotonic() < entry.until:
                self._entries.move_to_end(key)
                if self.metrics is not None:
                    self.metrics.cached.inc()
                return _fresh(entry.outcome)
            del self._entries[key]
        asking = self._asking.get(key)
        if asking is None:
            # One callout per credential at a time; a waiter that gives up (its client left)
            # does not cancel it for the others.
            asking = asyncio.ensure_future(self._ask(key, forwarded, client_host))
            self._asking[key] = asking
            asking.add_done_callback(lambda _: self._asking.pop(key, None))
        return _fresh(await asyncio.shield(asking))

    async def _ask(
        self, key: str, forwarded: tuple[tuple[str, str], ...], client_host: str | None
    ) -> UserIdentity | LogstreamError:
        started = time.monotonic()
        try:
            outcome = await self._call(forwarded, client_host)
        except Exception as exc:  # a bug or a surprise must refuse, never grant or hang
            log.exception("auth callout failed")
            outcome = _unavailable(f"failed ({type(exc).__name__})")
        took = time.monotonic() - started
        if self.metrics is not None:
            self.metrics.seconds.observe(took)
            self.metrics.callouts.labels(_outcome_name(outcome)).inc()
        if isinstance(outcome, AuthUnavailable):
            log.warning(
                "auth callout unavailable", extra={"reason": outcome.message, "took_s": took}
            )
            return outcome  # not kept: the next request asks again
        if isinstance(outcome, UserIdentity):
            assert outcome.recheck_at is not None
            until = time.monotonic() + (outcome.recheck_at - time.time())
        else:
            until = time.monotonic() + min(DENIAL_TTL_S, self.ttl_s)
        self._entries[key] = _Entry(outcome, until)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return outcome

    async def _call(
        self, forwarded: tuple[tuple[str, str], ...], client_host: str | None
    ) -> UserIdentity | LogstreamError:
        headers = httpx.Headers(forwarded)
        headers["Accept"] = "application/json"
        headers["User-Agent"] = "logstream-gateway"
        if client_host:
            headers["X-Forwarded-For"] = client_host
        try:
            async with asyncio.timeout(self.timeout_s):
                # A request built here never uses the client's cookie jar: one caller's cookies
                # cannot reach another caller's callout.
                request = httpx.Request("GET", self.url, headers=headers)
                response = await self._client.send(request, stream=True)
                try:
                    body = await _read_capped(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return _unavailable(f"did not answer within {self.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return _unavailable(f"could not be reached ({type(exc).__name__}: {exc})")
        except _TooLarge:
            return _unavailable(f"answered more than {MAX_ANSWER_BYTES} bytes")
        status = response.status_code
        if status == 200:
            return self._granted(body)
        if status in (401, 403):
            message = _message_of(body) or ("not signed in" if status == 401 else "not allowed")
            kind = Unauthenticated if status == 401 else Forbidden
            return kind(message, rule="callout_denied")
        return _unavailable(f"answered {status}; it must answer 200, 401 or 403")

    def _granted(self, body: bytes) -> UserIdentity | LogstreamError:
        try:
            answer = _decode_answer(body)
        except msgspec.ValidationError as exc:
            return _unavailable(f"answered 200 with a body that is no identity ({exc})")
        except msgspec.DecodeError:
            return _unavailable("answered 200 with a body that is not JSON")
        now = time.time()
        # Ends like a token's exp: a stream on it ends then, whatever a later answer says.
        expires_at = None
        if answer.expires_in is not None:
            expires_at = now + max(answer.expires_in, MIN_LIFETIME_S)
        return UserIdentity(
            answer.user,
            frozenset(answer.workspaces),
            expires_at,
            frozenset(answer.roles),
            recheck_at=min(now + self.ttl_s, expires_at or math.inf),
        )


class _TooLarge(Exception):
    pass


async def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise _TooLarge
    return bytes(body)


def _key_of(forwarded: tuple[tuple[str, str], ...]) -> str:
    digest = hashlib.sha256()
    for name, value in forwarded:
        digest.update(name.encode("latin-1", "replace") + b"\0")
        digest.update(value.encode("latin-1", "replace") + b"\0")
    return digest.hexdigest()


def _fresh(outcome: UserIdentity | LogstreamError) -> UserIdentity | LogstreamError:
    """A kept refusal is raised again for each caller: a copy, so no traceback is shared."""
    if isinstance(outcome, UserIdentity):
        return outcome
    if isinstance(outcome, AuthUnavailable):
        return AuthUnavailable(outcome.message, retry_after=outcome.retry_after)
    return type(outcome)(outcome.message, rule=outcome.rule)


def _unavailable(why: str) -> AuthUnavailable:
    return AuthUnavailable(
        f"the product's auth backend (auth callout) {why}; try again shortly",
        retry_after=RETRY_AFTER_S,
    )


def _outcome_name(outcome: UserIdentity | LogstreamError) -> str:
    if isinstance(outcome, UserIdentity):
        return "granted"
    return "unavailable" if isinstance(outcome, AuthUnavailable) else "denied"


def _message_of(body: bytes) -> str:
    """The refusal's words: a JSON body's ``message``, ``error`` or ``detail``, else its text."""
    text = ""
    try:
        parsed = msgspec.json.decode(body)
    except msgspec.DecodeError:
        text = body[: MAX_MESSAGE_CHARS * 4].decode("utf-8", "replace")
    else:
        if isinstance(parsed, dict):
            for name in ("message", "error", "detail"):
                if isinstance(parsed.get(name), str):
                    text = parsed[name]
                    break
        elif isinstance(parsed, str):
            text = parsed
    return _CONTROL.sub(" ", text).strip()[:MAX_MESSAGE_CHARS]
