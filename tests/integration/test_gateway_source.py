"""The gateway's view of the stream on a real broker: what a reconnect storm asks it."""

from __future__ import annotations

import asyncio

from logstream.services.gateway.source import NatsLogSource


async def test_concurrent_bounds_share_one_stream_info_request(nc, js_writer, unique_id):
    js = nc.jetstream()
    source = NatsLogSource(nc, js)
    real, calls = js.stream_info, []

    async def counted(*args, **kwargs):
        calls.append(args)
        return await real(*args, **kwargs)

    js.stream_info = counted
    seq = await js_writer.put(f"logs:etl:{unique_id}:a")
    answers = await asyncio.gather(*(source.bounds() for _ in range(200)))
    assert len(set(answers)) == 1 and answers[0][1] >= seq
    assert len(calls) == 1, len(calls)
    # A later call asks again: nothing is cached beyond the request under way.
    later = await js_writer.put(f"logs:etl:{unique_id}:a")
    assert (await source.bounds())[1] >= later and len(calls) == 2


async def test_the_stream_allows_more_consumers_than_the_brokers_default(own_broker):
    """nats-server 2.15 limits a stream without its own ``max_consumers`` to 1,000 consumers;
    a reconnect storm on a few gateways makes more than that at once (counts and replays)."""
    from nats.js.api import ConsumerConfig, StreamConfig

    from logstream.shared.nats_link import LOGS_MAX_CONSUMERS, ensure_stream
    from tests.support.nats_source import connect_as

    client = await connect_as(own_broker.url, "ingest")
    reader = await connect_as(own_broker.url, "gateway")  # (the user that makes consumers)
    try:
        js = client.jetstream()
        # A stream as an older Logstream made it (no limit of its own), then brought in line.
        await js.add_stream(StreamConfig(name="LOGS", subjects=["logs.>"]))
        config = await ensure_stream(js, max_age_s=60, max_bytes=1 << 20, duplicate_window_s=10)
        assert config.max_consumers == LOGS_MAX_CONSUMERS
        made = await asyncio.gather(
            *(
                reader.jetstream().add_consumer(
                    "LOGS", config=ConsumerConfig(inactive_threshold=30.0, mem_storage=True)
                )
                for _ in range(1_100)
            ),
            return_exceptions=True,
        )
        refused = [answer for answer in made if isinstance(answer, Exception)]
        assert not refused, refused[:3]
    finally:
        await reader.close()
        await client.close()


async def test_a_page_of_one_channel_comes_from_a_direct_get_with_what_is_left(
    nc, js_writer, unique_id
):
    source = NatsLogSource(nc, nc.jetstream())
    channel, other = f"logs:etl:{unique_id}:a", f"logs:etl:{unique_id}:b"
    mine = []
    for index in range(7):
        mine.append(await js_writer.put(channel, f"m{index}"))
        await js_writer.put(other, "not mine")
    assert await source.read_page(channel.replace(":", "."), mine[0], 5) is None  # unknown
    await source.bounds()  # (learns that the stream has one replica)
    page, left = await source.read_page(channel.replace(":", "."), mine[1], 5)
    assert [m.seq for m in page] == mine[1:6] and left == 1
    assert page[0].subject == channel.replace(":", ".") and b'"m1"' in page[0].data
    page, left = await source.read_page(channel.replace(":", "."), mine[6] + 1, 5)
    assert (page, left) == ([], 0)
