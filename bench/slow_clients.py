"""Slow clients against a running service: what the edge answers, and whether others are served.

    python -m bench.slow_clients --url http://127.0.0.1:3001 --connections 4000
    python -m bench.slow_clients --url http://127.0.0.1:3001 --body     # slow bodies instead

Opens ``--connections`` connections from this one address, each sending a request line, a
``Host`` and half a header line (or, with ``--body``, whole headers of a publish and then a
body that stops after a few bytes), and never more. Meanwhile a well-behaved client asks
``/health`` every 100 ms on connections of its own. Reports how each slow connection ended
(the status the service answered, or still open after ``--wait`` seconds), when, and the good
client's answers and latency. Nothing is started: point it at ``logstream up``'s ports.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx

HALF_HEADERS = b"POST /api/logs/publish HTTP/1.1\r\nHost: x\r\nX-Half: ab"
SLOW_BODY = (
    b"POST /api/logs/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
    b"Authorization: Bearer l5-etl-token\r\nContent-Length: 100000\r\n\r\n"
    b'{"channel":"logs:etl:slow:body","message":"'
)


async def _slow(host: str, port: int, payload: bytes, wait: float, started: float):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return f"connect failed: {exc.strerror or exc}", None
    writer.write(payload)
    try:
        answer = await asyncio.wait_for(reader.read(), wait)
    except TimeoutError:
        writer.close()
        return "still open", None
    except OSError:
        return "reset", time.monotonic() - started
    finally:
        writer.close()
    status = answer[9:12].decode(errors="replace") if answer.startswith(b"HTTP/1.1 ") else "closed"
    return status, time.monotonic() - started


async def _good(url: str, stop: asyncio.Event) -> tuple[Counter, list[float]]:
    statuses: Counter = Counter()
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while not stop.is_set():
            began = time.monotonic()
            try:
                status = str((await client.get("/health")).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies.append(time.monotonic() - began)
            statuses[status] += 1
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                pass
    return statuses, latencies


def _good_process(url: str, stop, results) -> None:
    """The good client in a process of its own, so the slow ones' loop cannot delay it."""

    async def main() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, lambda: (stop.wait(), loop.call_soon_threadsafe(done.set)))
        results.put(await _good(url, done))

    asyncio.run(main())


async def run(url: str, connections: int, wait: float, body: bool) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = SLOW_BODY if body else HALF_HEADERS
    context = multiprocessing.get_context("spawn")
    stop, results = context.Event(), context.Queue()
    good = context.Process(target=_good_process, args=(url, stop, results))
    good.start()
    started = time.monotonic()
    slow = await asyncio.gather(
        *(_slow(host, port, payload, wait, started) for _ in range(connections))
    )
    stop.set()
    statuses, latencies = await asyncio.to_thread(results.get)
    good.join()
    ended: dict[str, list[float]] = {}
    for status, at in slow:
        ended.setdefault(status, []).append(at if at is not None else float("nan"))
    print(f"{connections} slow connections ({'bodies' if body else 'headers'}) to {url}:")
    for status, times in sorted(ended.items()):
        known = sorted(t for t in times if t == t)
        when = f", answered {known[0]:.1f}-{known[-1]:.1f} s after the start" if known else ""
        print(f"  {status}: {len(times)}{when}")
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    print(
        f"  good client meanwhile: {dict(statuses)}, {len(latencies)} requests, "
        f"p99 {p99:.1f} ms, max {latencies[-1] * 1000 if latencies else float('nan'):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:3001", help="the service (ingest)")
    parser.add_argument("--connections", type=int, default=4000)
    parser.add_argument("--wait", type=float, default=25.0, help="seconds to wait for answers")
    parser.add_argument("--body", action="store_true", help="slow bodies, not slow headers")
    args = parser.parse_args()
    asyncio.run(run(args.url, args.connections, args.wait, args.body))


if __name__ == "__main__":
    main()
