"""Paced admission: at most ``max_opening`` stream, history and channel-list requests are being
opened at once; the rest wait their turn, in order of arrival.

When a gateway restarts, its browsers come back at once. Opening a stream costs the event loop
its routing, token check, subscription and replay plan; thousands of them in the same few loop
turns would hold every stream already back (their live records wait for the loop) for seconds.
Here each such request, before Litestar sees it, waits for one of ``max_opening`` places and
gives it back when its response starts (for a stream: once it is subscribed and its replay
planned), so the loop takes new arrivals a few dozen at a time between fan-out turns. The wait
costs a waiting request nothing but its connection. Health, readiness and metrics never wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = ["PACED_PATHS", "paced"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

PACED_PATHS = frozenset({"/api/logs/stream", "/api/logs/history", "/api/logs/channels"})


def paced(app: App, limit: int, paths: Iterable[str] = PACED_PATHS) -> App:
    """``app`` with at most ``limit`` requests to ``paths`` opening at once (see the module)."""
    watched = frozenset(paths)
    gate = asyncio.Semaphore(limit)

    async def admitted(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in watched:
            await app(scope, receive, send)
            return
        await gate.acquire()
        held = True

        async def send_and_release(message: Message) -> None:
            nonlocal held
            if held and message["type"] == "http.response.start":
                held = False
                gate.release()
            await send(message)

        try:
            await app(scope, receive, send_and_release)
        finally:
            if held:
                gate.release()

    return admitted
