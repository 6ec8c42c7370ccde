"""The hub's logic against the in-memory log: fan-out once, order, cursors, rebuilds, filters."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.gateway.hub import Hub
from services.gateway.subscription import Subscription
from services.gateway.outbox import Outbox
from services.gateway.source import MemoryLogSource
from shared.channels import DEFAULT_SERVICES, parse_pattern



def record(channel: str, message: str = "m", level: str = "info") -> bytes:
    return json.dumps({"channel": channel, "message": message, "level": level}).encode()


async def publish(source: MemoryLogSource, channel: str, **kw) -> int:
    subject = channel.replace(":", ".")
    return await source.publish(subject, record(channel, **kw))


def subscription(*channels: str, limit: int = 1 << 20, **kw) -> Subscription:
    patterns = tuple(parse_pattern(c) for c in channels)
    return Subscription("c" + str(id(patterns)), "u", patterns, Outbox(limit), **kw)


async def frames_of(sub: Subscription, count: int) -> list[int]:
    """Seqs of the next ``count`` frames queued for ``sub`` (waits on its outbox, bounded)."""
    seqs: list[int] = []
    async with asyncio.timeout(5):
        while len(seqs) < count:
            await sub.outbox.ready.wait()
            chunk, _, _ = sub.outbox.take()
            seqs += [int(line[4:]) for line in chunk.decode().splitlines()
                     if line.startswith("id: ")]
    return seqs


@pytest.fixture
async def hub():
    source = MemoryLogSource()
    hub = Hub(source, services=DEFAULT_SERVICES)
    hub.source = source
    yield hub
    await hub.close()


async def test_a_record_is_read_once_however_many_connections_want_it(hub):
    subs = [subscription("logs:etl:ws1:wf1") for _ in range(50)]
    for sub in subs:
        await hub.subscribe(sub)
    seq = await publish(hub.source, "logs:etl:ws1:wf1")
    for sub in subs:
        assert await frames_of(sub, 1) == [seq]
    assert hub.read_total == 1
    assert hub.delivered_total == 50


async def test_the_cursor_is_the_last_seq_and_only_later_records_arrive(hub):
    await publish(hub.source, "logs:etl:ws1:wf1")
    before = await publish(hub.source, "logs:etl:ws1:wf1")
    sub = subscription("logs:etl:ws1:wf1")
    cursor = await hub.subscribe(sub)
    assert cursor == before
    after = await publish(hub.source, "logs:etl:ws1:wf1")
    assert await frames_of(sub, 1) == [after]


async def test_records_arrive_in_increasing_seq_across_channels(hub):
    sub = subscription("logs:etl:ws1:a", "logs:faas:ws1:b")
    await hub.subscribe(sub)
    sent = [await publish(hub.source, c) for c in ["logs:etl:ws1:a", "logs:faas:ws1:b"] * 20]
    assert await frames_of(sub, 40) == sent


async def test_an_exact_channel_does_not_include_its_sub_resources(hub):
    sub = subscription("logs:analytics:ws1")
    await hub.subscribe(sub)
    await publish(hub.source, "logs:analytics:ws1:x")
    wanted = await publish(hub.source, "logs:analytics:ws1")
    assert await frames_of(sub, 1) == [wanted]


async def test_a_wildcard_segment_matches_every_channel_in_it(hub):
    sub = subscription("logs:etl:ws1:*")
    await hub.subscribe(sub)
    a = await publish(hub.source, "logs:etl:ws1:a")
    await publish(hub.source, "logs:etl:ws2:a")
    b = await publish(hub.source, "logs:etl:ws1:b")
    assert await frames_of(sub, 2) == [a, b]


async def test_a_rebuild_for_a_new_channel_loses_nothing_for_connections_already_here(hub):
    first = subscription("logs:etl:ws1:a")
    await hub.subscribe(first)
    sent = []

    async def keep_publishing():
        for _ in range(200):
            sent.append(await publish(hub.source, "logs:etl:ws1:a"))
            await asyncio.sleep(0)

    publisher = asyncio.create_task(keep_publishing())
    for index in range(10):
        await hub.subscribe(subscription(f"logs:faas:ws1:f{index}"))
    await publisher
    assert await frames_of(first, 200) == sent
    assert hub.source.follows_started >= 2


async def test_a_quiet_gateway_starts_a_new_follow_at_the_stream_tail(hub):
    sub = subscription("logs:etl:ws1:quiet")
    await hub.subscribe(sub)
    for _ in range(100):
        await publish(hub.source, "logs:etl:ws1:busy")
    busy = subscription("logs:etl:ws1:busy")
    cursor = await hub.subscribe(busy)
    assert cursor == 100
    await asyncio.sleep(0)  # let the new follow run: it must not replay the 100 old records
    assert hub.read_total == 0


async def test_level_and_substring_filters_apply_before_queueing(hub):
    sub = subscription("logs:etl:ws1:a", min_level=3, query="DISK")
    await hub.subscribe(sub)
    await publish(hub.source, "logs:etl:ws1:a", message="disk full", level="info")
    await publish(hub.source, "logs:etl:ws1:a", message="cpu hot", level="error")
    wanted = await publish(hub.source, "logs:etl:ws1:a", message="Disk full", level="error")
    assert await frames_of(sub, 1) == [wanted]


async def test_a_full_outbox_overflows_instead_of_growing(hub):
    sub = subscription("logs:etl:ws1:a", limit=4096)
    await hub.subscribe(sub)
    for _ in range(100):
        await publish(hub.source, "logs:etl:ws1:a", message="x" * 200)
    async with asyncio.timeout(5):
        while not sub.outbox.overflowed:
            await asyncio.sleep(0)
    assert sub.outbox.size <= 4096


async def test_an_unsubscribed_connection_gets_nothing_more(hub):
    sub = subscription("logs:etl:ws1:a")
    await hub.subscribe(sub)
    hub.unsubscribe(sub)
    await publish(hub.source, "logs:etl:ws1:a")
    await asyncio.sleep(0)
    assert sub.outbox.size == 0
    assert hub.channel_counts() == {}


async def test_a_recreated_stream_cuts_connections_to_resume_and_follows_the_new_one(hub):
    old = subscription("logs:etl:ws1:a")
    await hub.subscribe(old)
    assert not await hub.check_stream()  # the first look only learns the stream
    for _ in range(3):
        await publish(hub.source, "logs:etl:ws1:a")
    await frames_of(old, 3)
    hub.source.recreate()  # seqs start over at 1
    assert await hub.check_stream()
    assert old.outbox.overflowed
    hub.unsubscribe(old)
    new = subscription("logs:etl:ws1:a")
    await hub.subscribe(new)
    seq = await publish(hub.source, "logs:etl:ws1:a")
    assert seq == 1 and await frames_of(new, 1) == [1]


async def test_records_fanned_out_during_the_stream_check_are_not_taken_for_a_reset(hub):
    sub = subscription("logs:etl:ws1:a")
    await hub.subscribe(sub)
    assert not await hub.check_stream()
    real_identity = hub.source.identity

    async def identity_while_records_arrive():
        answer = await real_identity()  # the stream's state as of the question...
        for _ in range(3):  # ...then records arrive and are fanned out before the answer
            await publish(hub.source, "logs:etl:ws1:a")
        await frames_of(sub, 3)
        return answer

    hub.source.identity = identity_while_records_arrive
    assert not await hub.check_stream()
    assert not sub.outbox.overflowed
