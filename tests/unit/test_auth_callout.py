"""logstream.services.gateway.callout: the cache, the shared callouts and the answers' checks,
with the backend as an in-memory double (httpx.MockTransport). The gateway against a real
backend is tests/integration/test_gateway_callout.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from logstream.services.gateway.callout import MAX_ANSWER_BYTES, AuthCallout
from logstream.shared.errors import AuthUnavailable, Forbidden, Unauthenticated
from logstream.shared.user_tokens import UserIdentity

URL = "http://product.test/auth"


class Backend:
    """Answers by the cookie: ``answers[cookie]`` is (status, body); counts requests."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.asked: list[str] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        cookie = request.headers.get("cookie", "")
        self.asked.append(cookie)
        if self.gate is not None:
            await self.gate.wait()
        status, body = self.answers.get(cookie, (401, b'{"message": "who are you?"}'))
        # A stream, as a network answer comes (not already read)
        return httpx.Response(status, stream=httpx.ByteStream(body))

    def grant(self, cookie: str, user: str, workspaces: list[str], **extra) -> None:
        body = {"user": user, "workspaces": workspaces, **extra}
        self.answers[cookie] = (200, json.dumps(body).encode())


def callout(
    backend: Callable[[httpx.Request], Any],
    *,
    ttl_s: float = 60,
    max_entries: int = 100,
    timeout_s: float = 1,
    cookies: tuple[str, ...] = (),
) -> AuthCallout:
    """The callout to ``backend`` (a ``Backend``, or any MockTransport handler)."""
    client = httpx.AsyncClient(transport=httpx.MockTransport(backend))
    return AuthCallout(
        URL,
        ("cookie", "authorization"),
        timeout_s=timeout_s,
        ttl_s=ttl_s,
        max_entries=max_entries,
        cookies=cookies,
        client=client,
    )


def cookie(value: str) -> tuple[tuple[str, str], ...]:
    return (("cookie", value),)


async def test_an_answer_is_kept_per_credential_and_never_given_to_another():
    backend = Backend()
    backend.grant("s=alice", "alice", ["ws1"])
    backend.grant("s=bob", "bob", ["ws2"])
    auth = callout(backend)
    for _ in range(5):
        assert (await auth.identify(cookie("s=alice"))).user_id == "alice"
        assert (await auth.identify(cookie("s=bob"))).user_id == "bob"
    assert backend.asked == ["s=alice", "s=bob"]
    # The same cookie with another Authorization is another credential: asked for anew.
    await auth.identify((("cookie", "s=alice"), ("authorization", "Bearer x")))
    assert backend.asked == ["s=alice", "s=bob", "s=alice"]


async def test_concurrent_requests_for_one_credential_share_one_callout():
    backend = Backend()
    backend.grant("s=alice", "alice", ["ws1"])
    backend.gate = asyncio.Event()
    auth = callout(backend)
    waiting = [asyncio.create_task(auth.identify(cookie("s=alice"))) for _ in range(20)]
    await asyncio.sleep(0)  # let them all ask
    waiting[0].cancel()  # one caller leaves: the others' callout goes on
    backend.gate.set()
    users = await asyncio.gather(*waiting[1:])
    assert {user.user_id for user in users} == {"alice"}
    assert backend.asked == ["s=alice"]


async def test_expires_in_is_the_expiry_and_the_ttl_or_it_the_time_to_ask_again():
    backend = Backend()
    backend.grant("s=a", "a", ["ws1"], expires_in=30)
    backend.grant("s=b", "b", ["ws1"], expires_in=3600)
    backend.grant("s=c", "c", ["ws1"], expires_in=0.01)
    backend.grant("s=d", "d", ["ws1"])
    auth = callout(backend, ttl_s=120)
    now = time.time()
    a, b, c, d = [await auth.identify(cookie(f"s={name}")) for name in "abcd"]
    assert a.expires_at == pytest.approx(now + 30, abs=2)
    assert a.recheck_at == pytest.approx(now + 30, abs=2)
    assert b.expires_at == pytest.approx(now + 3600, abs=2)
    assert b.recheck_at == pytest.approx(now + 120, abs=2)
    assert c.expires_at == pytest.approx(now + 1, abs=2)  # never a renewal loop
    assert d.expires_at is None and d.recheck_at == pytest.approx(now + 120, abs=2)


async def test_refusals_carry_the_backends_words_and_are_kept_a_few_seconds():
    backend = Backend()
    backend.answers["s=x"] = (403, b'{"error": "suspended\\u0000 account\\n"}')
    backend.answers["s=y"] = (401, b"session expired")
    auth = callout(backend)
    with pytest.raises(Forbidden, match=r"^suspended account$") as refused:
        await auth.identify(cookie("s=x"))
    assert refused.value.rule == "callout_denied"
    with pytest.raises(Unauthenticated, match=r"^session expired$"):
        await auth.identify(cookie("s=y"))
    with pytest.raises(Unauthenticated, match=r"^session expired$"):
        await auth.identify(cookie("s=y"))
    assert backend.asked == ["s=x", "s=y"]


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (200, b"not json", "not JSON"),
        (200, b'{"user": "", "workspaces": []}', "no identity"),
        (200, b'{"user": "a", "workspaces": [1]}', "no identity"),
        (200, b'{"user": "a", "workspaces": [], "expires_in": 0}', "no identity"),
        (200, b'{"user": "a", "workspaces": ["x"], "roles": "admin"}', "no identity"),
        (200, b"[" + b"1," * MAX_ANSWER_BYTES + b"1]", "more than"),
        (500, b"oops", "answered 500"),
        (302, b"", "answered 302"),
        (404, b"", "answered 404"),
    ],
)
async def test_anything_but_a_clear_answer_is_unavailable_and_not_kept(status, body, words):
    backend = Backend()
    backend.answers["s=a"] = (status, body)
    auth = callout(backend)
    for _ in range(2):
        with pytest.raises(AuthUnavailable, match=words) as refused:
            await auth.identify(cookie("s=a"))
        assert refused.value.retry_after >= 1
    assert len(backend.asked) == 2 and len(auth) == 0


async def test_a_backend_that_cannot_be_reached_or_is_slow_is_unavailable():
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    auth = callout(unreachable, timeout_s=0.2)
    with pytest.raises(AuthUnavailable, match="could not be reached"):
        await auth.identify(cookie("s=a"))

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    auth = callout(slow, timeout_s=0.2)
    with pytest.raises(AuthUnavailable, match=r"within 0\.2 s"):
        await asyncio.wait_for(auth.identify(cookie("s=a")), 10)


async def test_the_cache_is_bounded_and_forgets_the_least_recently_used():
    backend = Backend()
    for index in range(5):
        backend.grant(f"s={index}", f"u{index}", ["ws1"])
    auth = callout(backend, max_entries=3)
    for index in range(4):
        await auth.identify(cookie(f"s={index}"))
    await auth.identify(cookie("s=1"))  # used again: kept
    await auth.identify(cookie("s=4"))
    assert len(auth) == 3
    asked = len(backend.asked)
    await auth.identify(cookie("s=1"))
    assert len(backend.asked) == asked
    await auth.identify(cookie("s=0"))
    assert len(backend.asked) == asked + 1


async def test_a_renewal_asks_again_once_the_identity_lapsed():
    backend = Backend()
    backend.grant("s=a", "a", ["ws1"], expires_in=0.01)  # lives MIN_LIFETIME_S, 1 s
    auth = callout(backend)
    renew = auth.renewal(cookie("s=a"))
    first = await renew()
    assert isinstance(first, UserIdentity)
    await asyncio.sleep(1.1)
    backend.answers.pop("s=a")
    again = await renew()
    assert isinstance(again, Unauthenticated) and again.message == "who are you?"


async def test_named_cookies_alone_are_forwarded_and_keyed():
    backend = Backend()
    backend.grant("s=alice", "alice", ["ws1"])
    auth = callout(backend, cookies=("s",))
    first = auth.forwarded({"cookie": "_ga=1; s=alice; theme=dark"})
    assert first == (("cookie", "s=alice"),)
    assert auth.forwarded({"cookie": "_ga=2;s=alice"}) == first
    assert auth.forwarded({"cookie": "_ga=2; theme=dark", "authorization": "Bearer x"}) == (
        ("authorization", "Bearer x"),
    )
    assert auth.forwarded({"cookie": "s=; _ga=3"}) == ()
    await auth.identify(first)
    await auth.identify(auth.forwarded({"cookie": "_ga=2;s=alice"}))
    assert backend.asked == ["s=alice"]
