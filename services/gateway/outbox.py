"""A connection's bounded queue of encoded SSE frames, measured in bytes.

The hub pushes the same frame bytes to every connection that wants them; the connection's
writer takes everything queued at once and writes it as one chunk. A push that would pass the
limit marks the outbox overflowed instead of growing it: the writer sends what it holds (all
older than the dropped frame), then ``event: overflow``, and the client resumes from its last id.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Outbox"]


class Outbox:
    __slots__ = ("limit", "floor", "overflowed", "ready", "_frames", "_bytes")

    def __init__(self, limit: int, floor: int | None = None) -> None:
        self.limit = limit
        # Frames with seq <= floor are not wanted (already delivered, or before the cursor).
        # None while the connection's starting point is still being decided: keep everything.
        self.floor = floor
        self.overflowed = False
        self.ready = asyncio.Event()
        self._frames: deque[tuple[int, bytes]] = deque()
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
        while self._frames and self._frames[0][0] <= floor:
            self._bytes -= len(self._frames.popleft()[1])

    def take(self) -> tuple[bytes, int, int]:
        """Everything queued as one chunk, the number of frames, and the last seq (0 if none)."""
        if not self._frames:
            self.ready.clear()
            return b"", 0, 0
        count, last = len(self._frames), self._frames[-1][0]
        chunk = b"".join(frame for _, frame in self._frames)
        self._frames.clear()
        self._bytes = 0
        if not self.overflowed:
            self.ready.clear()
        return chunk, count, last
