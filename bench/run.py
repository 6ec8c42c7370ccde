"""Logstream benchmarks, side by side in one run on one machine.

    python bench/run.py [--records 500] [--replay 100000] [--fanout 200] [--ingest 20000]

Starts its own stack (embedded nats-server on a free port, ingest, gateway and proxy as
separate dev-mode processes), then measures:

1. publish -> browser latency: one record at a time through HTTP ingest, received by an SSE
   reader on the gateway directly and one on the proxy route, in the same run (the proxy's
   cost is the ratio of the two);
2. replay: a reader resuming with Last-Event-ID over N stored records (records/s);
3. ingest throughput over HTTP against the default broker and against one that fsyncs every
   write (``logstream up --sync-always``), side by side: what durability costs;
4. fan-out: one record to many connections on one channel (time until the last has it), and
   the gateway's own count of records read from NATS (one per record, whatever the fan-out).

Prints a Markdown report and appends it to bench/RESULTS.md. Absolute times drift on shared
2-core machines; compare the figures of one run with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.embedded_nats import EmbeddedNats  # noqa: E402
from shared.identities import DEV_JWT_SECRET, DEV_NATS_SERVICE  # noqa: E402
from shared.user_tokens import UserTokens  # noqa: E402

TOKEN = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    def __init__(self, name: str, nats_url: str, logs: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "logstream", name, "--dev", "--port", str(self.port),
             "--nats-url", nats_url, *extra],
            stdout=subprocess.DEVNULL, stderr=open(logs / f"{name}.log", "wb"), cwd=ROOT)

    def wait(self) -> "Service":
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"service on {self.port} not ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"p50 {pick(0.50):.2f} ms, p95 {pick(0.95):.2f} ms, p99 {pick(0.99):.2f} ms"


async def read_stream(url: str, arrivals: dict[str, float], ready: asyncio.Event,
                      stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as client:
        async with client.stream("GET", url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            async for line in r.aiter_lines():
                if line.startswith("event: connected"):
                    ready.set()
                elif line.startswith("data: {\"seq\""):
                    arrivals[json.loads(line[6:])["message"]] = time.perf_counter()
                if stop.is_set():
                    return


async def latency(ingest, gateway, proxy, records: int) -> str:
    channel = "logs:etl:workspace123:bench-latency"
    direct: dict[str, float] = {}
    proxied: dict[str, float] = {}
    stop = asyncio.Event()
    ready = [asyncio.Event(), asyncio.Event()]
    readers = [
        asyncio.create_task(read_stream(
            f"{gateway.url}/api/logs/stream?channels={channel}", direct, ready[0], stop)),
        asyncio.create_task(read_stream(
            f"{proxy.url}/api/dapadmin/l5-etl/sse/logs/stream?workspace_id=workspace123"
            f"&workflow_id=bench-latency", proxied, ready[1], stop)),
    ]
    await asyncio.gather(*(event.wait() for event in ready))
    sent: dict[str, float] = {}
    acked: list[float] = []
    async with httpx.AsyncClient() as client:
        for index in range(records):
            message = f"latency {index}"
            sent[message] = time.perf_counter()
            response = await client.post(
                f"{ingest.url}/api/logs/publish",
                json={"channel": channel, "message": message, "id": f"lat-{os.getpid()}-{index}"},
                headers={"Authorization": "Bearer l5-etl-token"})
            assert response.status_code == 202, response.text
            acked.append(time.perf_counter() - sent[message])
            await asyncio.sleep(0.005)
    deadline = time.monotonic() + 10
    while (len(direct) < records or len(proxied) < records) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    for reader in readers:
        reader.cancel()
    to_gateway = [direct[m] - t for m, t in sent.items() if m in direct]
    to_proxy = [proxied[m] - t for m, t in sent.items() if m in proxied]
    ratio = statistics.median(to_proxy) / statistics.median(to_gateway)
    return "\n".join([
        f"### Publish to reader latency ({records} records, one at a time over HTTP)",
        f"- ingest 202 (stored in JetStream): {percentiles(acked)}",
        f"- reader on the gateway:            {percentiles(to_gateway)} "
        f"({len(to_gateway)}/{records} received)",
        f"- reader on the proxy route:        {percentiles(to_proxy)} "
        f"({len(to_proxy)}/{records} received)",
        f"- proxy / gateway median ratio: {ratio:.2f}",
    ])


async def fill(js, channel: str, count: int) -> tuple[int, int]:
    subject = channel.replace(":", ".")
    first = last = 0
    for start in range(0, count, 5000):
        futures = []
        for index in range(start, min(count, start + 5000)):
            body = json.dumps({"channel": channel, "level": "info", "message": f"r{index}",
                               "timestamp": "2026-01-01T00:00:00Z",
                               "received_at": "2026-01-01T00:00:00Z", "publisher": "bench",
                               "source": None, "fields": None, "id": None}).encode()
            futures.append(await js.publish_async(subject, body))
        acks = [await f for f in futures]
        first = first or acks[0].seq
        last = acks[-1].seq
    return first, last


async def replay(js, gateway, count: int) -> str:
    channel = "logs:etl:workspace123:bench-replay"
    first, last = await fill(js, channel, count)
    url = f"{gateway.url}/api/logs/stream?channels={channel}"
    got = 0
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None)) as client:
        headers = {"Authorization": f"Bearer {TOKEN}", "Last-Event-ID": str(first - 1)}
        async with client.stream("GET", url, headers=headers) as response:
            async for line in response.aiter_lines():
                if line.startswith("id: ") and int(line[4:]) >= first:
                    got += 1
                    if int(line[4:]) == last:
                        break
    elapsed = time.perf_counter() - started
    return "\n".join([
        f"### Replay ({count} stored records, resumed with Last-Event-ID)",
        f"- {got} records in {elapsed:.2f} s: {got / elapsed:,.0f} records/s",
    ])


async def fanout(js, gateway, connections: int) -> str:
    channel = "logs:etl:workspace123:bench-fanout"
    url = f"{gateway.url}/api/logs/stream?channels={channel}"
    arrivals: list[float] = []
    opened = 0
    all_open = asyncio.Event()

    async def reader(client: httpx.AsyncClient) -> None:
        nonlocal opened
        async with client.stream("GET", url,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            async for line in response.aiter_lines():
                if line.startswith("event: connected"):
                    opened += 1
                    if opened == connections:
                        all_open.set()
                elif line.startswith("event: log"):
                    arrivals.append(time.perf_counter())
                    return

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None), limits=limits) as client:
        # Each user may hold a bounded number of streams: spread them over many users.
        tasks = [asyncio.create_task(reader(client)) for _ in range(connections)]
        await asyncio.wait_for(all_open.wait(), 60)
        before = _metric(gateway, "logstream_gateway_records_read_total")
        started = time.perf_counter()
        await js.publish(channel.replace(":", "."), json.dumps({
            "channel": channel, "message": "fan", "level": "info"}).encode())
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    read = _metric(gateway, "logstream_gateway_records_read_total") - before
    return "\n".join([
        f"### Fan-out (one record, {connections} connections on one channel)",
        f"- last connection had it after {(max(arrivals) - started) * 1000:.1f} ms "
        f"(first {(min(arrivals) - started) * 1000:.1f} ms)",
        f"- records the gateway read from NATS for it: {read:.0f}",
    ])


async def ingest_rate(ingest, count: int, batch: int = 1000, in_flight: int = 4) -> float:
    """Records/s that HTTP ingest stores (202 = JetStream acknowledged every record)."""
    bodies = [[{"channel": "logs:etl:workspace123:bench-ingest", "message": f"r{i}",
                "id": f"ing-{os.getpid()}-{time.monotonic_ns()}-{i}"}
               for i in range(start, min(count, start + batch))]
              for start in range(0, count, batch)]
    queue = list(bodies)

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            body = queue.pop()
            response = await client.post(f"{ingest.url}/api/logs/publish", json=body,
                                         headers={"Authorization": "Bearer l5-etl-token"})
            assert response.status_code == 202, response.text

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(in_flight)))
    return count / (time.perf_counter() - started)


async def durability_cost(workdir: Path, default_ingest, count: int) -> str:
    """The same HTTP load against the default broker and one that fsyncs every write."""
    synced = EmbeddedNats(port=free_port(), store_dir=workdir / "nats-sync",
                          sync_always=True).start()
    ingest = Service("ingest", synced.url, workdir).wait()
    try:
        fast = await ingest_rate(default_ingest, count)
        safe = await ingest_rate(ingest, count)
    finally:
        ingest.stop()
        synced.stop()
    return "\n".join([
        f"### Ingest throughput and the cost of fsync ({count} records, HTTP batches of 1000, "
        "4 in flight)",
        f"- default broker (fsync every 2 min): {fast:,.0f} records/s",
        f"- `--sync-always` broker (fsync every write): {safe:,.0f} records/s",
        f"- sync-always / default: {safe / fast:.2f}",
    ])


def _metric(service, name: str) -> float:
    text = httpx.get(f"{service.url}/metrics").text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name))


async def main(args) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="logstream-bench-"))
    broker = EmbeddedNats(port=free_port(), store_dir=workdir / "nats").start()
    services = []
    try:
        ingest = Service("ingest", broker.url, workdir).wait()
        gateway = Service("gateway", broker.url, workdir,
                          "--max-connections-per-user", str(args.fanout + 10)).wait()
        proxy = Service("proxy", broker.url, workdir, "--gateway-url", gateway.url).wait()
        services = [proxy, gateway, ingest]
        client = await nats.connect(broker.url.replace("nats://", "nats://%s:%s@" %
                                                       DEV_NATS_SERVICE))
        js = client.jetstream()
        sections = [await latency(ingest, gateway, proxy, args.records),
                    await durability_cost(workdir, ingest, args.ingest),
                    await replay(js, gateway, args.replay),
                    await fanout(js, gateway, args.fanout)]
        await client.close()
    finally:
        for service in services:
            service.stop()
        broker.stop()
    header = (f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
              f"({os.cpu_count()} cores, Python {sys.version.split()[0]})")
    return "\n\n".join([header, *sections]) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--replay", type=int, default=100_000)
    parser.add_argument("--fanout", type=int, default=200)
    parser.add_argument("--ingest", type=int, default=20_000)
    report = asyncio.run(main(parser.parse_args()))
    print(report)
    with open(Path(__file__).parent / "RESULTS.md", "a") as results:
        results.write("\n" + report)
