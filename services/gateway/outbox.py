"""A connection's bounded queue of encoded SSE frames, measured in bytes.

The hub pushes the same frame bytes to every connection that wants them; the connection's
writer takes everything queued at once and writes it as one chunk. A push that would pass the
limit marks the outbox overflowed instead of growing it: the writer sends what it holds (all
older than the dropped frame), then ``event: overflow``, and the client resumes from its last id.
"""

from __future__ import annotations

import asyncio

__all__ = ["Outbox", "Wakeup"]


class Wakeup:
    """``asyncio.Event``'s set/clear/is_set/wait for the one task that waits on it, without the
    Event's waiter deque (about 600 bytes; an idle gateway connection is mostly these): a
    future exists only while that task waits."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None


class Outbox:
    __slots__ = ("_bytes", "_frames", "floor", "limit", "overflowed", "ready")

    def __init__(self, limit: int, floor: int | None = None) -> None:
        self.limit = limit
        # Frames with seq <= floor are not wanted (already delivered, or before the cursor).
        # None while the connection's starting point is still being decided: keep everything.
        self.floor = floor
        self.overflowed = False
        self.ready = Wakeup()
        self._frames: list[tuple[int, bytes]] = []  # a list: 56 bytes empty, a deque 600
        self._bytes = 0

    @property
    def size(self) -> int:
        return self._bytes

    def push(self, seq: int, frame: bytes) -> bool:
        """Queue ``frame``; False if it was not (before the floor, or the outbox is full)."""
        if self.overflowed or (self.floor is not None and seq <= self.floor):
            return False
        if self._bytes + len(frame) > self.limit:
            self.overflowed = True
            self.ready.set()
            return False
        self._frames.append((seq, frame))
        self._bytes += len(frame)
        self.ready.set()
        return True

    def cut(self) -> None:
        """End the connection as if it fell behind: it sends what it holds, then `overflow`,
        and the client resumes from its last id."""
        self.overflowed = True
        self.ready.set()

    def set_floor(self, floor: int) -> None:
        """From now on only frames after ``floor``; drop queued ones at or before it."""
        self.floor = floor
        kept = [(seq, frame) for seq, frame in self._frames if seq > floor]
        self._bytes = sum(len(frame) for _, frame in kept)
        self._frames = kept

    def take(self) -> bytes:
        """Everything queued, as one chunk (b"" if nothing is)."""
        if not self._frames:
            self.ready.clear()
            return b""
        chunk = b"".join(frame for _, frame in self._frames)
        self._frames = []
        self._bytes = 0
        if not self.overflowed:
            self.ready.clear()
        return chunk
