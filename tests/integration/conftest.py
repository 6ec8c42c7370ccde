"""Fixtures for integration tests: the LOGS stream on the suite's NATS, and a JetStream writer."""

from __future__ import annotations

import json

import pytest

from logstream.shared.nats_link import ensure_stream


@pytest.fixture(scope="session")
async def js_writer(nats_server):
    """Writes records to the LOGS stream as ingest would, and as its NATS user (for tests of
    the reading side)."""
    client = await nats_server.connect("ingest", max_reconnect_attempts=60)
    js = client.jetstream()
    await ensure_stream(js, max_age_s=3600, max_bytes=1 << 30, duplicate_window_s=120)

    class Writer:
        async def put(self, channel: str, message: str = "hello", **extra) -> int:
            record = {
                "channel": channel,
                "level": extra.pop("level", "info"),
                "message": message,
                "timestamp": "2026-01-01T00:00:00.000Z",
                "received_at": "2026-01-01T00:00:00.000Z",
                "publisher": "test",
                "source": None,
                "fields": extra or None,
                "id": None,
            }
            ack = await js.publish(channel.replace(":", "."), json.dumps(record).encode())
            return ack.seq

        async def put_many(self, channel: str, count: int, size: int = 100) -> list[int]:
            """``count`` records of about ``size`` bytes, published concurrently (async acks)."""
            subject, seqs = channel.replace(":", "."), []
            for start in range(0, count, 2000):
                futures = []
                for index in range(start, min(count, start + 2000)):
                    record = {
                        "channel": channel,
                        "level": "info",
                        "message": f"{index:08d} " + "x" * size,
                        "timestamp": "2026-01-01T00:00:00.000Z",
                        "received_at": "2026-01-01T00:00:00.000Z",
                        "publisher": "test",
                        "source": None,
                        "fields": None,
                        "id": None,
                    }
                    futures.append(await js.publish_async(subject, json.dumps(record).encode()))
                seqs += [(await future).seq for future in futures]
            return seqs

        async def last_seq(self) -> int:
            return (await js.stream_info("LOGS")).state.last_seq

    yield Writer()
    await client.close()
