"""A reader that stops reading: bounded memory, `overflow`, then a resume that loses nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support import ledger
from tests.support.processes import ServiceProcess
from tests.support.sse_client import open_stream
from tests.support.waiting import wait_until

TOKEN = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"])
OUTBOX = 256 * 1024
BURST_BYTES = 40 * 1024 * 1024
RECORD_BYTES = 1024


@pytest.fixture(scope="module")
def gateway(nats_server, log_dir, js_writer):
    service = ServiceProcess(
        "gateway", nats_url=nats_server.url, log_dir=log_dir, args=["--outbox-bytes", str(OUTBOX)]
    )
    yield service.start()
    service.stop()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _burst_the_hub_reads_but_nobody_receives(
    gateway, js_writer, channel: str, count: int
) -> None:
    """The same burst, read by the hub for a stream whose filter matches none of it.

    This is what the hub itself holds in flight, with no reader behind. RSS only grows, so
    afterwards the process has room for that window; what a second burst adds is what the
    stalled reader costs.
    """
    url = f"{gateway.url}/api/logs/stream?channels={channel}&q=matches-nothing"
    async with open_stream(url, token=TOKEN) as stream:
        await stream.next_of("connected")
        sent = await js_writer.put_many(channel, count, size=RECORD_BYTES)
        await _wait_until_read(gateway, sent[-1])


async def test_a_stalled_reader_overflows_with_bounded_memory_and_resumes_without_loss(
    gateway, js_writer, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    url = f"{gateway.url}/api/logs/stream?channels={channel}"
    count = BURST_BYTES // RECORD_BYTES
    await _burst_the_hub_reads_but_nobody_receives(gateway, js_writer, channel, count)
    received: list[int] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as client:
        async with client.stream("GET", url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            lines = r.aiter_lines()
            async with asyncio.timeout(10):
                while not (await lines.__anext__()).startswith("data: "):
                    pass  # the connected event: from here on, this reader stops reading
            before = rss_bytes(gateway.process.pid)
            sent = await js_writer.put_many(channel, count, size=RECORD_BYTES)
            await _wait_until_read(gateway, sent[-1])
            growth = rss_bytes(gateway.process.pid) - before
            print(f"gateway RSS growth under the burst: {growth} bytes")
            overflowed = False
            async with asyncio.timeout(60):
                async for line in lines:  # read again: what was queued, then `overflow`
                    if line.startswith("id: "):
                        received.append(int(line[4:]))
                    if line == "event: overflow":
                        overflowed = True
    assert overflowed
    assert len(received) < count
    # The stalled connection held at most its outbox plus socket buffers, not the 40 MB.
    assert growth < 4 * OUTBOX + 12 * 1024 * 1024, f"gateway grew by {growth} bytes"
    async with open_stream(
        url, token=TOKEN, headers={"Last-Event-ID": str(received[-1])}
    ) as stream:
        rest = await stream.logs(count - len(received), timeout=120)
    all_seqs = received + [r["seq"] for r in rest]
    ledger.account("stalled reader under a 40 MB burst, overflow then resume", sent, all_seqs)
    assert all_seqs == sent, f"sent {len(sent)}, received {len(all_seqs)}"


async def _wait_until_read(gateway, seq: int) -> None:
    """The hub has read the burst from NATS (its stats say so)."""
    async with httpx.AsyncClient() as client:

        async def read() -> bool:
            stats = (await client.get(f"{gateway.url}/admin/logs/stats")).json()
            return bool(stats["read_total"]) and stats.get("last_seq", 0) >= seq

        await wait_until(
            read, f"the hub to read the burst up to seq {seq}", timeout=120, interval=0.1
        )
