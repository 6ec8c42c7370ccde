"""The proxy in production mode, in front of a production gateway: no dev identity anywhere.

A production proxy is started with a ``LOGSTREAM_JWT_SECRET`` in its environment, as a
deployment that shares one environment between services would, to show that the secret does
not bring ``/dev/token`` back. Its gateway runs in production mode with its own secret.
"""

from __future__ import annotations

import json

import httpx
import pytest

from logstream.shared.identities import DEV_JWT_SECRET, DEV_USERS
from logstream.shared.user_tokens import UserTokens
from tests.support.processes import ServiceProcess
from tests.support.sse_client import StreamRefused, open_stream

SECRET = "the-production-secret-of-the-proxy-security-tests-0123456789"
TOKENS = UserTokens(SECRET)
DEV_TOKENS = UserTokens(DEV_JWT_SECRET)
ETL = "/api/dapadmin/l5-etl/sse/logs/stream"
# Bounds a failing wait only.
DEADLINE_S = 20.0


class Production:
    def __init__(self, gateway: ServiceProcess, proxy: ServiceProcess) -> None:
        self.gateway, self.proxy = gateway, proxy


@pytest.fixture(scope="module")
def production(nats_server, log_dir, js_writer):
    gateway = ServiceProcess(
        "gateway",
        nats_url=nats_server.url_as("gateway"),
        log_dir=log_dir,
        dev=False,
        args=["--jwt-secret", SECRET],
    ).start(wait=False)
    proxy = ServiceProcess(
        "proxy",
        nats_url=nats_server.url,
        log_dir=log_dir,
        dev=False,
        args=["--gateway-url", gateway.url],
        env={"LOGSTREAM_JWT_SECRET": SECRET},
    ).start(wait=False)
    try:
        gateway.wait_healthy()
        proxy.wait_healthy()
        yield Production(gateway, proxy)
    finally:
        proxy.stop()
        gateway.stop()


def etl_query(workspace: str, workflow: str) -> dict[str, str]:
    return {"workspace_id": workspace, "workflow_id": workflow}


@pytest.mark.parametrize("query", [*({"user": user} for user in sorted(DEV_USERS)), {}])
def test_a_production_proxy_has_no_dev_token_route_even_with_a_secret(production, query):
    answer = httpx.get(f"{production.proxy.url}/dev/token", params=query)
    assert answer.status_code == 404
    assert "set-cookie" not in answer.headers
    assert "token" not in answer.text


async def test_a_production_token_in_the_header_streams_through_the_production_proxy(
    production, js_writer, unique_id
):
    token = TOKENS.issue("user123", [unique_id])
    async with open_stream(
        production.proxy.url + ETL, token=token, params=etl_query(unique_id, "wf")
    ) as stream:
        connected = await stream.next_of("connected")
        assert json.loads(connected.data)["channels"] == [f"logs:etl:{unique_id}:wf"]
        seq = await js_writer.put(f"logs:etl:{unique_id}:wf", "through the proxy")
        [record] = await stream.logs(1)
    assert record["seq"] == seq


async def test_a_production_session_cookie_streams_through_the_production_proxy(
    production, unique_id
):
    cookies = {"logstream_session": TOKENS.issue("user123", [unique_id])}
    async with open_stream(
        production.proxy.url + ETL, cookies=cookies, params=etl_query(unique_id, "wf")
    ) as stream:
        assert (await stream.next()).event == "connected"


@pytest.mark.parametrize("user", sorted(DEV_USERS))
async def test_a_dev_token_is_401_through_the_production_proxy(production, user):
    with pytest.raises(StreamRefused) as caught:
        async with open_stream(
            production.proxy.url + ETL,
            token=DEV_TOKENS.issue_dev(user),
            params=etl_query("workspace123", "wf"),
        ):
            pass
    assert caught.value.status == 401


async def test_a_query_token_is_401_through_the_production_proxy(production, unique_id):
    query = {**etl_query(unique_id, "wf"), "access_token": TOKENS.issue("user123", [unique_id])}
    with pytest.raises(StreamRefused) as caught:
        async with open_stream(production.proxy.url + ETL, params=query):
            pass
    assert caught.value.status == 401
    assert "Authorization: Bearer" in caught.value.body["message"]


async def test_a_production_token_for_another_workspace_is_403_through_the_proxy(
    production, unique_id
):
    with pytest.raises(StreamRefused) as caught:
        async with open_stream(
            production.proxy.url + ETL,
            token=TOKENS.issue("user123", [unique_id]),
            params=etl_query("workspace456", "wf"),
        ):
            pass
    assert caught.value.status == 403
    assert caught.value.body["details"] == [{"channel": "logs:etl:workspace456:wf"}]


@pytest.mark.parametrize(
    ("user", "roles"), [("admin", ["admin"]), ("user123", []), ("user456", [])]
)
def test_the_dev_proxy_gives_only_the_dev_admin_the_admin_role(stack, user, roles):
    answer = httpx.get(f"{stack.proxy.url}/dev/token", params={"user": user})
    assert answer.status_code == 200
    assert answer.json()["roles"] == roles
    identity = DEV_TOKENS.verify(answer.json()["token"])
    assert identity.is_admin is bool(roles)
    assert identity.workspaces == frozenset(DEV_USERS[user])
