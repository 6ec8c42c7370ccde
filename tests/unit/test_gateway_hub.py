"""The hub's logic against the in-memory log: fan-out once, order, cursors, rebuilds, filters."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from logstream.services.gateway.hub import Hub
from logstream.services.gateway.live import MemoryLiveFeed
from logstream.services.gateway.outbox import Outbox
from logstream.services.gateway.source import MemoryLogSource
from logstream.services.gateway.subscription import Subscription
from logstream.shared.channels import parse_pattern


def record(channel: str, message: str = "m", level: str = "info") -> bytes:
    return json.dumps({"channel": channel, "message": message, "level": level}).encode()


async def publish(source: MemoryLogSource, channel: str, **kw) -> int:
    subject = channel.replace(":", ".")
    return await source.publish(subject, record(channel, **kw))


def subscription(*channels: str, limit: int = 1 << 20, **kw) -> Subscription:
    patterns = tuple(parse_pattern(c) for c in channels)
    return Subscription("c" + str(id(patterns)), "u", patterns, Outbox(limit), **kw)


def count_calls(obj, name: str):
    """Count calls of ``obj.name`` from now on; returns a function that reads the count."""
    real, calls = getattr(obj, name), [0]

    async def counted(*args, **kwargs):
        calls[0] += 1
        return await real(*args, **kwargs)

    setattr(obj, name, counted)
    return lambda: calls[0]


async def frames_of(sub: Subscription, count: int) -> list[int]:
    """Seqs of the next ``count`` frames queued for ``sub`` (waits on its outbox, bounded)."""
    seqs: list[int] = []
    async with asyncio.timeout(5):
        while len(seqs) < count:
            await sub.outbox.ready.wait()
            chunk = sub.outbox.take()
            seqs += [
                int(line[4:]) for line in chunk.decode().splitlines() if line.startswith("id: ")
            ]
    return seqs


@pytest.fixture
async def hub():
    source = MemoryLogSource()
    live = MemoryLiveFeed()
    source.live_feeds.append(live)
    hub = Hub(source, live)
    hub.source, hub.live = source, live
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


async def test_new_channels_while_records_flow_lose_nothing_and_rebuild_nothing(hub):
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
    assert hub.source.follows_started == 0  # live records come by interest: no consumer


async def test_a_connect_on_a_channel_already_followed_asks_the_broker_nothing(hub):
    await hub.subscribe(subscription("logs:etl:ws1:a"))
    asked = count_calls(hub.source, "last_seq")
    before = (hub.subscribes, hub.settles)
    for _ in range(5):
        await hub.subscribe(subscription("logs:etl:ws1:a"))
    assert asked() == 0
    assert (hub.subscribes, hub.settles) == before


async def test_a_new_channel_costs_one_subscription_and_one_stream_info(hub):
    for index in range(3):
        await hub.subscribe(subscription(f"logs:etl:ws1:a{index}"))
    asked = count_calls(hub.source, "last_seq")
    before = (hub.subscribes, hub.settles)
    await hub.subscribe(subscription("logs:etl:ws9:new"))
    assert asked() == 1
    assert (hub.subscribes - before[0], hub.settles - before[1]) == (1, 1)


async def test_new_channels_opened_together_share_one_stream_info(hub):
    asked = count_calls(hub.source, "last_seq")
    subs = [subscription(f"logs:etl:ws{i}:wf{i}") for i in range(50)]
    await asyncio.gather(*(hub.subscribe(sub) for sub in subs))
    assert hub.subscribes == 50
    assert asked() <= 2  # the first asks alone; everyone who came meanwhile shares the next


async def test_the_work_of_a_connect_does_not_grow_with_the_channels_already_open(hub):
    async def calls_to_open(channel: str) -> int:
        sub = subscription(channel)
        calls = 0

        def count(frame, event, arg):
            nonlocal calls
            calls += event == "call"

        sys.setprofile(count)
        try:
            await hub.subscribe(sub)
        finally:
            sys.setprofile(None)
        hub.unsubscribe(sub)
        return calls

    for index in range(10):
        await hub.subscribe(subscription(f"logs:etl:ws{index % 5}:wf{index}"))
    few_new, few_covered = (
        await calls_to_open("logs:etl:wsx:new1"),
        await calls_to_open("logs:etl:ws1:wf1"),
    )
    for index in range(10, 3000):
        await hub.subscribe(subscription(f"logs:etl:ws{index % 500}:wf{index}"))
    many_new, many_covered = (
        await calls_to_open("logs:etl:wsx:new2"),
        await calls_to_open("logs:etl:ws1:wf1"),
    )
    assert many_new == few_new
    assert many_covered == few_covered


async def test_a_pattern_nobody_watches_is_released_after_a_moment(hub, monkeypatch):
    monkeypatch.setattr("logstream.services.gateway.interest.RELEASE_AFTER_S", 0.01)
    sub = subscription("logs:etl:ws1:a")
    await hub.subscribe(sub)
    assert "logs.etl.ws1.a" in hub.live.patterns
    hub.unsubscribe(sub)
    async with asyncio.timeout(5):
        while "logs.etl.ws1.a" in hub.live.patterns:
            await asyncio.sleep(0.005)
    assert hub.interests == 0


async def test_a_pattern_watched_again_before_its_release_keeps_its_subscription(hub):
    sub = subscription("logs:etl:ws1:a")
    await hub.subscribe(sub)
    hub.unsubscribe(sub)
    again = subscription("logs:etl:ws1:a")
    await hub.subscribe(again)
    assert hub.subscribes == 1
    seq = await publish(hub.source, "logs:etl:ws1:a")
    assert await frames_of(again, 1) == [seq]


async def test_a_record_missed_on_the_way_is_read_from_the_stream_in_its_place(hub):
    sub = subscription("logs:etl:ws1:a")
    await hub.subscribe(sub)
    first = await publish(hub.source, "logs:etl:ws1:a")
    hub.live.drop_next = 2  # lost without a word, as a broken route would
    sent = [first] + [await publish(hub.source, "logs:etl:ws1:a") for _ in range(4)]
    assert await frames_of(sub, 5) == sent
    assert hub.repairs == 1
    assert not sub.outbox.overflowed


async def test_a_missed_record_older_than_what_a_connection_has_resumes_it_from_there(hub):
    both = subscription("logs:etl:ws1:a", "logs:etl:ws1:b")
    only_a = subscription("logs:etl:ws1:a")
    await hub.subscribe(both)
    await hub.subscribe(only_a)
    hub.live.drop_next = 1
    missed = await publish(hub.source, "logs:etl:ws1:a")
    later_b = await publish(hub.source, "logs:etl:ws1:b")
    await frames_of(both, 1)  # b arrives, and says nothing of a
    revealing = await publish(hub.source, "logs:etl:ws1:a")
    assert await frames_of(only_a, 2) == [missed, revealing]
    async with asyncio.timeout(5):
        while not both.outbox.overflowed:
            await asyncio.sleep(0)
    assert both.rewind == missed - 1 < later_b


async def test_after_the_link_drops_the_hub_catches_up_from_the_stream_in_order(hub):
    a, b = subscription("logs:etl:ws1:a"), subscription("logs:faas:ws2:b", "logs:etl:ws1:a")
    await hub.subscribe(a)
    await hub.subscribe(b)
    sent = [await publish(hub.source, "logs:etl:ws1:a")]
    await frames_of(a, 1)
    hub.live.drop_next = 1_000  # the link is down: nothing reaches the gateway...
    down = [await publish(hub.source, c) for c in ["logs:faas:ws2:b", "logs:etl:ws1:a"] * 5]
    hub.live.drop_next = 0
    hub.live.missed()  # ...and it says so
    up = [await publish(hub.source, c) for c in ["logs:etl:ws1:a", "logs:faas:ws2:b"] * 5]
    sent += down + up
    expected_a = [s for s in sent if hub.source.messages[s - 1].subject == "logs.etl.ws1.a"]
    assert await frames_of(a, len(expected_a) - 1) == expected_a[1:]
    assert await frames_of(b, len(sent)) == sent
    assert hub.catch_ups == 1 and hub.repairs == 0


async def test_a_full_live_buffer_is_read_from_the_stream_instead():
    source, small = MemoryLogSource(), MemoryLiveFeed(limit=10)
    source.live_feeds.append(small)
    hub = Hub(source, small)
    try:
        sub = subscription("logs:etl:ws1:a")
        await hub.subscribe(sub)
        sent = [await publish(source, "logs:etl:ws1:a") for _ in range(100)]
        assert await frames_of(sub, 100) == sent
        assert hub.catch_ups >= 1
    finally:
        await hub.close()


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
    await hub.check_stream()  # the first look only learns the stream
    assert not old.outbox.overflowed
    for _ in range(3):
        await publish(hub.source, "logs:etl:ws1:a")
    await frames_of(old, 3)
    hub.source.recreate()  # seqs start over at 1
    await hub.check_stream()
    assert old.outbox.overflowed
    hub.unsubscribe(old)
    new = subscription("logs:etl:ws1:a")
    await hub.subscribe(new)
    seq = await publish(hub.source, "logs:etl:ws1:a")
    assert seq == 1 and await frames_of(new, 1) == [1]


async def test_records_fanned_out_during_the_stream_check_are_not_taken_for_a_reset(hub):
    sub = subscription("logs:etl:ws1:a")
    await hub.subscribe(sub)
    await hub.check_stream()
    real_identity = hub.source.identity

    async def identity_while_records_arrive():
        answer = await real_identity()  # the stream's state as of the question...
        for _ in range(3):  # ...then records arrive and are fanned out before the answer
            await publish(hub.source, "logs:etl:ws1:a")
        await frames_of(sub, 3)
        return answer

    hub.source.identity = identity_while_records_arrive
    await hub.check_stream()
    assert not sub.outbox.overflowed


async def test_a_client_ahead_of_a_lagging_hub_resumes_after_its_own_cursor(hub):
    """A client reconnecting to a gateway whose hub is still catching up (its link dropped)
    must not be sent again what it already holds, nor be silenced by a cursor past the end."""
    from logstream.services.gateway.replay import start_after_client

    watcher = subscription("logs:etl:ws1:a")  # the channel is followed already
    await hub.subscribe(watcher)
    first = await publish(hub.source, "logs:etl:ws1:a")
    await frames_of(watcher, 1)
    hub.live.drop_next = 1_000  # the link is down: this hub falls behind the stream
    held = [await publish(hub.source, "logs:etl:ws1:a") for _ in range(5)]

    resumed = subscription("logs:etl:ws1:a")  # got them all from another gateway
    cursor = await hub.subscribe(resumed)
    assert cursor == first  # the hub's own position: behind the client
    assert await start_after_client(hub.source, resumed, held[-1], cursor) == held[-1]
    bogus = subscription("logs:etl:ws1:a")  # a cursor from a stream since recreated
    cursor = await hub.subscribe(bogus)
    assert await start_after_client(hub.source, bogus, 10**9, cursor) == held[-1]

    hub.live.drop_next = 0
    hub.live.missed()  # the hub catches up from the stream...
    later = await publish(hub.source, "logs:etl:ws1:a")
    assert await frames_of(resumed, 1) == [later]  # ...and the client gets only what is new
    assert await frames_of(bogus, 1) == [later]
    assert await frames_of(watcher, 6) == [*held, later]
