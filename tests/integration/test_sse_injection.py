"""No injection (docs/reference/channels.md, docs/reference/records.md and docs/reference/stream.md): what a record holds cannot create, end or alter an SSE event.

Records carrying CR, LF, NUL, U+2028 and a whole forged ``event: log`` frame in every free-text
field go in through the real ingest, and the real gateway's stream (and the proxy's, which
passes it through) is read as raw bytes by a reader written from the SSE spec, not only by
httpx-sse: exactly one ``event: log`` per record, whose data decodes to what was sent.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.fuzz.sse_spec import SpecEvent, SpecReader
from tests.support.sse_client import open_stream

PUBLISH_TOKEN = "l5-etl-token"
USER_TOKEN = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"])
FORGED = '\n\nevent: log\ndata: {"forged":1}\n\n'
PAYLOADS = [FORGED, "\r\n", "\r", "\u0000", "\u2028", "a\rb\nc\r\nd\u0000e\u2029f\x85g" + FORGED]
LEVELS = ["WARNING", "Info", "ERROR", "debug", "warn", "FATAL"]
# A generous bound on one stream read: a passing test returns as soon as its records arrive.
READ_DEADLINE_S = 20.0


def _records(channel: str, tag: str, run: str) -> list[dict]:
    return [
        {
            "channel": channel,
            "message": f"message {index}:{payload}:end",
            "level": LEVELS[index],
            "source": f"source{payload}",
            "fields": {f"key{payload}": payload, "nested": [payload, {"deep": payload}]},
            "id": f"{run}-{tag}-{index}{payload}",
        }
        for index, payload in enumerate(PAYLOADS)
    ]


def _ndjson(records: list[dict]) -> bytes:
    return b"\n".join(json.dumps(record).encode() for record in records)


@pytest.fixture
async def published(stack, unique_id):
    """The channel, and the records sent to it (JSON array and NDJSON) with their seqs."""
    channel = f"logs:etl:workspace123:{unique_id}"
    batches = [
        ("application/json", _records(channel, "json", unique_id)),
        ("application/x-ndjson", _records(channel, "ndjson", unique_id)),
    ]
    sent: list[tuple[int, dict]] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for media, records in batches:
            body = _ndjson(records) if media.endswith("ndjson") else json.dumps(records).encode()
            response = await client.post(
                f"{stack.ingest.url}/api/logs/publish",
                content=body,
                headers={"Authorization": f"Bearer {PUBLISH_TOKEN}", "Content-Type": media},
            )
            assert response.status_code == 202, response.text
            sent += zip(response.json()["seqs"], records)
    return channel, sent


async def _read_raw(url: str, *, params: dict, count: int) -> tuple[bytes, list[SpecEvent]]:
    """Read a stream's raw bytes until ``count`` log events have been dispatched."""
    reader, raw = SpecReader(), bytearray()
    headers = {"Authorization": f"Bearer {USER_TOKEN}"}
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
        async with client.stream("GET", url, params=params, headers=headers) as response:
            assert response.status_code == 200, (await response.aread()).decode()

            async def until_enough() -> None:
                async for chunk in response.aiter_raw():
                    raw.extend(chunk)
                    reader.feed(chunk)
                    if sum(event.event == "log" for event in reader.events) >= count:
                        return
                raise EOFError("the stream ended early")

            await asyncio.wait_for(until_enough(), READ_DEADLINE_S)
    return bytes(raw), reader.events


def _assert_delivered_intact(raw: bytes, events: list[SpecEvent], sent: list[tuple[int, dict]]):
    assert b"\r" not in raw and b"\0" not in raw
    assert {event.event for event in events} <= {"connected", "log"}
    logs = [event for event in events if event.event == "log"]
    ids = [None if event.id is None else int(event.id) for event in logs]
    assert ids == [seq for seq, _ in sent]
    for event, (seq, record) in zip(logs, sent):
        delivered = json.loads(event.data)
        assert "forged" not in delivered
        assert delivered["seq"] == seq
        for key in ("channel", "message", "source", "fields", "id"):
            assert delivered[key] == record[key], key
        level = record["level"].lower()
        assert delivered["level"] == ("warn" if level == "warning" else level)
    assert raw.count(b"event: log\n") == len(sent)


async def test_records_full_of_line_breaks_replay_as_one_log_event_each(stack, published):
    channel, sent = published
    raw, events = await _read_raw(
        f"{stack.gateway.url}/api/logs/stream",
        params={"channels": channel, "tail": len(sent)},
        count=len(sent),
    )
    _assert_delivered_intact(raw, events, sent)


async def test_live_records_full_of_line_breaks_arrive_as_one_log_event_each(stack, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    records = _records(channel, "live", unique_id)
    reader, raw, seen_connected = SpecReader(), bytearray(), asyncio.Event()
    headers = {"Authorization": f"Bearer {USER_TOKEN}"}

    async def read(response: httpx.Response) -> None:
        async for chunk in response.aiter_raw():
            raw.extend(chunk)
            if any(event.event == "connected" for event in reader.feed(chunk)):
                seen_connected.set()
            if sum(event.event == "log" for event in reader.events) >= len(records):
                return
        raise EOFError("the stream ended early")

    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
        async with client.stream(
            "GET",
            f"{stack.gateway.url}/api/logs/stream",
            params={"channels": channel},
            headers=headers,
        ) as response:
            assert response.status_code == 200
            reading = asyncio.create_task(read(response))
            await asyncio.wait_for(seen_connected.wait(), READ_DEADLINE_S)
            published = await client.post(
                f"{stack.ingest.url}/api/logs/publish",
                json=records,
                headers={"Authorization": f"Bearer {PUBLISH_TOKEN}"},
            )
            assert published.status_code == 202, published.text
            await asyncio.wait_for(reading, READ_DEADLINE_S)
    assert reader.events[0].event == "connected"
    _assert_delivered_intact(
        bytes(raw), reader.events, list(zip(published.json()["seqs"], records))
    )


async def test_the_proxy_passes_the_same_single_events_through(stack, published, unique_id):
    _, sent = published
    raw, events = await _read_raw(
        f"{stack.proxy.url}/api/dapadmin/l5-etl/sse/logs/stream",
        params={"workspace_id": "workspace123", "workflow_id": unique_id, "tail": len(sent)},
        count=len(sent),
    )
    _assert_delivered_intact(raw, events, sent)


async def test_httpx_sse_reads_the_same_records_back(stack, published):
    channel, sent = published
    async with open_stream(
        f"{stack.gateway.url}/api/logs/stream",
        token=USER_TOKEN,
        params={"channels": channel, "tail": len(sent)},
    ) as stream:
        records = await stream.logs(len(sent))
    assert [record["seq"] for record in records] == [seq for seq, _ in sent]
    assert [record["message"] for record in records] == [r["message"] for _, r in sent]
    assert [record["fields"] for record in records] == [r["fields"] for _, r in sent]


@pytest.mark.parametrize("field", ["channel", "level", "timestamp"])
async def test_a_line_break_in_a_checked_field_is_refused_and_nothing_is_stored(
    stack, unique_id, field
):
    channel = f"logs:etl:workspace123:{unique_id}"
    record = {
        "channel": channel,
        "message": "m",
        "level": "info",
        "timestamp": "2026-01-31T12:00:00Z",
    }
    record[field] += "\n\nevent: log\ndata: {}"
    publish = f"{stack.ingest.url}/api/logs/publish"
    auth = {"Authorization": f"Bearer {PUBLISH_TOKEN}"}
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await client.post(publish, json=[record], headers=auth)
        marker = await client.post(
            publish, headers=auth, json={"channel": channel, "message": "marker"}
        )
    assert refused.status_code == 400
    assert refused.json()["details"][0]["field"] == field
    assert marker.status_code == 202
    # The channel's history holds the marker alone: the refused record was never stored.
    _, events = await _read_raw(
        f"{stack.gateway.url}/api/logs/stream", params={"channels": channel, "tail": 10}, count=1
    )
    [log] = [event for event in events if event.event == "log"]
    assert json.loads(log.data)["message"] == "marker"
