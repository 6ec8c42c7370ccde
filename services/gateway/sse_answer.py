"""The stream's answer under uvicorn: its own ASGI app, one task per connection.

Litestar's ``Stream`` runs every body in an anyio task group with a second task waiting on
``receive`` for the client to leave: two tasks, a task group, a cancel scope and an Event per
connection, most of an idle connection's memory (bench/RESULTS.md, case 3). Under uvicorn the
gateway knows otherwise that a client left: a direct write is refused (``DirectSink.gone``, which
the ticker also looks at for quiet connections), and after every ``send`` the connection's
``disconnected`` flag is read. So the answer sends its head and its frames from the handler's own
task. Under any other server the gateway keeps ``Stream``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, Callable
from typing import Any

from litestar import Response

from logstream.shared.sse import SSE_START_HEADERS

__all__ = ["SseAnswer"]

log = logging.getLogger("logstream.gateway")


class SseAnswer(Response):
    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        gone: Callable[[], bool],
        ended: Callable[[], None] | None = None,
        *,
        abort: Callable[[], None] | None = None,
        close_unless_read: Callable[[float], None] | None = None,
        send_timeout: float = math.inf,
    ) -> None:
        super().__init__(content=None, status_code=200, media_type="text/event-stream")
        self._frames, self._gone, self._ended = frames, gone, ended
        self._abort, self._send_timeout = abort, send_timeout
        self._close_unless_read = close_unless_read

    async def _send(self, send: Any, message: dict) -> bool:
        """``send``, for at most ``send_timeout``: a client that stopped reading (uvicorn waits
        for it to drain, with no limit of its own) has its connection closed. False then."""
        try:
            async with asyncio.timeout(self._send_timeout):
                await send(message)
        except TimeoutError:
            log.info("closing a stream whose client stopped reading")
            if self._abort is not None:
                self._abort()
            return False
        return True

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> SseAnswer:  # type: ignore[override]
        # Litestar annotates the result as an ASGIResponse but only calls it as an ASGI app:
        # this answer is its own ASGI app.
        return self

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        frames, stalled = self._frames, False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_START_HEADERS})
            async for frame in frames:
                body = {"type": "http.response.body", "body": frame, "more_body": True}
                if not await self._send(send, body) or self._gone():
                    stalled = True
                    break
        finally:
            await frames.aclose()  # its `finally` releases the subscription before the end
            if self._ended is not None:
                self._ended()
        if not stalled:
            await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})
            if self._close_unless_read is not None:
                # (its last frames may sit unsent: an `overflow` to a client that stopped)
                self._close_unless_read(self._send_timeout)
