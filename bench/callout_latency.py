"""What the auth callout adds to opening a stream: ``python -m bench.callout_latency``.

One gateway (dev mode, so its dev secret verifies the baseline's tokens) and ingest (which
makes the LOGS stream) on an embedded nats-server, with ``--auth-callout-url`` pointing at a product backend in its own process
(a Litestar app under uvicorn that knows every ``session=<user>`` cookie, as a backend reading
its session store would). Streams are opened one at a time, each on a new connection, in
rounds that take the three ways in turn:

- ``token``: a Logstream JWT (the baseline; no callout);
- ``callout, cached``: one cookie for every open (the gateway asks the backend once per TTL);
- ``callout, not cached``: a new cookie for every open (one callout each).

Each figure is the time from sending the request to reading the stream's ``connected`` event.
Side by side in one run, so the machine's load spoils all three alike; the results file is
``bench/CALLOUT.md`` (``--out`` for another).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from logstream.shared.embedded_nats import EmbeddedNats
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support.nats_source import free_port
from tests.support.processes import ServiceProcess
from tests.support.waiting import wait_until_blocking

MODES = ("token", "callout, cached", "callout, not cached")
DEFAULT_OPENS = 400
_BACKEND = """
import sys
from litestar import Litestar, Request, Response, get
import uvicorn

@get("/auth")
async def auth(request: Request) -> Response:
    user = request.cookies.get("session")
    if not user:
        return Response({"message": "not signed in"}, status_code=401)
    return Response({"user": user, "workspaces": ["bench"], "roles": [], "expires_in": 3600})

uvicorn.run(Litestar([auth]), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _open_once(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{response.status_code}: {response.text}")
        async for line in response.aiter_lines():
            if line == "event: connected":
                return time.perf_counter() - started
    raise RuntimeError("the stream ended before connected")


async def _measure(gateway_url: str, opens: int) -> dict[str, list[float]]:
    url = f"{gateway_url}/api/logs/stream?channels=logs:etl:bench:callout"
    token = UserTokens(DEV_JWT_SECRET).issue("bench-user", ["bench"], ttl_s=3600)
    cached_cookie = f"session=cached-{uuid.uuid4().hex[:8]}"
    headers_of = {
        "token": lambda: {"Authorization": f"Bearer {token}"},
        "callout, cached": lambda: {"Cookie": cached_cookie},
        "callout, not cached": lambda: {"Cookie": f"session=u-{uuid.uuid4().hex}"},
    }
    found: dict[str, list[float]] = {mode: [] for mode in MODES}
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection for every open
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        for mode in MODES:  # warm-up: imports, the first connection, the cached cookie
            for _ in range(20):
                await _open_once(client, url, headers_of[mode]())
        for _ in range(opens):
            for mode in MODES:
                found[mode].append(await _open_once(client, url, headers_of[mode]()))
    return found


def _report(found: dict[str, list[float]], opens: int, load: str) -> str:
    base = statistics.median(found["token"])
    base99 = _percentile(found["token"], 0.99)
    rows = []
    for mode in MODES:
        values = found[mode]
        p50, p99 = statistics.median(values), _percentile(values, 0.99)
        rows.append(
            f"| {mode} | {p50 * 1000:.2f} | {p99 * 1000:.2f} | "
            f"{(p50 - base) * 1000:+.2f} | {(p99 - base99) * 1000:+.2f} |"
        )
    return "\n".join(
        [
            "# Auth callout: time to open a stream",
            "",
            f"`python -m bench.callout_latency` ({time.strftime('%Y-%m-%d %H:%M')} UTC, "
            f"{opens} opens per way, interleaved; load average at the start {load}).",
            "",
            "From sending the request to reading `event: connected`, each open on a new",
            "connection, one at a time. The backend is a Litestar app under uvicorn in its own",
            "process on the same machine, answering from memory.",
            "",
            "| credential | p50 ms | p99 ms | p50 over token | p99 over token |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--opens", type=int, default=DEFAULT_OPENS)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("CALLOUT.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-callout-") as workdir:
        broker = EmbeddedNats(port=free_port(), store_dir=Path(workdir) / "nats")
        backend_port = free_port()
        backend = subprocess.Popen([sys.executable, "-c", _BACKEND, str(backend_port)])
        broker.start()
        # Ingest makes the LOGS stream the gateway reads.
        ingest = ServiceProcess("ingest", nats_url=broker.url, log_dir=Path(workdir))
        gateway = ServiceProcess(
            "gateway",
            nats_url=broker.url,
            log_dir=Path(workdir),
            args=[
                "--log-level",
                "warning",
                "--max-connections-per-user",
                "1000000",
                "--auth-callout-url",
                f"http://127.0.0.1:{backend_port}/auth",
            ],
        )
        try:
            wait_until_blocking(
                lambda: httpx.get(f"http://127.0.0.1:{backend_port}/auth").status_code == 401,
                "the backend to answer",
                timeout=30,
                retry_on=httpx.HTTPError,
            )
            ingest.start()
            ingest.wait_ready(60)
            gateway.start()
            gateway.wait_ready(60)
            load = f"{os.getloadavg()[0]:.2f}"
            found = asyncio.run(_measure(gateway.url, args.opens))
        finally:
            gateway.stop()
            ingest.stop()
            backend.terminate()
            backend.wait(10)
            broker.stop()
    text = _report(found, args.opens, load)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
