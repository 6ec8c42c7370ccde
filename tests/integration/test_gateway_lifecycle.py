"""The gateway's life: draining on SIGTERM, a broker outage, production mode's rules."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.nats_link import ensure_stream
from logstream.shared.user_tokens import UserTokens
from tests.support.nats_source import connect_as
from tests.support.processes import ServiceProcess, responds_with
from tests.support.sse_client import open_stream
from tests.support.waiting import wait_until

PROD_SECRET = "a-production-secret-of-enough-length-for-hs256"


def token(secret=DEV_JWT_SECRET, name="user123", workspaces=("workspace123",), roles=()) -> str:
    return UserTokens(secret).issue(name, workspaces, roles=roles)


async def test_sigterm_ends_open_streams_with_a_retry_hint_and_exits_quickly(
    nats_server, log_dir, js_writer
):
    gateway = ServiceProcess("gateway", nats_url=nats_server.url, log_dir=log_dir).start()
    url = f"{gateway.url}/api/logs/stream?channels=logs:etl:workspace123:drain"
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", url, headers={"Authorization": f"Bearer {token()}"}) as r:
            lines = r.aiter_lines()
            async with asyncio.timeout(10):
                while not (await lines.__anext__()).startswith("event: connected"):
                    pass
            started = time.monotonic()
            gateway.process.terminate()
            rest = []
            async with asyncio.timeout(10):
                async for line in lines:
                    rest.append(line)
    assert any(line.startswith("retry: ") for line in rest)
    assert await asyncio.to_thread(gateway.process.wait, 10) is not None
    assert time.monotonic() - started < 5


async def test_a_broker_outage_makes_ready_and_new_streams_503_then_recovers(own_broker, log_dir):
    client = await connect_as(own_broker.url, "ingest")
    await ensure_stream(client.jetstream(), max_age_s=60, max_bytes=1 << 20, duplicate_window_s=60)
    await client.close()
    gateway = ServiceProcess("gateway", nats_url=own_broker.url, log_dir=log_dir).start()
    url = f"{gateway.url}/api/logs/stream?channels=logs:etl:workspace123:outage"
    headers = {"Authorization": f"Bearer {token()}"}
    try:
        own_broker.kill()
        await wait_until(
            lambda: responds_with(f"{gateway.url}/ready", 503),
            "the gateway's /ready to answer 503 with the broker down",
        )
        refused = httpx.get(url, headers=headers, timeout=10)
        assert refused.status_code == 503
        assert refused.headers["retry-after"]
        assert refused.json()["error"] == "broker_unavailable"
        own_broker.start()
        await wait_until(
            lambda: responds_with(f"{gateway.url}/ready", 200),
            "the gateway's /ready to answer 200 with the broker back",
        )
        async with open_stream(url, token=token()) as stream:
            assert (await stream.next()).event == "connected"
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def prod_gateway(nats_server, log_dir):
    service = ServiceProcess(
        "gateway",
        nats_url=nats_server.url_as("gateway"),
        log_dir=log_dir,
        dev=False,
        args=["--jwt-secret", PROD_SECRET],
    )
    yield service.start()
    service.stop()


def test_production_mode_refuses_query_tokens(prod_gateway):
    url = (
        f"{prod_gateway.url}/api/logs/stream?channels=logs:etl:workspace123"
        f"&access_token={token(PROD_SECRET)}"
    )
    response = httpx.get(url)
    assert response.status_code == 401
    assert "access_token" in response.json()["message"]


def test_production_mode_rejects_dev_tokens(prod_gateway):
    response = httpx.get(
        f"{prod_gateway.url}/api/logs/stream?channels=logs:etl:workspace123",
        headers={"Authorization": f"Bearer {token()}"},
    )
    assert response.status_code == 401


async def test_production_mode_streams_with_its_own_secret(prod_gateway):
    url = f"{prod_gateway.url}/api/logs/stream?channels=logs:etl:workspace123"
    async with open_stream(url, token=token(PROD_SECRET)) as stream:
        assert (await stream.next()).event == "connected"


@pytest.mark.parametrize("who,status", [(None, 401), ("user123", 403), ("admin", 200)])
def test_production_stats_need_an_admin_token(prod_gateway, who, status):
    headers = {}
    if who:
        workspaces = ("*",) if who == "admin" else ("workspace123",)
        roles = ("admin",) if who == "admin" else ()
        headers["Authorization"] = f"Bearer {token(PROD_SECRET, who, workspaces, roles)}"
    assert httpx.get(f"{prod_gateway.url}/admin/logs/stats", headers=headers).status_code == status


def test_production_mode_has_no_test_route(prod_gateway):
    assert httpx.post(f"{prod_gateway.url}/test/logs").status_code in (404, 405)
