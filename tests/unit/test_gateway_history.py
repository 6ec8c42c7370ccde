"""History pages and the channel list against the in-memory log: which records a page holds,
what ``next_before`` says, how far one request reads, and who sees which channel."""

from __future__ import annotations

import json

import pytest

from logstream.services.gateway import history
from logstream.services.gateway.channel_list import ChannelsRequest, list_channels
from logstream.services.gateway.history import read_history
from logstream.services.gateway.source import MemoryLogSource
from logstream.services.gateway.stream_request import HistoryRequest
from logstream.shared.channels import DEFAULT_SERVICES, parse_pattern
from logstream.shared.errors import Forbidden
from logstream.shared.user_tokens import UserIdentity
from logstream.shared.where import parse_where

RUN, OTHER = "logs:etl:ws1:run", "logs:etl:ws1:other"


async def put(source: MemoryLogSource, channel: str, n: int, level: str = "info") -> int:
    data = {
        "channel": channel,
        "level": level,
        "message": f"row {n}",
        "received_at": f"t{n}",
        "fields": {"n": n},
    }
    return await source.publish(channel.replace(":", "."), json.dumps(data).encode())


def request(*channels: str, before=None, limit=100, **filters) -> HistoryRequest:
    patterns = tuple(parse_pattern(c) for c in channels)
    return HistoryRequest(patterns, before, limit, **filters)


def seqs(page) -> list[int]:
    return [json.loads(record)["seq"] for record in page.records]


async def test_pages_walk_back_to_the_first_record_and_say_when_nothing_is_older():
    source = MemoryLogSource()
    mine = []
    for n in range(25):
        mine.append(await put(source, RUN, n))
        await put(source, OTHER, n)
    page = await read_history(source, request(RUN, limit=10))
    assert seqs(page) == mine[-10:] and page.next_before == mine[-10]
    page = await read_history(source, request(RUN, before=page.next_before, limit=10))
    assert seqs(page) == mine[5:15]
    page = await read_history(source, request(RUN, before=page.next_before, limit=10))
    assert seqs(page) == mine[:5] and page.next_before is None
    exactly = await read_history(source, request(RUN, before=mine[10], limit=10))
    assert seqs(exactly) == mine[:10] and exactly.next_before is None


async def test_records_that_aged_out_are_not_asked_for():
    source = MemoryLogSource()
    mine = [await put(source, RUN, n) for n in range(10)]
    source.first_seq = mine[4]
    page = await read_history(source, request(RUN, limit=100))
    assert seqs(page) == mine[4:] and page.next_before is None


async def test_a_rare_match_costs_more_requests_never_one_long_one(monkeypatch):
    monkeypatch.setattr(history, "SCAN_BUDGET", 300)
    monkeypatch.setattr(history, "FILTERED_RANGE", 100)
    source = MemoryLogSource()
    wanted = await put(source, RUN, 0, level="error")
    for n in range(1, 1000):
        await put(source, RUN, n)
    before, requests, found = None, 0, []
    while True:
        page = await read_history(source, request(RUN, before=before, limit=5, min_level=4))
        requests += 1
        found = seqs(page) + found
        before = page.next_before
        if before is None:
            break
    assert found == [wanted]
    assert requests == 4  # 999 records after it, 300 read per request


async def test_where_and_level_filter_the_page():
    source = MemoryLogSource()
    wanted = []
    for n in range(60):
        seq = await put(source, RUN, n, level="warn" if n % 3 == 0 else "info")
        if n % 3 == 0 and n >= 30:
            wanted.append(seq)
    page = await read_history(
        source, request(RUN, limit=100, min_level=3, where=parse_where("fields.n >= 30"))
    )
    assert seqs(page) == wanted and page.next_before is None


async def test_a_wildcard_page_holds_only_the_channels_it_names():
    source = MemoryLogSource()
    await put(source, "logs:etl:ws2:run", 0)
    mine = [await put(source, RUN, 1), await put(source, OTHER, 2)]
    page = await read_history(source, request("logs:etl:ws1:*"))
    assert seqs(page) == mine


# -- the channel list ------------------------------------------------------------------------


def user(*workspaces: str) -> UserIdentity:
    return UserIdentity("u", frozenset(workspaces))


async def names(source, who: UserIdentity, prefix: tuple[str, ...], limit: int = 100):
    listed = await list_channels(
        source, who, ChannelsRequest(prefix, limit), services=DEFAULT_SERVICES
    )
    return [(entry["channel"], entry["records"]) for entry in listed]


async def test_channels_newest_first_only_readable_ones():
    source = MemoryLogSource()
    await put(source, RUN, 0)
    await put(source, "logs:etl:ws2:secret", 1)
    await put(source, OTHER, 2)
    await put(source, RUN, 3)
    await put(source, "logs:etl:ws1", 4)
    assert await names(source, user("ws1"), ("etl", "ws1")) == [
        ("logs:etl:ws1", 1),
        (RUN, 2),
        (OTHER, 1),
    ]
    assert await names(source, user("ws1"), ("etl", "ws1"), limit=1) == [("logs:etl:ws1", 1)]
    assert await names(source, user("ws1"), ("etl",)) == [
        ("logs:etl:ws1", 1),
        (RUN, 2),
        (OTHER, 1),
    ]
    assert ("logs:etl:ws2:secret", 1) in await names(source, user("*"), ())
    with pytest.raises(Forbidden):
        await names(source, user("ws1"), ("etl", "ws2"))
