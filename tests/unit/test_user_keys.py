"""logstream.services.gateway.user_keys: user-token keys from a JWKS endpoint, kept fresh.

The refresher is driven with a fake fetch (a list of answers the test sets) and fake clocks, so
the refetch limit and the stale state are checked without waiting; the fetch itself, at start
and while running, against a real local HTTP server (``tests.support.jwks_server``).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry

from logstream.services.gateway.metrics import GatewayMetrics
from logstream.services.gateway.user_keys import (
    MAX_JWKS_BYTES,
    MIN_REFETCH_S,
    UserKeyRefresh,
    fetch_at_start,
)
from logstream.shared.errors import SettingsError
from logstream.shared.user_tokens import UnknownSigningKey, UserTokens, key_set_from_jwks
from tests.support.jwks_server import JwksServer, SigningKey, claims, free_port
from tests.support.waiting import wait_until

OLD, NEW, FORGER = SigningKey("old"), SigningKey("new", "ec"), SigningKey("forged")


def jwks(*keys: SigningKey) -> bytes:
    return json.dumps({"keys": [key.jwk() for key in keys]}).encode()


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeIdp:
    """What the fake fetch answers: the document (bytes) or an exception to raise; counts calls.
    ``gate``, when set, holds every fetch until the test opens it."""

    def __init__(self, answer: bytes | Exception) -> None:
        self.answer = answer
        self.fetches = 0
        self.gate: asyncio.Event | None = None

    async def fetch(self) -> bytes:
        self.fetches += 1
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Rig:
    def __init__(self, *keys: SigningKey) -> None:
        self.idp = FakeIdp(jwks(*keys))
        self.clock, self.wall = Clock(), Clock(1_767_225_600.0)  # 2026-01-01T00:00:00Z
        self.tokens = UserTokens(keys=key_set_from_jwks(jwks(*keys), source="start"))
        self.registry = CollectorRegistry()
        self.withdrawn = 0
        self.refresh = UserKeyRefresh(
            "https://idp.test/jwks",
            self.tokens,
            every_s=300,
            metrics=GatewayMetrics(self.registry),
            fetch=self.idp.fetch,
            clock=self.clock,
            wall=self.wall,
            on_withdrawn=self._withdrawn,
        )

    def _withdrawn(self) -> None:
        self.withdrawn += 1

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


async def test_a_refresh_brings_a_new_key_and_drops_a_withdrawn_one():
    rig = Rig(OLD)
    watch = rig.tokens.watch(rig.tokens.verify(OLD.token(claims())))
    assert watch is not None
    rig.idp.answer = jwks(OLD, NEW)
    assert await rig.refresh.refresh() is True
    assert rig.tokens.keys.kids == ["new", "old"]
    assert rig.tokens.verify(NEW.token(claims())).user_id == "user123"
    assert watch.held() and rig.withdrawn == 0
    rig.idp.answer = jwks(NEW)
    assert await rig.refresh.refresh() is True
    assert rig.tokens.keys.kids == ["new"] and not watch.held() and rig.withdrawn == 1
    with pytest.raises(UnknownSigningKey):
        rig.tokens.verify(OLD.token(claims()))
    ok = "logstream_gateway_user_key_refreshes_total"
    assert rig.metric(ok, trigger="schedule", outcome="ok") == 2


async def test_an_unchanged_jwks_leaves_the_key_set_as_it_is():
    rig = Rig(OLD, NEW)
    held = rig.tokens.keys
    assert await rig.refresh.refresh() is True
    assert rig.tokens.keys is held  # open streams have nothing to look at again


async def test_an_unknown_kid_fetches_once_then_is_limited_whatever_the_kid():
    rig = Rig(OLD)
    rig.idp.answer = jwks(OLD, NEW)
    # Published since the last refresh: the request waits for one fetch and verifies.
    assert (await rig.tokens.verify_current(NEW.token(claims()))).user_id == "user123"
    assert rig.idp.fetches == 1
    # Forged kids within the limit: refused without asking the identity provider.
    for index in range(20):
        with pytest.raises(UnknownSigningKey) as caught:
            await rig.tokens.verify_current(FORGER.token(claims(), kid=f"forged-{index}"))
        assert caught.value.rule == "jwt_unknown_key"
    assert rig.idp.fetches == 1
    assert rig.metric("logstream_gateway_user_key_refetches_limited_total") == 20
    rig.clock.now += MIN_REFETCH_S - 0.1
    with pytest.raises(UnknownSigningKey):
        await rig.tokens.verify_current(FORGER.token(claims()))
    assert rig.idp.fetches == 1
    rig.clock.now += 0.1
    with pytest.raises(UnknownSigningKey):
        await rig.tokens.verify_current(FORGER.token(claims()))
    assert rig.idp.fetches == 2
    fetched = "logstream_gateway_user_key_refreshes_total"
    assert rig.metric(fetched, trigger="unknown_kid", outcome="ok") == 2


async def test_a_scheduled_refresh_does_not_use_up_the_refetch_of_an_unknown_kid():
    """A key published just after a scheduled refresh is still fetched for at once."""
    rig = Rig(OLD)
    await rig.refresh.refresh()
    rig.idp.answer = jwks(OLD, NEW)
    assert (await rig.tokens.verify_current(NEW.token(claims()))).user_id == "user123"
    assert rig.idp.fetches == 2


async def test_requests_waiting_on_unknown_kids_share_one_fetch():
    rig = Rig(OLD)
    rig.idp.answer = jwks(OLD, NEW)
    rig.idp.gate = asyncio.Event()
    asked = 0
    refetch = rig.tokens.refetch
    assert refetch is not None

    async def counted(kid: str) -> bool:
        nonlocal asked
        asked += 1
        return await refetch(kid)

    rig.tokens.refetch = counted
    waiting = [
        asyncio.create_task(rig.tokens.verify_current(NEW.token(claims(f"u{i}"))))
        for i in range(10)
    ]
    await wait_until(lambda: asked == 10, "every request to wait on the JWKS", timeout=5)
    rig.clock.now += MIN_REFETCH_S * 10  # even past the limit, the fetch under way is joined
    rig.idp.gate.set()
    users = await asyncio.gather(*waiting)
    assert sorted(user.user_id for user in users) == sorted(f"u{i}" for i in range(10))
    assert rig.idp.fetches == 1


async def test_a_client_leaving_does_not_cancel_the_fetch_others_wait_on():
    rig = Rig(OLD)
    rig.idp.answer = jwks(OLD, NEW)
    rig.idp.gate = asyncio.Event()
    leaving = asyncio.create_task(rig.tokens.verify_current(NEW.token(claims())))
    staying = asyncio.create_task(rig.tokens.verify_current(NEW.token(claims("stays"))))
    await wait_until(lambda: rig.idp.fetches == 1, "the fetch to start", timeout=5)
    leaving.cancel()
    rig.idp.gate.set()
    assert (await staying).user_id == "stays"
    assert rig.tokens.keys.kids == ["new", "old"]


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (ConnectionRefusedError("[Errno 111] Connection refused"), "Connection refused"),
        (TimeoutError(), "no answer in time"),
        (b"<html>gateway timeout</html>", "not JSON"),
        (json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).encode(), "symmetric"),
    ],
)
async def test_a_failed_refresh_keeps_the_keys_and_says_they_are_stale(answer, says, caplog):
    rig = Rig(OLD)
    held = rig.tokens.keys
    details = rig.refresh.details()
    assert details["state"] == "fresh" and details["kids"] == ["old"] and "error" not in details
    assert details["refreshed_at"] == "2026-01-01T00:00:00.000Z"
    rig.idp.answer = answer
    rig.wall.now += 60
    with caplog.at_level("WARNING", logger="logstream.gateway.user_keys"):
        assert await rig.refresh.refresh() is False
    assert rig.tokens.keys is held
    assert rig.tokens.verify(OLD.token(claims())).user_id == "user123"
    details = rig.refresh.details()
    assert details["state"] == "stale" and details["stale_since"] == "2026-01-01T00:01:00.000Z"
    assert says in details["error"] and details["refreshed_at"] == "2026-01-01T00:00:00.000Z"
    assert [record.error for record in caplog.records] == [details["error"]]
    rig.wall.now += 30
    await rig.refresh.refresh()  # a second failure: stale since the first
    assert rig.refresh.details()["stale_since"] == "2026-01-01T00:01:00.000Z"
    assert rig.metric("logstream_gateway_user_keys_stale_seconds") == 30
    assert (
        rig.metric(
            "logstream_gateway_user_key_refreshes_total", trigger="schedule", outcome="failed"
        )
        == 2
    )
    rig.idp.answer = jwks(OLD)
    assert await rig.refresh.refresh() is True
    assert rig.refresh.details()["state"] == "fresh" and "stale_since" not in rig.refresh.details()
    assert rig.metric("logstream_gateway_user_keys_stale_seconds") == 0


async def test_the_schedule_runs_until_cancelled_and_survives_failures():
    rig = Rig(OLD)
    rig.refresh._every_s = 0.01
    rig.idp.answer = RuntimeError("boom")
    runner = asyncio.create_task(rig.refresh.run())
    try:
        await wait_until(lambda: rig.idp.fetches >= 3, "three failed refreshes", timeout=5)
        assert rig.refresh.stale
        rig.idp.answer = jwks(OLD, NEW)
        await wait_until(
            lambda: rig.tokens.keys.kids == ["new", "old"], "a refresh to succeed", timeout=5
        )
    finally:
        runner.cancel()
    assert not rig.refresh.stale


# The fetch over HTTP, against a real local server


@pytest.fixture
def idp():
    server = JwksServer(OLD.jwk()).start()
    yield server
    server.stop()


def test_the_start_fetch_reads_the_keys(idp):
    assert fetch_at_start(idp.url).kids == ["old"]


def test_an_unreachable_endpoint_at_start_is_a_settings_error_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/jwks"
    with pytest.raises(SettingsError) as caught:
        fetch_at_start(url, timeout_s=5)
    message = caught.value.message
    assert message.startswith("invalid setting jwt_jwks_url (LOGSTREAM_JWT_JWKS_URL)")
    assert url in message and "ConnectError" in message


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (404, b'{"error": "not found"}', "answered HTTP 404"),
        (302, b"", "answered HTTP 302 (a redirect: give its target as the URL)"),
        (200, b"[]", "not a JWKS"),
        (200, json.dumps({"keys": [{"kty": "RSA", "alg": "RS384"}]}).encode(), "RS384"),
        (200, b" " * (MAX_JWKS_BYTES + 1), "more than"),
    ],
)
def test_an_endpoint_answering_no_jwks_at_start_is_a_settings_error_saying_what(
    idp, status, body, says
):
    idp.status, idp.body = status, body
    with pytest.raises(SettingsError) as caught:
        fetch_at_start(idp.url)
    assert idp.url in caught.value.message and says in caught.value.message


async def test_the_running_fetch_does_not_block_the_event_loop(idp):
    tokens = UserTokens(keys=fetch_at_start(idp.url))
    refresh = UserKeyRefresh(
        idp.url, tokens, every_s=300, metrics=GatewayMetrics(CollectorRegistry())
    )
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    idp.delay_s = 0.5
    try:
        assert await refresh.refresh() is True
    finally:
        ticker.cancel()
        await refresh.aclose()
    # A blocking fetch would have let the ticker run at most once in those 0.5 s (~45 here).
    assert ticks >= 5


async def test_the_running_fetch_reads_the_endpoint_and_keeps_the_keys_when_it_fails(idp):
    tokens = UserTokens(keys=fetch_at_start(idp.url))
    refresh = UserKeyRefresh(
        idp.url, tokens, every_s=300, metrics=GatewayMetrics(CollectorRegistry())
    )
    try:
        idp.publish(OLD.jwk(), NEW.jwk())
        assert await refresh.refresh() is True
        assert tokens.keys.kids == ["new", "old"]
        idp.status = 503
        assert await refresh.refresh() is False
        assert refresh.details()["error"] == "it answered HTTP 503"
        idp.status = 200
        idp.stop()
        assert await refresh.refresh() is False
        assert "ConnectError" in refresh.details()["error"]
        assert tokens.keys.kids == ["new", "old"]
    finally:
        await refresh.aclose()


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://keycloak.auth.svc:8080/realms/x/protocol/openid-connect/certs", True),
        ("http://10.0.0.7/jwks", True),
        ("https://idp.example/jwks", False),
        ("http://127.0.0.1:8080/jwks", False),
        ("http://localhost/jwks", False),
        ("http://[::1]/jwks", False),
    ],
)
def test_a_jwks_over_plain_http_to_another_host_is_warned_of(url, warned, caplog):
    with caplog.at_level("WARNING", logger="logstream.gateway.user_keys"):
        UserKeyRefresh(
            url,
            UserTokens(keys=key_set_from_jwks(jwks(OLD), source="start")),
            every_s=300,
            metrics=GatewayMetrics(CollectorRegistry()),
        )
    assert any("plain HTTP" in record.message for record in caplog.records) is warned
