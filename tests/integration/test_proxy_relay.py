"""The proxy's relay, as a real process, between real sockets (services/proxy/relay.py).

Most tests put the proxy in front of a scripted gateway: an asyncio HTTP server in the test's
own loop whose stream answers are written byte by byte as each test says, so chunk boundaries,
bursts, slow clients and hang-ups are exactly what the test wants. One test runs the whole
stack (ingest, NATS, gateway, proxy) for a burst of real records.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.processes import ServiceProcess

ETL = "/api/dapadmin/l5-etl/sse/logs/stream"
WORKSPACE = "workspace123"
# Bounds a failing wait only; a passing test moves on as soon as the event happens.
DEADLINE_S = 15.0
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(body), body)


def frames(count: int, start: int = 0) -> bytes:
    return b"".join(
        b'id: %d\nevent: log\ndata: {"seq":%d,"message":"%s"}\n\n' % (i, i, b"x" * (i % 90))
        for i in range(start, start + count)
    )


class ScriptedGateway:
    """Answers /ready and /health; a stream request runs the script registered for its
    workflow (the last part of the ``channels`` it asks for)."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            url = urlsplit(head.split(b" ")[1].decode())
            if url.path in ("/ready", "/health"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            else:
                channel = parse_qs(url.query)["channels"][0]
                await self.scripts[channel.rsplit(":", 1)[1]](reader, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture(scope="module")
async def scripted(nats_server, log_dir):
    """A scripted gateway, a proxy in front of it, and one more for the drain test alone."""
    gateway = ScriptedGateway()
    url = await gateway.start()
    proxies = [
        ServiceProcess(
            "proxy", nats_url=nats_server.url, log_dir=log_dir, args=["--gateway-url", url]
        )
        for _ in range(2)
    ]
    for proxy in proxies:
        proxy.start(wait=False)
    try:
        for proxy in proxies:
            await asyncio.to_thread(proxy.wait_healthy)
        yield gateway, proxies[0], proxies[1]
    finally:
        for proxy in proxies:
            proxy.stop()
        gateway.server.close()


def stream_url(proxy: ServiceProcess, workflow: str) -> tuple[str, dict]:
    return proxy.url + ETL, {"workspace_id": WORKSPACE, "workflow_id": workflow}


def streams_open(proxy: ServiceProcess) -> float:
    text = httpx.get(proxy.url + "/metrics", timeout=DEADLINE_S).text
    return sum(
        float(value)
        for value in re.findall(r"^logstream_proxy_streams_open\{[^}]*\} (\S+)$", text, re.M)
    )


async def read_all(proxy: ServiceProcess, workflow: str, *, pause_s: float = 0.0) -> bytes:
    """The whole stream body through the proxy; ``pause_s`` between reads makes a slow client."""
    url, params = stream_url(proxy, workflow)
    body = b""
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        async with client.stream("GET", url, params=params) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            async for piece in answer.aiter_raw(64 * 1024):
                body += piece
                await asyncio.sleep(pause_s)
    return body


async def test_frames_split_anywhere_across_gateway_chunks_arrive_byte_exact(scripted, unique_id):
    gateway, proxy, _ = scripted
    body = frames(40)
    cuts = [0, 3, 4, 61, 62, 63, 500, 1201, len(body) - 1, len(body)]

    async def script(reader, writer):
        writer.write(HEAD)
        for a, b in itertools.pairwise(cuts):
            writer.write(chunk(body[a:b]))
            await writer.drain()
            await asyncio.sleep(0)  # each piece its own segment, so its own read at the proxy
        writer.write(b"0\r\n\r\n")

    gateway.scripts[unique_id] = script
    assert await read_all(proxy, unique_id) == body


async def test_a_large_burst_is_relayed_completely_and_in_order(scripted, unique_id):
    gateway, proxy, _ = scripted
    body = frames(20_000)  # about 2 MB, written as fast as the proxy takes it

    async def script(reader, writer):
        writer.write(HEAD)
        for start in range(0, len(body), 4096):
            writer.write(chunk(body[start : start + 4096]))
        writer.write(b"0\r\n\r\n")

    gateway.scripts[unique_id] = script
    assert await read_all(proxy, unique_id) == body


async def test_a_slow_client_still_gets_a_burst_completely_and_in_order(scripted, unique_id):
    gateway, proxy, _ = scripted
    body = frames(30_000)  # about 3 MB against a client reading 64 KiB at a time, slowly

    async def script(reader, writer):
        writer.write(HEAD)
        for start in range(0, len(body), 1500):
            writer.write(chunk(body[start : start + 1500]))
            await writer.drain()  # the proxy's push-back reaches the gateway here
        writer.write(b"0\r\n\r\n")

    gateway.scripts[unique_id] = script
    assert await read_all(proxy, unique_id, pause_s=0.005) == body


async def test_a_client_that_leaves_closes_the_gateway_connection(scripted, unique_id):
    gateway, proxy, _ = scripted
    hung_up = asyncio.Event()

    async def script(reader, writer):
        writer.write(HEAD + chunk(frames(1)))
        await writer.drain()
        await reader.read()  # an idle stream: nothing more until the proxy hangs up
        hung_up.set()

    gateway.scripts[unique_id] = script
    url, params = stream_url(proxy, unique_id)
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        async with client.stream("GET", url, params=params) as answer:
            async for piece in answer.aiter_raw():
                if b"\n\n" in piece:
                    break
    await asyncio.wait_for(hung_up.wait(), DEADLINE_S)
    for _ in range(int(DEADLINE_S / 0.05)):
        if await asyncio.to_thread(streams_open, proxy) == 0:
            break
        await asyncio.sleep(0.05)
    assert await asyncio.to_thread(streams_open, proxy) == 0


async def test_a_gateway_that_ends_its_stream_ends_the_clients(scripted, unique_id):
    gateway, proxy, _ = scripted

    async def script(reader, writer):
        writer.write(HEAD + chunk(frames(3)) + b"0\r\n\r\n")

    gateway.scripts[unique_id] = script
    assert await read_all(proxy, unique_id) == frames(3)


@pytest.mark.parametrize(
    "status, headers, body, expected",
    [
        (
            503,
            b"Retry-After: 7\r\n",
            b'{"error":"broker_unavailable","message":"m","details":[]}',
            {"error": "broker_unavailable", "message": "m", "details": []},
        ),
        (
            401,
            b"WWW-Authenticate: Bearer\r\n",
            b'{"error":"unauthenticated","message":"no","details":[]}',
            {"error": "unauthenticated", "message": "no", "details": []},
        ),
        (
            500,
            b"",
            b"plain text oops",
            {"error": "upstream_error", "message": "plain text oops", "details": []},
        ),
    ],
)
async def test_a_refusal_is_relayed_with_its_status_body_and_headers(
    scripted, unique_id, status, headers, body, expected
):
    gateway, proxy, _ = scripted

    async def script(reader, writer):
        writer.write(
            b"HTTP/1.1 %d Refused\r\n%bcontent-length: %d\r\n\r\n%b"
            % (status, headers, len(body), body)
        )

    gateway.scripts[unique_id] = script
    url, params = stream_url(proxy, unique_id)
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        answer = await client.get(url, params=params)
    assert answer.status_code == status and answer.json() == expected
    for line in filter(None, headers.decode().split("\r\n")):
        name, value = line.split(": ")
        assert answer.headers[name] == value


@pytest.mark.parametrize("answer", [b"", b"not http at all\r\n\r\n"])
async def test_a_gateway_that_gives_no_http_answer_is_a_502(scripted, unique_id, answer):
    gateway, proxy, _ = scripted

    async def script(reader, writer):
        writer.write(answer)

    gateway.scripts[unique_id] = script
    url, params = stream_url(proxy, unique_id)
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        answer = await client.get(url, params=params)
    assert answer.status_code == 502 and answer.json()["error"] == "bad_gateway"
    assert int(answer.headers["retry-after"]) > 0


async def test_a_draining_proxy_ends_the_stream_after_whole_frames_with_a_retry_hint(
    scripted, unique_id
):
    gateway, _, draining = scripted
    sent = frames(5)

    async def script(reader, writer):
        writer.write(HEAD + chunk(sent[:100]))
        await writer.drain()
        await asyncio.sleep(0)
        writer.write(chunk(sent[100:]))
        await writer.drain()
        await reader.read()  # until the proxy hangs up

    gateway.scripts[unique_id] = script
    url, params = stream_url(draining, unique_id)
    body = b""
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        async with client.stream("GET", url, params=params) as answer:
            async for piece in answer.aiter_raw():
                body += piece
                if body == sent:
                    draining.process.send_signal(signal.SIGTERM)
    assert body == sent + b"retry: 2000\n\n"
    assert await asyncio.to_thread(draining.process.wait, DEADLINE_S) in (0, -signal.SIGTERM)
    assert "Traceback" not in draining.log()


async def test_a_burst_of_real_records_reaches_the_browser_path_complete_and_in_order(
    stack, unique_id
):
    channel = f"logs:etl:{WORKSPACE}:{unique_id}"
    token = stack.user_token("user123")
    count, seqs = 3000, []
    url, params = stack.proxy.url + ETL, {"workspace_id": WORKSPACE, "workflow_id": unique_id}
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        async with client.stream(
            "GET", url, params=params, headers={"Authorization": f"Bearer {token}"}
        ) as answer:
            assert answer.status_code == 200
            lines = answer.aiter_lines()
            async for line in lines:
                if line == "event: connected":
                    break
            records = [{"channel": channel, "message": f"burst {i}"} for i in range(count)]
            for start in range(0, count, 1000):
                published = await client.post(
                    f"{stack.ingest.url}/api/logs/publish",
                    json=records[start : start + 1000],
                    headers={"Authorization": "Bearer l5-etl-token"},
                )
                assert published.status_code == 202, published.text

            async def collect():
                async for line in lines:
                    if line.startswith("data: ") and '"burst ' in line:
                        seqs.append(int(line.split('"burst ')[1].split('"')[0]))
                        if len(seqs) == count:
                            return

            await asyncio.wait_for(collect(), DEADLINE_S)
    assert seqs == list(range(count))
