"""Compressed bodies (``Content-Encoding``) against a real ingest process and nats-server.

Shippers compress by default; a refusal of a compressed batch makes them drop it. Each claim is
checked by reading the LOGS stream back. A decompression bomb is refused with 413 at once, and
the ingest process's memory high-water mark barely moves while it refuses it.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path

import httpx
import pytest
import zstandard

from tests.support.jetstream import stored
from tests.support.processes import ServiceProcess

PUBLISH = "/api/logs/publish"
ETL = {"Authorization": "Bearer l5-etl-token"}
# The default max_body_bytes (1 MiB): the limit every decompressed body is held to.
LIMIT = 1024 * 1024
# A refused bomb may cost the process this much memory at most (its body is well under 1 MiB;
# decompressing goes in 256 KiB steps).
BOMB_GROWTH_BYTES = 8 * 1024 * 1024


def raw_deflate(data: bytes) -> bytes:
    squeeze = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return squeeze.compress(data) + squeeze.flush()


CODINGS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "deflate-raw": raw_deflate,  # what some clients send as "deflate"
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "identity": lambda data: data,
}


@pytest.fixture(scope="module")
def ingest(nats_server, log_dir):
    service = ServiceProcess("ingest", nats_url=nats_server.url, log_dir=log_dir).start()
    yield service
    service.stop()


@pytest.fixture
async def client(ingest):
    async with httpx.AsyncClient(base_url=ingest.url, timeout=30) as http:
        yield http


@pytest.fixture
def js(nc):
    return nc.jetstream()


def records(channel: str, count: int) -> list[dict]:
    return [{"channel": channel, "message": f"line {n}", "fields": {"n": n}} for n in range(count)]


def _subject(channel: str) -> str:
    return channel.replace(":", ".")


@pytest.mark.parametrize("name", sorted(CODINGS))
@pytest.mark.parametrize("media", ["application/json", "application/x-ndjson"])
async def test_a_compressed_batch_is_stored_whole_and_in_order(client, js, unique_id, name, media):
    channel = f"logs:etl:{unique_id}:{name}"
    batch = records(channel, 300)
    if media == "application/json":
        body = json.dumps(batch).encode()
    else:
        body = b"\n".join(json.dumps(r).encode() for r in batch) + b"\n"
    coding = "deflate" if name == "deflate-raw" else name
    answer = await client.post(
        PUBLISH,
        content=CODINGS[name](body),
        headers={**ETL, "Content-Type": media, "Content-Encoding": coding},
    )
    assert answer.status_code == 202, answer.text
    got = await stored(js, _subject(channel))
    assert [r["message"] for _, _, r in got] == [r["message"] for r in batch]
    assert [seq for seq, _, _ in got] == answer.json()["seqs"]


@pytest.mark.parametrize("coding", ["br", "compress", "gzip, zstd", "snappy"])
async def test_a_coding_ingest_does_not_take_is_a_415_naming_those_it_does(
    client, js, unique_id, coding
):
    channel = f"logs:etl:{unique_id}:refused"
    answer = await client.post(
        PUBLISH,
        content=json.dumps(records(channel, 1)).encode(),
        headers={**ETL, "Content-Type": "application/json", "Content-Encoding": coding},
    )
    assert answer.status_code == 415
    body = answer.json()
    assert body["error"] == "unsupported_media_type"
    assert all(name in body["message"] for name in ("gzip", "deflate", "zstd"))
    assert await stored(js, _subject(channel)) == []


def _truncated(codec) -> bytes:
    return codec(json.dumps(records("logs:etl:x:y", 50)).encode())[:-12]


@pytest.mark.parametrize(
    ("coding", "body", "says"),
    [
        ("gzip", b"this is not gzip at all", "not valid gzip data"),
        ("gzip", _truncated(gzip.compress), "not valid gzip data"),
        ("deflate", b"\xff" * 40, "not valid deflate data"),
        ("zstd", b"neither is this zstd", "not valid zstd data"),
        ("zstd", _truncated(lambda d: zstandard.ZstdCompressor().compress(d)), "truncated"),
        ("gzip", gzip.compress(b"[]") + b"trailing junk", "after the end"),
    ],
)
async def test_a_body_that_is_not_what_its_coding_says_is_a_400(client, coding, body, says):
    answer = await client.post(
        PUBLISH,
        content=body,
        headers={**ETL, "Content-Type": "application/json", "Content-Encoding": coding},
    )
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["message"]


async def test_the_size_limit_applies_to_the_decompressed_body(client, js, unique_id):
    channel = f"logs:etl:{unique_id}:big"
    # about 1.5 MiB of JSON that compresses to a small fraction of the limit
    batch = [{"channel": channel, "message": "x" * 1500} for _ in range(1000)]
    body = json.dumps(batch).encode()
    assert len(body) > LIMIT
    answer = await client.post(
        PUBLISH,
        content=gzip.compress(body),
        headers={**ETL, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status_code == 413
    assert "once decompressed" in answer.json()["message"]
    assert await stored(js, _subject(channel)) == []


def _bomb(coding: str) -> bytes:
    """1 GiB of zeros, compressed a MiB at a time (nothing here holds the GiB): about 1 MiB as
    gzip at level 9 (just under the compressed cap), 32 KiB as zstd."""
    mib = b"\0" * (1 << 20)
    if coding == "gzip":
        squeeze = zlib.compressobj(9, wbits=16 + zlib.MAX_WBITS)
        return b"".join(squeeze.compress(mib) for _ in range(1024)) + squeeze.flush()
    writer = zstandard.ZstdCompressor().chunker(size=1 << 30)
    return b"".join(b"".join(writer.compress(mib)) for _ in range(1024)) + b"".join(writer.finish())


def _high_water_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
async def test_a_decompression_bomb_is_a_413_at_once_and_costs_no_memory(client, ingest, coding):
    bomb = _bomb(coding)
    pid = ingest.process.pid
    before = _high_water_bytes(pid)
    answer = await client.post(
        PUBLISH,
        content=bomb,
        headers={**ETL, "Content-Type": "application/json", "Content-Encoding": coding},
    )
    assert answer.status_code == 413, answer.text
    assert "once decompressed" in answer.json()["message"]
    growth = _high_water_bytes(pid) - before
    assert growth < BOMB_GROWTH_BYTES, f"ingest's peak memory grew by {growth} bytes"
    assert os.path.exists(f"/proc/{pid}")  # and the process is still there
