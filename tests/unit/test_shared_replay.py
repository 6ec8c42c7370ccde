"""Replays on the same channels share one read (logstream.services.gateway.shared_replay):
each connection still gets exactly its own range, with its own filters, in order."""

from __future__ import annotations

import asyncio
import json

import pytest

from logstream.services.gateway.outbox import Outbox
from logstream.services.gateway.replay import ReplayPlan, ReplayStalled
from logstream.services.gateway.shared_replay import ReplayReads
from logstream.services.gateway.source import MemoryLogSource
from logstream.services.gateway.subscription import Subscription
from logstream.shared.channels import parse_pattern

A, B = "logs.etl.ws.a", "logs.etl.ws.b"


def sub(channel: str = "logs:etl:ws:a", **kw) -> Subscription:
    return Subscription("c", "u", (parse_pattern(channel),), Outbox(1 << 20), **kw)


async def filled(spec: list[tuple[str, str]]) -> MemoryLogSource:
    source = MemoryLogSource()
    for subject, level in spec:
        channel = subject.replace(".", ":")
        body = {"channel": channel, "message": "m", "level": level}
        await source.publish(subject, json.dumps(body).encode())
    return source


async def seqs(frames) -> list[int]:
    out: list[int] = []
    async with asyncio.timeout(5):
        async for chunk in frames:
            out += [int(line[4:]) for line in chunk.decode().splitlines() if line[:4] == "id: "]
    return out


async def test_resumes_on_the_same_channels_share_one_read_and_each_gets_its_range():
    source = await filled([(A if i % 2 else B, "info") for i in range(1, 41)])  # A: odd seqs
    reads = ReplayReads(source, max_reads=1)
    # The one slot is taken while three resumes arrive: they gather into one group.
    blocker = reads.frames([B], ReplayPlan(1, 40), sub("logs:etl:ws:b"))
    first = reads.frames([A], ReplayPlan(5, 20), sub())
    second = reads.frames([A], ReplayPlan(11, 39), sub())
    third = reads.frames([A], ReplayPlan(1, 3), sub())
    got = await asyncio.gather(seqs(blocker), seqs(first), seqs(second), seqs(third))
    assert got[1] == [5, 7, 9, 11, 13, 15, 17, 19]
    assert got[2] == list(range(11, 40, 2))
    assert got[3] == [1, 3]
    assert got[0] == list(range(2, 41, 2))
    assert (reads.replays, reads.reads, source.pages_read) == (4, 2, 2)
    assert source.follows_started == 0  # one channel: direct gets, no consumer
    await reads.close()


async def test_each_member_keeps_its_own_level_filter():
    source = await filled([(A, "debug"), (A, "error"), (A, "info"), (A, "error")])
    reads = ReplayReads(source, max_reads=1)
    blocker = reads.frames([B], ReplayPlan(1, 4), sub("logs:etl:ws:b"))
    errors = reads.frames([A], ReplayPlan(1, 4), sub(min_level=4))
    everything = reads.frames([A], ReplayPlan(1, 4), sub())
    got = await asyncio.gather(seqs(blocker), seqs(errors), seqs(everything))
    assert got[1:] == [[2, 4], [1, 2, 3, 4]]
    await reads.close()


async def test_a_replay_that_arrives_after_its_group_started_gets_a_read_of_its_own():
    source = await filled([(A, "info")] * 10)
    reads = ReplayReads(source)
    assert await seqs(reads.frames([A], ReplayPlan(3, 10), sub())) == list(range(3, 11))
    assert await seqs(reads.frames([A], ReplayPlan(1, 10), sub())) == list(range(1, 11))
    assert reads.reads == 2
    await reads.close()


async def test_a_range_with_no_records_ends_at_once():
    source = await filled([(B, "info")] * 5)
    reads = ReplayReads(source)
    assert await seqs(reads.frames([A], ReplayPlan(1, 5), sub())) == []
    await reads.close()


async def test_a_failed_read_reaches_every_member(monkeypatch):
    source = await filled([(A, "info")] * 5)

    async def broken(*args, **kwargs):
        raise ReplayStalled("the broker went away")

    monkeypatch.setattr(source, "read_page", broken)
    reads = ReplayReads(source)
    members = [reads.frames([A], ReplayPlan(1, 5), sub()) for _ in range(3)]
    for frames in members:
        with pytest.raises(ReplayStalled):
            await seqs(frames)
    await reads.close()


async def test_a_member_whose_client_left_does_not_hold_the_others(monkeypatch):
    monkeypatch.setattr("logstream.services.gateway.shared_replay.MEMBER_BYTES", 1)
    source = await filled([(A, "info")] * 600)  # three read batches
    reads = ReplayReads(source, max_reads=1)
    blocker = reads.frames([B], ReplayPlan(1, 1), sub("logs:etl:ws:b"))
    gone = reads.frames([A], ReplayPlan(1, 600), sub())
    reader = reads.frames([A], ReplayPlan(1, 600), sub())
    await seqs(blocker)
    first = await anext(gone)  # one chunk, then the client leaves
    await gone.aclose()
    assert first and await seqs(reader) == list(range(1, 601))
    await reads.close()


async def test_a_group_on_several_channels_reads_with_one_consumer():
    source = await filled([(A, "info"), (B, "info"), (A, "info")])
    reads = ReplayReads(source)
    frames = reads.frames([A, B], ReplayPlan(1, 3), sub("logs:etl:ws:a"))
    assert await seqs(frames) == [1, 2, 3]
    assert (source.follows_started, source.pages_read) == (1, 0)
    await reads.close()


async def test_a_long_range_is_read_page_by_page_in_order():
    source = await filled([(A, "info"), (B, "info")] * 400)  # A: 400 odd seqs, 2 pages
    reads = ReplayReads(source)
    got = await seqs(reads.frames([A], ReplayPlan(3, 799), sub()))
    assert got == list(range(3, 800, 2)) and source.pages_read == 2
    await reads.close()


async def test_a_failed_read_leaves_no_cycle_for_the_collector(monkeypatch):
    """The gateway freezes what survives a full collection (gc_policy): garbage in a reference
    cycle would stay for an hour. A failed read's members must go by reference counting."""
    import gc

    from logstream.services.gateway import shared_replay

    source = await filled([(A, "info")] * 5)

    async def broken(*args, **kwargs):
        raise ReplayStalled("the broker went away")

    monkeypatch.setattr(source, "read_page", broken)
    reads = ReplayReads(source)
    gc.collect()
    gc.disable()
    try:
        members = [reads.frames([A], ReplayPlan(1, 5), sub()) for _ in range(3)]
        for frames in members:
            with pytest.raises(ReplayStalled):
                await seqs(frames)
        del frames, members
        await asyncio.sleep(0)  # (the read's task is done and dropped)
        left = [o for o in gc.get_objects() if type(o) is shared_replay._Member]
        assert not left, f"{len(left)} members kept alive by a cycle"
    finally:
        gc.enable()
    await reads.close()
