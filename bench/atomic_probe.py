"""Plain publishes against atomic batches, lazy and ``sync_interval: always``, with a raw
nats-py client (no Logstream in the way): the measurement that chose atomic batches for
durable ingest (bench/README.md, "Durable ingest").

    python -m bench.atomic_probe [--messages 60000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import StreamConfig

from logstream.shared.embedded_nats import EmbeddedNats
from tests.support.nats_source import TEST_ADMIN_USERS, TEST_NATS_ADMIN, free_port

BATCH = 1000
IN_FLIGHT = 4
PAYLOAD = b"x" * 400


async def probe(sync_always: bool, atomic: bool, messages: int) -> float:
    """Messages/s confirmed, in batches of ``BATCH`` with ``IN_FLIGHT`` batches at a time."""
    with tempfile.TemporaryDirectory() as store:
        broker = EmbeddedNats(
            port=free_port(),
            store_dir=Path(store),
            sync_always=sync_always,
            extra_users=TEST_ADMIN_USERS,
        ).start()
        try:
            nc = await nats.connect(broker.url_as(TEST_NATS_ADMIN))
            js = nc.jetstream()
            await js.add_stream(
                StreamConfig(name="PROBE", subjects=["probe.>"], allow_atomic=atomic)
            )
            slots = asyncio.Semaphore(IN_FLIGHT)

            async def batch(number: int) -> None:
                async with slots:
                    subject = f"probe.{number % 50}"
                    if not atomic:
                        acks = [
                            await js.publish_async(
                                subject, PAYLOAD, headers={"Nats-Msg-Id": f"{number}-{i}"}
                            )
                            for i in range(BATCH)
                        ]
                        await asyncio.gather(*acks)
                        return
                    batch_id = f"b{number}"
                    for i in range(1, BATCH):
                        await nc.publish(
                            subject,
                            PAYLOAD,
                            headers={
                                "Nats-Batch-Id": batch_id,
                                "Nats-Batch-Sequence": str(i),
                                "Nats-Msg-Id": f"{number}-{i}",
                            },
                        )
                    reply = await nc.request(
                        subject,
                        PAYLOAD,
                        timeout=30,
                        headers={
                            "Nats-Batch-Id": batch_id,
                            "Nats-Batch-Sequence": str(BATCH),
                            "Nats-Batch-Commit": "1",
                            "Nats-Msg-Id": f"{number}-{BATCH}",
                        },
                    )
                    answer = json.loads(reply.data)
                    if "error" in answer:
                        raise RuntimeError(answer["error"])

            began = time.perf_counter()
            await asyncio.gather(*(batch(n) for n in range(messages // BATCH)))
            rate = messages / (time.perf_counter() - began)
            await nc.close()
            return rate
        finally:
            broker.stop()


async def main(messages: int) -> None:
    print(
        f"{messages:,} messages of {len(PAYLOAD)} bytes, batches of {BATCH}, {IN_FLIGHT} in flight"
    )
    for sync_always in (False, True):
        for atomic in (False, True):
            rate = await probe(sync_always, atomic, messages)
            print(
                f"  {'sync_interval: always' if sync_always else 'lazy':<22} "
                f"{'atomic batches' if atomic else 'plain publishes':<16} {rate:>10,.0f} msgs/s",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60_000)
    asyncio.run(main(parser.parse_args().messages))
