"""The gateway's stream endpoint against a real nats-server, read with httpx-sse (docs/reference/stream.md)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import jwt
import pytest

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support.metrics import metric_value
from tests.support.processes import ServiceProcess
from tests.support.sse_client import StreamRefused, open_stream
from tests.support.waiting import wait_until

TOKENS = UserTokens(DEV_JWT_SECRET)


@pytest.fixture(scope="module")
def gateway(nats_server, log_dir, js_writer):
    service = ServiceProcess(
        "gateway",
        nats_url=nats_server.url,
        log_dir=log_dir,
        args=["--heartbeat", "0.5", "--max-connections-per-user", "3"],
    )
    yield service.start()
    service.stop()


def user(name: str | None = None, workspaces=("workspace123",), **claims) -> str:
    """A token for ``name``, by default a user of its own: the gateway's per-user cap is 3 here,
    and no test may depend on how soon another test's streams were let go."""
    name = name or f"reader-{uuid.uuid4().hex[:12]}"
    if claims:
        return jwt.encode(
            {"sub": name, "workspaces": list(workspaces), **claims},
            DEV_JWT_SECRET,
            algorithm="HS256",
        )
    return TOKENS.issue(name, workspaces)


def stream_url(gateway, *channels: str) -> str:
    return f"{gateway.url}/api/logs/stream?channels={','.join(channels)}"


async def test_a_stream_opens_with_retry_and_connected_then_delivers_records(
    gateway, js_writer, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    async with open_stream(stream_url(gateway, channel), token=user("user123")) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["cache-control"] == "no-cache"
        assert stream.response.headers["x-accel-buffering"] == "no"
        connected = await stream.next()
        assert connected.event == "connected"
        assert connected.retry == 2000
        info = json.loads(connected.data)
        assert info["user_id"] == "user123" and info["channels"] == [channel]
        assert int(connected.id) == await js_writer.last_seq() or int(connected.id) > 0
        seqs = [await js_writer.put(channel, f"line {i}") for i in range(5)]
        records = await stream.logs(5)
    assert [r["seq"] for r in records] == seqs
    assert [r["message"] for r in records] == [f"line {i}" for i in range(5)]
    assert all(r["channel"] == channel and r["publisher"] == "test" for r in records)


async def test_the_connected_id_is_the_cursor_so_nothing_after_it_is_missed(
    gateway, js_writer, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    await js_writer.put(channel, "before")
    async with open_stream(stream_url(gateway, channel), token=user()) as stream:
        cursor = int((await stream.next_of("connected")).id)
        after = await js_writer.put(channel, "after")
        [record] = await stream.logs(1)
    assert cursor < after == record["seq"]
    assert record["message"] == "after"


async def test_several_channels_share_one_connection_in_seq_order(gateway, js_writer, unique_id):
    a, b = f"logs:etl:workspace123:{unique_id}", f"logs:faas:workspace123:{unique_id}"
    async with open_stream(stream_url(gateway, a, b), token=user()) as stream:
        await stream.next_of("connected")
        sent = [await js_writer.put(channel) for channel in [a, b, b, a, b]]
        records = await stream.logs(5)
    assert [r["seq"] for r in records] == sent
    assert [r["channel"] for r in records] == [a, b, b, a, b]


async def test_channels_may_be_repeated_instead_of_a_comma_list(gateway, js_writer, unique_id):
    a, b = f"logs:etl:workspace123:{unique_id}", "logs:analytics:workspace123"
    url = f"{gateway.url}/api/logs/stream?channels={a}&channels={b}"
    async with open_stream(url, token=user()) as stream:
        info = json.loads((await stream.next_of("connected")).data)
    assert info["channels"] == [a, b]


async def test_a_wildcard_stream_gets_every_workflow_of_the_workspace(
    gateway, js_writer, unique_id
):
    async with open_stream(stream_url(gateway, "logs:etl:workspace123:*"), token=user()) as stream:
        await stream.next_of("connected")
        seq = await js_writer.put(f"logs:etl:workspace123:{unique_id}", "via wildcard")
        records = await stream.logs(1, timeout=20)
        while records[-1]["seq"] < seq:  # other tests write to workspace123 too
            records += await stream.logs(1)
    assert records[-1]["message"] == "via wildcard"


async def test_an_exact_channel_does_not_include_its_sub_channels(gateway, js_writer, unique_id):
    parent = f"logs:platform:{unique_id}"
    token = user(workspaces=(unique_id,))
    async with open_stream(stream_url(gateway, parent), token=token) as stream:
        await stream.next_of("connected")
        await js_writer.put(f"{parent}:child", "not for the parent")
        seq = await js_writer.put(parent, "for the parent")
        [record] = await stream.logs(1)
    assert record["seq"] == seq


async def test_heartbeat_comments_keep_an_idle_stream_alive(gateway, unique_id):
    url = stream_url(gateway, f"logs:etl:workspace123:{unique_id}")
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", url, headers={"Authorization": f"Bearer {user()}"}) as r:
            lines = []
            async with asyncio.timeout(10):
                async for line in r.aiter_lines():
                    lines.append(line)
                    if line == ": hb":
                        break
    assert ": hb" in lines


async def test_the_cookie_credential_works(gateway, unique_id):
    url = stream_url(gateway, f"logs:etl:workspace123:{unique_id}")
    async with open_stream(url, cookies={"logstream_session": user()}) as stream:
        assert (await stream.next()).event == "connected"


async def test_the_query_token_works_in_dev_mode(gateway, unique_id):
    url = stream_url(gateway, f"logs:etl:workspace123:{unique_id}") + f"&access_token={user()}"
    async with open_stream(url) as stream:
        assert (await stream.next()).event == "connected"


@pytest.mark.parametrize(
    "headers,why",
    [
        ({}, "required"),
        ({"Authorization": "Bearer not-a-jwt"}, "not valid"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer"),
    ],
)
def test_a_missing_or_bad_credential_is_401(gateway, headers, why):
    response = httpx.get(stream_url(gateway, "logs:etl:workspace123"), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"
    assert why in response.json()["message"]


def test_an_expired_token_is_401(gateway):
    token = user(exp=int(time.time()) - 10)
    response = httpx.get(
        stream_url(gateway, "logs:etl:workspace123"), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert "expired" in response.json()["message"]


def test_a_token_signed_with_another_secret_is_401(gateway):
    claims = {"sub": "user123", "workspaces": ["*"], "exp": int(time.time()) + 600}
    token = jwt.encode(claims, "a-guess-long-enough-for-hs256-keys!", algorithm="HS256")
    response = httpx.get(
        stream_url(gateway, "logs:etl:workspace123"), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert "signature" in response.json()["message"].lower()


@pytest.mark.parametrize(
    "query,names",
    [
        ("", "channels is required"),
        ("?channels=logs:etl", "logs:<service>:<workspace>"),
        ("?channels=logs:nope:workspace123", "unknown service"),
        ("?channels=logs:etl:work.space", "workspace segment"),
        ("?channels=logs:etl:workspace123:a>b", "resource segment"),
        ("?channels=" + ",".join(f"logs:etl:workspace123:w{i}" for i in range(21)), "at most 20"),
        ("?channels=logs:etl:workspace123&last_event_id=abc", "last_event_id"),
        ("?channels=logs:etl:workspace123&since=yesterday", "since"),
        ("?channels=logs:etl:workspace123&tail=-1", "tail"),
        ("?channels=logs:etl:workspace123&level=loud", "level"),
    ],
)
def test_bad_parameters_are_400_naming_the_problem(gateway, query, names):
    response = httpx.get(
        f"{gateway.url}/api/logs/stream{query}", headers={"Authorization": f"Bearer {user()}"}
    )
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error", "message", "details"}
    assert names in body["message"]


@pytest.mark.parametrize(
    "channel",
    [
        "logs:etl:workspace456:wf",
        "logs:etl:*:wf",
        "logs:*:*",
        "logs:etl:workspace1234",
    ],
)
def test_a_channel_outside_the_users_workspaces_is_403(gateway, channel):
    response = httpx.get(
        stream_url(gateway, "logs:etl:workspace123", channel),
        headers={"Authorization": f"Bearer {user()}"},
    )
    assert response.status_code == 403
    assert response.json()["details"] == [{"channel": channel}]


async def test_an_admin_may_use_a_wildcard_workspace(gateway):
    async with open_stream(
        stream_url(gateway, "logs:etl:*"), token=user("admin", ("*",))
    ) as stream:
        assert (await stream.next()).event == "connected"


async def test_a_user_over_the_connection_cap_gets_429(gateway, unique_id):
    token = user(f"capped-{unique_id}", ("workspace123",))
    url = stream_url(gateway, f"logs:etl:workspace123:{unique_id}")
    async with (
        open_stream(url, token=token),
        open_stream(url, token=token),
        open_stream(url, token=token),
    ):
        with pytest.raises(StreamRefused) as refused:
            async with open_stream(url, token=token):
                pass
    assert refused.value.status == 429
    assert refused.value.response.headers["retry-after"]


async def test_a_token_that_expires_mid_stream_ends_with_auth_expired(gateway, unique_id):
    token = user(exp=int(time.time()) + 2)
    async with open_stream(
        stream_url(gateway, f"logs:etl:workspace123:{unique_id}"), token=token
    ) as stream:
        ended = await stream.next_of("auth-expired", timeout=15)
    assert "expired" in json.loads(ended.data)["reason"]


async def test_stats_count_connections_users_and_channels(gateway, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    async with open_stream(stream_url(gateway, channel), token=user()) as stream:
        await stream.next_of("connected")
        stats = httpx.get(f"{gateway.url}/admin/logs/stats").json()
        assert stats["channels"][channel] == 1
        assert stats["connections"] >= 1 and stats["users"] >= 1
        assert {"delivered_total", "uptime_s"} <= set(stats)

    async def channel_let_go() -> bool:
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{gateway.url}/admin/logs/stats")).json()
        return channel not in stats["channels"]

    await wait_until(channel_let_go, "the gateway to let the channel go after the client left")


async def test_a_record_is_read_from_nats_once_for_many_connections(gateway, js_writer, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"

    def records_read() -> float:
        return metric_value(gateway.url, "logstream_gateway_records_read_total")

    tokens = [user(f"fan-{unique_id}-{i}", ("workspace123",)) for i in range(40)]
    async with asyncio.timeout(60):
        streams = [open_stream(stream_url(gateway, channel), token=t) for t in tokens]
        opened = [await s.__aenter__() for s in streams]
        try:
            for stream in opened:
                await stream.next_of("connected")
            before = records_read()
            seq = await js_writer.put(channel, "one for all")
            for stream in opened:
                assert (await stream.logs(1))[0]["seq"] == seq
            assert records_read() - before == 1
        finally:
            for s in streams:
                await s.__aexit__(None, None, None)


def test_metrics_and_health_answer(gateway):
    assert httpx.get(f"{gateway.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{gateway.url}/ready").status_code == 200
    assert "logstream_gateway_connections" in httpx.get(f"{gateway.url}/metrics").text
    assert httpx.get(f"{gateway.url}/schema/openapi.json").status_code == 200
