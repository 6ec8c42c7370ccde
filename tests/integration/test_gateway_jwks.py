"""Signing keys that rotate: production gateways verifying user tokens with an identity
provider's JWKS (docs/reference/identities.md#keys-and-algorithms, SECURITY.md#rotating-signing-keys).

The identity provider is a real HTTP server on a thread of the test (``JwksServer``) whose
document the test changes; the gateways are real processes on the suite's NATS, records are
written to JetStream as ingest would (``js_writer``), on the test's own workspace.

- ``rotating``: refreshes its keys every second, so a withdrawn key is noticed within seconds;
- ``steady``: refreshes every hour, so any fetch it makes is one an unknown kid asked for.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support.jwks_server import JwksServer, SigningKey, claims, forge_hs256
from tests.support.processes import ServiceProcess
from tests.support.sse_client import StreamRefused, open_stream
from tests.support.waiting import wait_until

# Bounds a failing wait only; a passing test moves on as soon as its event arrives.
DEADLINE_S = 20.0
OLD, NEW = SigningKey("2026-01", "rsa"), SigningKey("2026-02", "ec")


class Idp:
    def __init__(self, server: JwksServer, gateway: ServiceProcess) -> None:
        self.server, self.gateway = server, gateway


def _gateway(nats_server, log_dir, server: JwksServer, refresh: str) -> ServiceProcess:
    return ServiceProcess(
        "gateway",
        nats_url=nats_server.url_as("gateway"),
        log_dir=log_dir,
        dev=False,
        args=["--jwt-jwks-url", server.url, "--jwt-jwks-refresh", refresh],
    )


@pytest.fixture(scope="module")
def rotating(nats_server, log_dir, js_writer):
    server = JwksServer(OLD.jwk()).start()
    gateway = _gateway(nats_server, log_dir, server, "1s").start()
    try:
        yield Idp(server, gateway)
    finally:
        gateway.stop()
        server.stop()


@pytest.fixture(scope="module")
def steady(nats_server, log_dir, js_writer):
    server = JwksServer(OLD.jwk()).start()
    gateway = _gateway(nats_server, log_dir, server, "1h").start()
    try:
        yield Idp(server, gateway)
    finally:
        gateway.stop()
        server.stop()


def stream_url(gateway: ServiceProcess, channel: str) -> str:
    return f"{gateway.url}/api/logs/stream?channels={channel}"


def history(gateway: ServiceProcess, channel: str, token: str) -> httpx.Response:
    return httpx.get(
        f"{gateway.url}/api/logs/history",
        params={"channels": channel},
        headers={"Authorization": f"Bearer {token}"},
        timeout=DEADLINE_S,
    )


def metric(text: str, sample: str) -> float:
    """The value of one sample (name and labels as written) in Prometheus text."""
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    assert found is not None, f"no {sample} in /metrics"
    return float(found.group(1))


def user_keys(gateway: ServiceProcess) -> dict:
    answer = httpx.get(f"{gateway.url}/ready", timeout=DEADLINE_S)
    assert answer.status_code == 200, answer.text  # stale keys never make a gateway unready
    return answer.json()["user_keys"]


async def test_a_rotation_keeps_streams_going_and_ends_the_old_keys_streams_without_loss(
    rotating, js_writer, unique_id
):
    gateway, channel = rotating.gateway, f"logs:etl:{unique_id}:rotation"
    user = f"rotating-{unique_id}"
    old_token = OLD.token(claims(user, [unique_id]))
    new_token = NEW.token(claims(user, [unique_id]))
    assert user_keys(gateway)["kids"] == [OLD.kid]
    async with open_stream(stream_url(gateway, channel), token=old_token) as old_stream:
        await old_stream.next_of("connected")
        before = await js_writer.put(channel, "before the new key")
        # The identity provider publishes the next key: both verify during the overlap.
        rotating.server.publish(OLD.jwk(), NEW.jwk())
        async with open_stream(stream_url(gateway, channel), token=new_token) as new_stream:
            await new_stream.next_of("connected")
            overlap = await js_writer.put(channel, "during the overlap")
            assert [r["seq"] for r in await new_stream.logs(1)] == [overlap]
        assert history(gateway, channel, old_token).status_code == 200
        assert [r["seq"] for r in await old_stream.logs(2)] == [before, overlap]
        # ... then withdraws the old one: its stream ends at its next check.
        rotating.server.publish(NEW.jwk())
        ended = await old_stream.next_of("auth-expired", timeout=DEADLINE_S)
        assert "withdrawn" in json.loads(ended.data)["reason"]
        with pytest.raises(EOFError):
            await old_stream.next_of("log", timeout=DEADLINE_S)
    assert user_keys(gateway)["kids"] == [NEW.kid]
    refused = history(gateway, channel, old_token)
    assert refused.status_code == 401 and refused.json()["error"] == "unauthenticated"
    assert f"kid {OLD.kid!r}" in refused.json()["message"]
    with pytest.raises(StreamRefused) as caught:
        async with open_stream(stream_url(gateway, channel), token=old_token):
            pass
    assert caught.value.status == 401
    # The client comes back with a token of the new key and its cursor: nothing lost.
    meanwhile = [await js_writer.put(channel, f"meanwhile {i}") for i in range(3)]
    async with open_stream(
        stream_url(gateway, channel), token=new_token, headers={"Last-Event-ID": str(overlap)}
    ) as resumed:
        assert int((await resumed.next_of("connected")).id) == overlap
        replayed = await resumed.logs(3)
        live = await js_writer.put(channel, "after the rotation")
        [after] = await resumed.logs(1)
    assert [r["seq"] for r in replayed] == meanwhile
    assert [r["message"] for r in replayed] == [f"meanwhile {i}" for i in range(3)]
    assert after["seq"] == live
    rotating.server.publish(OLD.jwk())  # as the module started, for any later test


async def test_a_new_kid_fetches_the_jwks_at_once_and_a_flood_of_forged_kids_does_not(
    steady, unique_id
):
    server, gateway = steady.server, steady.gateway
    channel = f"logs:etl:{unique_id}"
    newcomer = SigningKey(f"next-{unique_id}", "ed25519")
    server.publish(OLD.jwk(), newcomer.jwk())
    fetched = server.fetches
    # Its kid is unknown to the gateway (refreshed hourly): the request fetches, then verifies.
    answer = history(gateway, channel, newcomer.token(claims("newcomer", [unique_id])))
    assert answer.status_code == 200, answer.text
    assert server.fetches == fetched + 1
    # A flood of forged kids within the next 10 s (30 requests take well under one): refused
    # without asking the identity provider again.
    forger = SigningKey("forger")
    for index in range(30):
        token = forger.token(claims("mallory", ["*"]), kid=f"forged-{index}")
        answer = history(gateway, channel, token)
        assert answer.status_code == 401
        assert f"'forged-{index}'" in answer.json()["message"]
    assert server.fetches == fetched + 1
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=DEADLINE_S).text
    assert metric(metrics, "logstream_gateway_user_key_refetches_limited_total") == 30
    on_demand = 'logstream_gateway_user_key_refreshes_total{outcome="ok",trigger="unknown_kid"}'
    assert metric(metrics, on_demand) == 1


def test_forgeries_under_a_published_kid_are_refused(steady, unique_id):
    """The JWKS is public: its key must never work as an HMAC secret, nor a token choose `none`."""
    payload = claims("mallory", ["*"]) | {"roles": ["admin"]}
    forged = [
        forge_hs256(payload, OLD.public_pem(), OLD.kid),
        forge_hs256(payload, OLD.public_pem().strip(), OLD.kid),
        forge_hs256(payload, json.dumps(OLD.jwk()).encode(), OLD.kid),
        jwt.encode(payload, None, algorithm="none", headers={"kid": OLD.kid}),
        jwt.encode(payload, OLD.private, algorithm="RS384", headers={"kid": OLD.kid}),
        jwt.encode(payload, NEW.private, algorithm="ES256", headers={"kid": OLD.kid}),
    ]
    for token in forged:
        answer = history(steady.gateway, f"logs:etl:{unique_id}", token)
        assert answer.status_code == 401, jwt.get_unverified_header(token)
        admin = httpx.get(
            f"{steady.gateway.url}/admin/logs/stats", headers={"Authorization": f"Bearer {token}"}
        )
        assert admin.status_code == 401


async def test_with_the_jwks_endpoint_down_the_held_keys_work_and_ready_says_stale(
    nats_server, log_dir, js_writer, unique_id
):
    server = JwksServer(OLD.jwk()).start()
    gateway = _gateway(nats_server, log_dir, server, "1s").start()
    channel = f"logs:etl:{unique_id}"
    token = OLD.token(claims(f"u-{unique_id}", [unique_id]))
    try:
        assert user_keys(gateway)["state"] == "fresh"
        server.stop()
        stale = await wait_until(
            lambda: (keys := user_keys(gateway))["state"] == "stale" and keys,
            "the gateway's /ready to say its keys are stale",
            timeout=DEADLINE_S,
        )
        assert stale["kids"] == [OLD.kid] and stale["stale_since"] and stale["error"]
        async with open_stream(stream_url(gateway, channel), token=token) as stream:
            await stream.next_of("connected")
            seq = await js_writer.put(channel, "while the identity provider is away")
            assert [r["seq"] for r in await stream.logs(1)] == [seq]
        metrics = httpx.get(f"{gateway.url}/metrics", timeout=DEADLINE_S).text
        assert (
            'logstream_gateway_user_key_refreshes_total{outcome="failed",trigger="schedule"}'
            in (metrics)
        )
        assert metric(metrics, "logstream_gateway_user_keys_stale_seconds") > 0
        assert "the JWKS could not be fetched" in gateway.log()
        server.start()  # back on the same port
        await wait_until(
            lambda: user_keys(gateway)["state"] == "fresh",
            "the gateway's keys to be fresh again once the endpoint answers",
            timeout=DEADLINE_S,
        )
    finally:
        gateway.stop()
        server.stop()


# -- at start ---------------------------------------------------------------------------------


def _start_and_wait_for_exit(nats_server, log_dir, url: str) -> tuple[int | None, str]:
    service = ServiceProcess(
        "gateway",
        nats_url=nats_server.url_as("gateway"),
        log_dir=log_dir,
        dev=False,
        args=["--jwt-jwks-url", url],
    ).start(wait=False)
    assert service.process is not None
    try:
        code = service.process.wait(timeout=60)
    except Exception:
        service.kill()
        code = None
    return code, Path(service.log_path).read_text(errors="replace")


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("unreachable", "ConnectError"),
        ("not found", "answered HTTP 404"),
        ("no usable key", "no usable signing key"),
    ],
)
def test_a_jwks_endpoint_unusable_at_start_stops_the_gateway_naming_url_and_problem(
    nats_server, log_dir, case, says
):
    server = JwksServer({"kty": "oct", "kid": "s", "k": "c2VjcmV0LXNlY3JldA"}).start()
    url = server.url
    if case == "unreachable":
        server.stop()
    elif case == "not found":
        server.status = 404
    started = time.monotonic()
    try:
        code, log = _start_and_wait_for_exit(nats_server, log_dir, url)
    finally:
        server.stop()
    assert code == 2, log
    assert "logstream gateway: invalid setting jwt_jwks_url (LOGSTREAM_JWT_JWKS_URL)" in log
    assert url in log and says in log
    assert time.monotonic() - started < 30  # refused at once, not after retrying for long
