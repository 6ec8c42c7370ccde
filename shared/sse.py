"""The one Server-Sent Events frame encoder.

Frames are bytes, built once and shared by every connection that receives them. ``id`` and
``event`` lose every ASCII control character (CR, LF and NUL above all), so no value can inject
a field (Mercure warns of this); ``data`` is split on line breaks into one ``data:`` line each,
as the SSE spec reads them back, and loses NUL. Only CR and LF end a line in SSE; record JSON
escapes both (and every other character below 0x20), so a record is one ``data:`` line.
"""

from __future__ import annotations

__all__ = ["HEARTBEAT", "SSE_HEADERS", "SSE_START_HEADERS", "sse_frame"]

# CR, LF and NUL would end a line or void an id; the other controls have no business in an id
# or an event name either (ours are sequence numbers and fixed words).
_UNSAFE = dict.fromkeys([*range(0x20), 0x7F])
# Header set on every stream: no caching, and no buffering in nginx-style proxies.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
HEARTBEAT = b": hb\n\n"
# The same, as the raw header list of an ASGI ``http.response.start`` (for a stream answered
# without Litestar's ``Stream``), with the content type Litestar would send.
SSE_START_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    *((name.lower().encode(), value.encode()) for name, value in SSE_HEADERS.items()),
]


def _field(value: object) -> str:
    return str(value).translate(_UNSAFE)


def sse_frame(
    *,
    data: bytes | str | None = None,
    event: str | None = None,
    id: int | str | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    parts: list[bytes] = []
    if comment is not None:
        parts.extend(b": " + line.encode() for line in comment.splitlines() or [""])
    if retry is not None:
        parts.append(b"retry: %d" % int(retry))
    if id is not None:
        parts.append(b"id: " + _field(id).encode())
    if event is not None:
        parts.append(b"event: " + _field(event).encode())
    if data is not None:
        raw = data.encode() if isinstance(data, str) else data
        lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        parts.extend(b"data: " + line.replace(b"\0", b"") for line in lines)
    return b"\n".join(parts) + b"\n\n"
