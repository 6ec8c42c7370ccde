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
