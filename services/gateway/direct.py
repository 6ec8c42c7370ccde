"""Writing a caught-up connection's records straight to its socket, with no task wake.

Through the ASGI path every record costs each connection a task wake, a generator step and a
trip through Litestar's and uvicorn's ``send`` (about 35 us per delivery in
bench/gateway-profile.txt), and the thousandth browser on a channel waited for the 999 before
it. A connection that has caught up (its opening frames, replay and outbox all written) instead
hands the hub a ``DirectSink``: the hub joins the frames of one read batch, frames them once as
an HTTP/1.1 chunk, and writes the same bytes to every such connection's transport. The
connection's writer task stays for what is rare: heartbeats, token expiry, the drain and the
final frame, all of which it sends through ``send`` as before (one thread, so every write lands
in order).

The sink comes from the request's ``HttpConnection`` (``logstream.shared.uvicorn_adapter``, the one
module that knows uvicorn's internals); under any other server, or before the response is under
way in chunked encoding, there is none and the connection keeps the outbox path. The transport's
write buffer is the outbox: past the connection's byte limit the write is refused and the
connection ends with ``overflow``, as a full outbox does.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from logstream.shared.uvicorn_adapter import chunk

if TYPE_CHECKING:
    from logstream.services.gateway.subscription import Subscription

__all__ = ["Coalescer"]


class Coalescer:
    """Frames bound for direct sinks, gathered over one read batch and written once per
    connection: a connection on one channel gets every frame of the batch in one ``write``,
    and connections that get the same frames share the same chunk bytes."""

    __slots__ = ("_dirty", "_handle")

    def __init__(self) -> None:
        self._dirty: list[Subscription] = []  # with pending frames, in first-frame order
        self._handle: asyncio.Handle | None = None

    def note(self, sub: Subscription) -> None:
        """``sub`` queued the first frame of this batch (``Subscription.deliver``): write its
        frames at the next ``flush``, which runs by itself on the next loop turn if nobody
        calls it sooner."""
        self._dirty.append(sub)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        dirty, self._dirty = self._dirty, []
        if not dirty:
            return
        now = time.monotonic()
        # Keyed by the frames' ids: every frame named by a key stays alive (in a pending list)
        # until its connection is written, and no frame is created meanwhile, so ids are unique.
        shared: dict[tuple[int, ...], bytes] = {}
        for sub in dirty:
            frames = sub.take_pending()
            sink = sub.sink
            if sink is None:
                continue  # the writer took the connection back to end it: it ends, and resumes
            key = tuple(map(id, frames))
            data = shared.get(key)
            if data is None:
                data = shared[key] = chunk(frames[0] if len(frames) == 1 else b"".join(frames))
            if sink.write(data):
                sub.mark_written(now)
            else:
                sub.lost_sink(gone=sink.gone)
