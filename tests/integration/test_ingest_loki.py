"""The Loki push API (``POST /loki/api/v1/push``) from a real Loki client and by hand, against the
real stack: python-logging-loki's handler (JSON, HTTP Basic with the service token as its
password), and snappy-compressed protobuf as Promtail, Alloy and Fluent Bit send it.
"""

from __future__ import annotations

import base64
import json
import logging
import time

import cramjam
import httpx
import logging_loki
import pytest

from logstream.services.ingest.loki import push_request_class
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support.jetstream import stored
from tests.support.sse_client import open_stream

PUSH = "/loki/api/v1/push"
ETL = {"Authorization": "Bearer l5-etl-token"}
SNAPPY = {**ETL, "Content-Type": "application/x-protobuf"}
JSON_TYPE = {"Content-Type": "application/json"}
READER = UserTokens(DEV_JWT_SECRET).issue_dev("user123")


@pytest.fixture
def js(nc):
    return nc.jetstream()


def _subject(channel: str) -> str:
    return channel.replace(":", ".")


async def test_python_logging_loki_with_basic_auth_reaches_the_stream(stack, unique_id):
    channel = f"logs:etl:workspace123:loki-{unique_id}"
    handler = logging_loki.LokiHandler(
        url=stack.ingest.url + PUSH,
        tags={"channel": channel, "job": "nightly-import"},
        auth=("any-user", "l5-etl-token"),
        version="1",
    )
    logger = logging.getLogger(f"loki-{unique_id}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    async with open_stream(
        f"{stack.gateway.url}/api/logs/stream?channels={channel}", token=READER
    ) as stream:
        await stream.next_of("connected")
        logger.error("import failed", extra={"tags": {"table": "orders"}})
        logger.info("retrying")
        first, second = await stream.logs(2)
    assert first["message"] == "import failed" and first["level"] == "error"
    assert first["source"] == "nightly-import"
    assert first["fields"]["table"] == "orders"
    assert second["message"] == "retrying" and second["level"] == "info"


def _snappy_push(*streams: tuple[str, list[tuple[str, dict[str, str]]]]) -> bytes:
    """A PushRequest as Loki's clients send it: protobuf, then snappy's block format."""
    push = push_request_class()()
    now = time.time_ns()
    for labels, entries in streams:
        stream = push.streams.add(labels=labels)
        for offset, (line, metadata) in enumerate(entries):
            entry = stream.entries.add(line=line)
            entry.timestamp.FromNanoseconds(now + offset)
            for name, value in metadata.items():
                entry.structuredMetadata.add(name=name, value=value)
    return bytes(cramjam.snappy.compress_raw(push.SerializeToString()))


async def test_a_snappy_protobuf_push_maps_labels_and_metadata(stack, js, unique_id):
    channel = f"logs:etl:ws-{unique_id}:promtail"
    labels = f'{{channel="{channel}", service_name="loader", detected_level="warn", pod="p-7"}}'
    body = _snappy_push((labels, [("line one", {"trace_id": "abc"}), ("line two", {})]))
    answer = httpx.post(stack.ingest.url + PUSH, content=body, headers=SNAPPY)
    assert answer.status_code == 204, answer.text
    got = [r for _, _, r in await stored(js, _subject(channel))]
    assert [r["message"] for r in got] == ["line one", "line two"]
    assert all(r["level"] == "warn" and r["source"] == "loader" for r in got)
    assert got[0]["fields"] == {"pod": "p-7", "trace_id": "abc"}
    assert got[1]["fields"] == {"pod": "p-7"}


async def test_a_json_push_with_structured_metadata_and_gzip_is_stored(stack, js, unique_id):
    import gzip

    channel = f"logs:etl:ws-{unique_id}:alloy"
    push = {
        "streams": [
            {
                "stream": {"channel": channel, "level": "debug"},
                "values": [
                    ["1780000000000000000", "first"],
                    ["1780000000000000001", "second", {"user": "u1"}],
                ],
            }
        ]
    }
    answer = httpx.post(
        stack.ingest.url + PUSH,
        content=gzip.compress(json.dumps(push).encode()),
        headers={**ETL, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status_code == 204, answer.text
    got = [r for _, _, r in await stored(js, _subject(channel))]
    assert [(r["message"], r["level"]) for r in got] == [("first", "debug"), ("second", "debug")]
    assert got[0]["timestamp"] == "2026-05-28T20:26:40.000Z"
    assert got[1]["fields"] == {"user": "u1"}


async def test_a_retried_push_is_stored_once(stack, js, unique_id):
    channel = f"logs:etl:ws-{unique_id}:retry"
    body = _snappy_push((f'{{channel="{channel}"}}', [("once", {})]))
    for _ in range(3):
        assert httpx.post(stack.ingest.url + PUSH, content=body, headers=SNAPPY).status_code == 204
    assert [r["message"] for _, _, r in await stored(js, _subject(channel))] == ["once"]


def _size_varint(size: int) -> bytes:
    out = bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        out.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(out)


@pytest.mark.parametrize(
    ("headers", "body", "status", "says"),
    [
        (SNAPPY, b"\x10not snappy at all", 400, "snappy"),
        (SNAPPY, bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff")), 400, "PushRequest"),
        # a snappy block that says it holds 1 GiB: refused before a byte is decompressed
        (SNAPPY, _size_varint(1 << 30) + b"\x00" * 64, 413, "once decompressed"),
        ({**ETL, "Content-Type": "application/json"}, b'{"streams": 3}', 400, "Loki push"),
        ({**ETL, "Content-Type": "text/plain"}, b"x", 415, "application/x-protobuf"),
        (
            {"Authorization": "Basic " + base64.b64encode(b"u:wrong").decode(), **JSON_TYPE},
            b"{}",
            401,
            "token",
        ),
    ],
)
async def test_bad_pushes_get_a_clear_permanent_refusal(stack, headers, body, status, says):
    answer = httpx.post(stack.ingest.url + PUSH, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert says.lower() in answer.json()["message"].lower()


async def test_entries_without_a_channel_label_or_outside_the_grants_store_nothing(
    stack, js, unique_id
):
    channel = f"logs:etl:ws-{unique_id}:half"
    body = _snappy_push((f'{{channel="{channel}"}}', [("kept?", {})]), ('{job="x"}', [("no", {})]))
    answer = httpx.post(stack.ingest.url + PUSH, content=body, headers=SNAPPY)
    assert answer.status_code == 400
    assert answer.json()["details"][0]["index"] == 1
    foreign = f"logs:faas:ws-{unique_id}:fn"
    refused = httpx.post(
        stack.ingest.url + PUSH,
        content=_snappy_push((f'{{channel="{foreign}"}}', [("not mine", {})])),
        headers=SNAPPY,
    )
    assert refused.status_code == 403
    assert await stored(js, _subject(channel)) == [] and await stored(js, _subject(foreign)) == []


async def test_a_push_past_the_batch_limit_is_a_413_and_nothing_is_stored(stack, js, unique_id):
    channel = f"logs:etl:ws-{unique_id}:big"
    body = _snappy_push((f'{{channel="{channel}"}}', [(f"e{n}", {}) for n in range(1001)]))
    answer = httpx.post(stack.ingest.url + PUSH, content=body, headers=SNAPPY)
    assert answer.status_code == 413
    assert await stored(js, _subject(channel)) == []
