"""Reading SSE streams in tests with real clients (httpx + httpx-sse), always with a deadline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

# Generous: a loaded 2-core machine running the whole suite can be slow, and a deadline only
# bounds a failing test; a passing one returns as soon as its events arrive.
DEFAULT_DEADLINE_S = 20.0


@dataclass
class OpenStream:
    response: httpx.Response
    events: AsyncIterator[ServerSentEvent]

    async def next(self, timeout: float = DEFAULT_DEADLINE_S) -> ServerSentEvent:
        return await asyncio.wait_for(self.events.__anext__(), timeout)

    async def next_of(self, kind: str, timeout: float = DEFAULT_DEADLINE_S) -> ServerSentEvent:
        async def find():
            async for event in self.events:
                if event.event == kind:
                    return event
            raise EOFError("stream ended")

        return await asyncio.wait_for(find(), timeout)

    async def logs(self, count: int, timeout: float = DEFAULT_DEADLINE_S) -> list[dict]:
        """The next ``count`` log records (decoded), skipping heartbeats and other events."""
        found: list[dict] = []

        async def collect():
            async for event in self.events:
                if event.event == "log":
                    record = json.loads(event.data)
                    assert str(record["seq"]) == event.id
                    found.append(record)
                    if len(found) == count:
                        return found
            raise EOFError(f"stream ended after {len(found)} of {count} records")

        return await asyncio.wait_for(collect(), timeout)


@asynccontextmanager
async def open_stream(
    url: str,
    *,
    token: str | None = None,
    params=None,
    headers=None,
    cookies=None,
    timeout: float = DEFAULT_DEADLINE_S,
):
    """Open an SSE stream; yields an ``OpenStream`` or raises with the error body on non-200."""
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, read=None), cookies=cookies
    ) as client:
        async with aconnect_sse(client, "GET", url, params=params, headers=all_headers) as source:
            if source.response.status_code != 200:
                await source.response.aread()
                raise StreamRefused(source.response)
            yield OpenStream(source.response, source.aiter_sse())


class StreamRefused(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code}: {response.text}")
        self.response = response
        self.status = response.status_code
        self.body = response.json()
