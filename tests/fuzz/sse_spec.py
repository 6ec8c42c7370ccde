"""A Server-Sent Events reader written from the WHATWG spec (9.2.6), for checking our frames.

Deliberately independent of ``logstream.shared.sse`` and of httpx-sse: a line ends at CRLF, CR or LF
(nothing else), a blank line dispatches the event, ``data`` lines join with LF, an ``id``
holding NUL is ignored, and an event whose data buffer is empty is not dispatched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SpecEvent", "SpecReader"]

_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class SpecEvent:
    event: str
    data: str
    id: str | None


class SpecReader:
    """Feed bytes as they arrive; ``events`` holds every dispatched event, in order."""

    def __init__(self) -> None:
        self.events: list[SpecEvent] = []
        self.comments: list[str] = []
        self.last_id: str | None = None
        self._pending = b""
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[SpecEvent]:
        """Read ``chunk``; returns the events it completed."""
        before = len(self.events)
        self._pending += chunk
        while True:
            match = _LINE_END.search(self._pending)
            # A trailing CR may be the first half of a CRLF: wait for the next byte.
            if match is None or (match.group() == b"\r" and match.end() == len(self._pending)):
                break
            line, self._pending = self._pending[: match.start()], self._pending[match.end() :]
            self._line(line.decode("utf-8", errors="replace"))
        return self.events[before:]

    def _line(self, line: str) -> None:
        if not line:
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
            return
        name, colon, value = line.partition(":")
        value = value.removeprefix(" ") if colon else ""
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value

    def _dispatch(self) -> None:
        if self._data:
            self.events.append(
                SpecEvent(self._event or "message", "\n".join(self._data), self.last_id)
            )
        self._data, self._event = [], ""
