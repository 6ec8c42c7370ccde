"""The one Server-Sent Events frame encoder.

Frames are bytes, built once and shared by every connection that receives them. ``id`` and
``event`` lose CR, LF and NUL, so no value can inject a field (Mercure warns of this); ``data``
is split on line breaks into one ``data:`` line each, as the SSE spec reads them back.
"""

from __future__ import annotations

__all__ = ["HEARTBEAT", "SSE_HEADERS", "sse_frame"]

_UNSAFE = {ord("\r"): None, ord("\n"): None, 0: None}
# Header set on every stream: no caching, and no buffering in nginx-style proxies.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
HEARTBEAT = b": hb\n\n"


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
