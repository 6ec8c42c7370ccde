"""The channel list, history pages and ``where=`` on the real stack (docs/reference/stream.md).

Each is asked of the gateway and, with the session cookie, of the proxy in front of it: the
answers a page gets are the gateway's, with every denial intact.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support.sse_client import open_stream

TOKENS = UserTokens(DEV_JWT_SECRET)


def bearer(*workspaces: str, user: str = "reader") -> dict[str, str]:
    return {"Authorization": "Bearer " + TOKENS.issue(user, list(workspaces))}


@pytest.fixture(params=["gateway", "proxy"])
def base_url(request, stack) -> str:
    return stack.gateway.url if request.param == "gateway" else stack.proxy.url


async def get(
    url: str, path: str, headers: dict[str, str] | None = None, **params
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url + path, params=params, headers=headers or {})


# -- the channel list -----------------------------------------------------------------------


async def test_channels_lists_the_readable_channels_with_records_newest_first(
    stack, js_writer, unique_id, base_url
):
    workspace, other = f"{unique_id}a", f"{unique_id}b"
    quiet, busy, last = (f"logs:etl:{workspace}:{name}" for name in ("quiet", "busy", "last"))
    await js_writer.put(quiet, "one")
    for index in range(3):
        await js_writer.put(busy, f"busy {index}")
    await js_writer.put(f"logs:etl:{other}:secret", "not yours")
    await js_writer.put(f"logs:etl:{workspace}", "the workspace's own channel", level="warn")
    last_seq = await js_writer.put(last, "the newest", level="error")

    answer = await get(
        base_url, "/api/logs/channels", bearer(workspace), prefix=f"logs:etl:{workspace}"
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    listed = answer.json()["channels"]
    assert [c["channel"] for c in listed] == [last, f"logs:etl:{workspace}", busy, quiet]
    assert [c["records"] for c in listed] == [1, 1, 3, 1]
    assert listed[0]["last_seq"] == last_seq
    assert listed[0]["last_level"] == "error"
    assert listed[0]["last_at"] == "2026-01-01T00:00:00.000Z"
    assert listed[1]["last_level"] == "warn"

    limited = await get(
        base_url, "/api/logs/channels", bearer(workspace), prefix=f"logs:etl:{workspace}", limit="2"
    )
    assert [c["channel"] for c in limited.json()["channels"]] == [last, f"logs:etl:{workspace}"]
    one = await get(base_url, "/api/logs/channels", bearer(workspace), prefix=busy)
    assert [c["channel"] for c in one.json()["channels"]] == [busy]


async def test_channels_above_the_workspace_lists_only_the_users_workspaces(
    stack, js_writer, unique_id
):
    mine, theirs = f"{unique_id}m", f"{unique_id}t"
    await js_writer.put(f"logs:faas:{mine}:fn", "mine")
    await js_writer.put(f"logs:faas:{theirs}:fn", "theirs")
    answer = await get(stack.gateway.url, "/api/logs/channels", bearer(mine), prefix="logs:faas")
    assert answer.status_code == 200, answer.text
    channels = {c["channel"] for c in answer.json()["channels"]}
    assert f"logs:faas:{mine}:fn" in channels
    assert not any(theirs in channel for channel in channels)
    everyone = await get(stack.gateway.url, "/api/logs/channels", bearer("*"), prefix="logs:faas")
    assert f"logs:faas:{theirs}:fn" in {c["channel"] for c in everyone.json()["channels"]}


@pytest.mark.parametrize(
    ("params", "status", "problem"),
    [
        ({}, 400, "prefix is required"),
        ({"prefix": "logs:nosuch"}, 400, "unknown service"),
        ({"prefix": "logs:etl:a.b"}, 400, "segment"),
        ({"prefix": "logs:etl:*"}, 400, "segment"),
        ({"prefix": "logs:etl:ws:wf:extra"}, 400, "logs[:<service>"),
        ({"prefix": "logs:etl:workspace123", "limit": "0"}, 400, "limit"),
        ({"prefix": "logs:etl:workspace123", "limit": "1001"}, 400, "limit"),
        ({"prefix": "logs:etl:workspace123", "limit": "ten"}, 400, "limit"),
        ({"prefix": "logs:etl:someone-else"}, 403, "may not read"),
    ],
)
async def test_channels_refuses_bad_or_foreign_prefixes(base_url, params, status, problem):
    answer = await get(base_url, "/api/logs/channels", bearer("workspace123"), **params)
    assert answer.status_code == status, answer.text
    assert problem in answer.json()["message"]


async def test_channels_and_history_need_a_credential(base_url):
    for path, params in (
        ("/api/logs/channels", {"prefix": "logs:etl:workspace123"}),
        ("/api/logs/history", {"channels": "logs:etl:workspace123:wf"}),
    ):
        answer = await get(base_url, path, **params)
        assert answer.status_code == 401, answer.text
        forged = await get(
            base_url,
            path,
            {
                "Authorization": "Bearer "
                + UserTokens("another-secret-of-at-least-32-bytes!").issue("x", ["*"])
            },
            **params,
        )
        assert forged.status_code == 401


async def test_the_proxy_forwards_the_session_cookie(stack, js_writer, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    seq = await js_writer.put(channel, "through the cookie")
    cookies = {"logstream_session": stack.user_token("user123")}
    async with httpx.AsyncClient(timeout=30, cookies=cookies) as client:
        listed = await client.get(
            f"{stack.proxy.url}/api/logs/channels", params={"prefix": channel}
        )
        page = await client.get(f"{stack.proxy.url}/api/logs/history", params={"channels": channel})
    assert listed.json()["channels"][0]["last_seq"] == seq
    assert [r["seq"] for r in page.json()["records"]] == [seq]


# -- history --------------------------------------------------------------------------------


async def read_back(base_url: str, headers: dict, **params) -> list[dict]:
    """Every page from the newest back, joined in ascending order."""
    pages: list[list[dict]] = []
    before = None
    while True:
        query = dict(params, **({"before": str(before)} if before else {}))
        answer = await get(base_url, "/api/logs/history", headers, **query)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.insert(0, body["records"])
        before = body["next_before"]
        if before is None:
            return [record for page in pages for record in page]


async def test_history_pages_back_through_a_run_every_record_once_in_order(
    stack, js_writer, unique_id, base_url
):
    workspace = unique_id
    channel, neighbour = f"logs:etl:{workspace}:run", f"logs:etl:{workspace}:other"
    seqs = []
    for index in range(250):
        seqs.append(await js_writer.put(channel, f"line {index}", n=index))
        if index % 10 == 0:
            await js_writer.put(neighbour, "interleaved")
    headers = bearer(workspace)

    newest = await get(base_url, "/api/logs/history", headers, channels=channel)
    body = newest.json()
    assert [r["seq"] for r in body["records"]] == seqs[-100:]
    assert body["next_before"] == seqs[-100]
    assert body["records"][0]["channel"] == channel and body["records"][0]["fields"] == {"n": 150}

    everything = await read_back(base_url, headers, channels=channel, limit="70")
    assert [r["seq"] for r in everything] == seqs

    middle = await get(
        base_url, "/api/logs/history", headers, channels=channel, before=str(seqs[100]), limit="5"
    )
    assert [r["seq"] for r in middle.json()["records"]] == seqs[95:100]

    whole = await get(base_url, "/api/logs/history", headers, channels=channel, limit="250")
    assert [r["seq"] for r in whole.json()["records"]] == seqs
    assert whole.json()["next_before"] is None  # a full page, and nothing older

    first = await get(
        base_url, "/api/logs/history", headers, channels=channel, before=str(seqs[3]), limit="10"
    )
    assert [r["seq"] for r in first.json()["records"]] == seqs[:3]
    assert first.json()["next_before"] is None


async def test_history_filters_with_level_q_and_where(stack, js_writer, unique_id, base_url):
    channel = f"logs:etl:{unique_id}:run"
    wanted = []
    for index in range(300):
        level = "error" if index % 7 == 0 else "info"
        seq = await js_writer.put(
            channel, f"row {index}", level=level, n=index, table="orders" if index % 2 else "users"
        )
        if index % 7 == 0 and index % 2 and index >= 100:
            wanted.append(seq)
    headers = bearer(unique_id)
    found = await read_back(
        base_url,
        headers,
        channels=channel,
        level="error",
        where="fields.table = orders and fields.n >= 100",
        limit="4",
    )
    assert [r["seq"] for r in found] == wanted
    by_text = await read_back(base_url, headers, channels=channel, q="ROW 29")
    assert [r["message"] for r in by_text] == ["row 29", *(f"row {n}" for n in range(290, 300))]


@pytest.mark.parametrize(
    ("params", "status", "problem"),
    [
        ({}, 400, "channels is required"),
        ({"channels": "logs:etl:workspace123:wf", "before": "0"}, 400, "before"),
        ({"channels": "logs:etl:workspace123:wf", "before": "x"}, 400, "before"),
        ({"channels": "logs:etl:workspace123:wf", "limit": "1001"}, 400, "limit"),
        ({"channels": "logs:etl:workspace123:wf", "where": "fields.n >"}, 400, "at position 11"),
        ({"channels": "logs:etl:workspace123:wf", "level": "loud"}, 400, "level"),
        ({"channels": "logs:etl:elsewhere:wf"}, 403, "may not read"),
    ],
)
async def test_history_refuses_bad_requests(base_url, params, status, problem):
    answer = await get(base_url, "/api/logs/history", bearer("workspace123"), **params)
    assert answer.status_code == status, answer.text
    assert problem in answer.json()["message"]


# -- where= on the stream -------------------------------------------------------------------


async def test_stream_where_filters_live_and_resumed_records(stack, js_writer, unique_id):
    channel = f"logs:etl:{unique_id}:run"
    url = f"{stack.gateway.url}/api/logs/stream"
    params = {"channels": channel, "where": "fields.rows > 10 and not source ^= test"}
    token = TOKENS.issue("reader", [unique_id])
    async with open_stream(url, token=token, params=params) as stream:
        await stream.next_of("connected")
        for rows in (5, 11, 50):
            await js_writer.put(channel, f"rows {rows}", rows=rows)
        got = await stream.logs(2)
    assert [r["message"] for r in got] == ["rows 11", "rows 50"]
    cursor = got[0]["seq"]
    headers = {"Last-Event-ID": str(cursor)}
    async with open_stream(url, token=token, params=params, headers=headers) as stream:
        resumed = await stream.logs(1)
    assert [r["message"] for r in resumed] == ["rows 50"]


async def test_stream_refuses_a_malformed_where_naming_the_position(stack):
    params = {"channels": "logs:etl:workspace123:wf", "where": "level = info and (source = a"}
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(
            f"{stack.proxy.url}/api/logs/stream",
            params=params,
            headers=bearer("workspace123"),
        )
    assert answer.status_code == 400
    body = answer.json()
    assert "position" in body["message"]
    assert body["details"][0]["parameter"] == "where"


async def test_the_proxy_streams_several_channels_on_one_connection(stack, js_writer, unique_id):
    first, second = f"logs:etl:{unique_id}:a", f"logs:faas:{unique_id}:b"
    token = TOKENS.issue("reader", [unique_id])
    params = {"channels": f"{first},{second}"}
    async with open_stream(
        f"{stack.proxy.url}/api/logs/stream", token=token, params=params
    ) as stream:
        await stream.next_of("connected")
        seqs = [await js_writer.put(first, "a"), await js_writer.put(second, "b")]
        got = await asyncio.wait_for(stream.logs(2), 20)
    assert [r["seq"] for r in got] == seqs
    assert [r["channel"] for r in got] == [first, second]
