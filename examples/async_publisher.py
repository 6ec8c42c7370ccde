"""Publish from asyncio code with ``LogPublisher``: ``publish()`` never waits on the network,
so it is safe to call from a coroutine; ``await aflush()`` waits for ingest's confirmation
without blocking the event loop.

Run the stack first (``logstream up``), then::

    python examples/async_publisher.py [COUNT] [CHANNEL] [INGEST_URL]

The token comes from ``LOGSTREAM_SERVICE_TOKEN`` (dev default: l5-etl-token).
"""

import asyncio
import os
import sys

from logstream import LogPublisher

count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
channel = sys.argv[2] if len(sys.argv) > 2 else "logs:etl:workspace123:workflow456"
ingest_url = (
    sys.argv[3]
    if len(sys.argv) > 3
    else os.environ.get("LOGSTREAM_INGEST_URL", "http://127.0.0.1:3001")
)
token = os.environ.get("LOGSTREAM_SERVICE_TOKEN", "l5-etl-token")


async def process(logs: LogPublisher, index: int) -> None:
    await asyncio.sleep(0)  # the real work of a step would be here
    logs.publish(channel, f"step {index} of {count} done", source="async-example", step=index)


async def main() -> None:
    # Leaving the block waits (on a worker thread) until ingest has stored every record,
    # and raises PublishFailed if some could not be.
    async with LogPublisher(token=token, url=ingest_url) as logs:
        for index in range(count):
            await process(logs, index)
        await logs.aflush()
        print(f"published {count} records to {channel}")


asyncio.run(main())
