"""uvicorn, the HTTP server every service runs in, and what a stream reaches through it.

This is the one module that knows uvicorn's internals. ``run_service`` (``logstream.shared.web``)
serves every app with ``HttpProtocol``, named explicitly in ``uvicorn.Config(http=...)``:
uvicorn's httptools protocol, subclassed here. For each request it leaves an ``HttpConnection``
in the ASGI scope under ``CONNECTION_KEY``, and a stream asks that object, never uvicorn:

- ``gone``: has the client left? (uvicorn sets its cycle's ``disconnected`` when the connection
  closes; its ``send`` then does nothing, so a stream that does not wait on ``receive`` asks);
- ``on_lost(callback)``: call back the moment the connection closes (the protocol's
  ``connection_lost``), so a stream lets go of what it holds at once; returns the undo, for a
  kept-alive connection that goes on to serve other requests;
- ``direct_sink(limit)``: once the response is under way in chunked encoding, a ``DirectSink``
  that writes chunks straight to the socket, framed exactly as uvicorn frames a body message
  (a stream that writes often saves a trip through Litestar's and uvicorn's layers, and a task
  wake, per write). The caller owns the order: what it sent through ``send`` before is already
  on the transport (same thread), and it stops writing directly before it sends the last body
  message (the terminating chunk).

It also gives every request a deadline for its headers (``header_timeout``): from the connection
(or, on a kept-alive connection, the next request's first byte) until the header block is read.
uvicorn has none, so a client that sends half a header line holds its connection (a descriptor
and a protocol object) for ever, and enough of them lock everyone else out. A late client is
answered ``408`` and the connection closed, with one audit line per address per minute at most.

``check()`` runs before the server starts: it drives one real ``RequestResponseCycle`` over a
recording transport, compares what uvicorn writes with ``chunk()``, and looks for every
attribute used here. If anything is missing the fast path ``uvicorn_connection`` is off
(``logstream.shared.fast_paths``): the services run on uvicorn's own ``httptools`` protocol, no
``HttpConnection`` is in the scope, and streams keep to ``send``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from logstream.shared.audit import ANONYMOUS, denied

__all__ = [
    "CONNECTION_KEY",
    "FAST_PATH",
    "DirectSink",
    "HttpConnection",
    "HttpProtocol",
    "check",
    "chunk",
    "connection_of",
    "protocol_with",
]

FAST_PATH = "uvicorn_connection"
# Where ``HttpProtocol`` leaves a request's ``HttpConnection`` in the ASGI scope.
CONNECTION_KEY = "logstream.connection"
# What this module reads on uvicorn's request cycle and protocol.
_CYCLE_ATTRIBUTES = (
    "scope",
    "transport",
    "response_started",
    "chunked_encoding",
    "response_complete",
    "disconnected",
)
_PROTOCOL_METHODS = (
    "connection_made",
    "on_message_begin",
    "on_headers_complete",
    "connection_lost",
)
# A request's headers must all arrive within this (``ServiceSettings.header_timeout``).
DEFAULT_HEADER_TIMEOUT_S = 10.0
_HEADER_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_HEADER_TIMEOUT_BODY = (
    b'{"error":"request_timeout","message":"the request headers did not arrive within '
    b'%gs","details":[]}'
)
# One audit line per client address per this many seconds, whatever the number of late clients.
_AUDIT_EVERY_S = 60.0
_AUDITED_ADDRESSES = 10_000

log = logging.getLogger("logstream.web")


def chunk(body: bytes) -> bytes:
    """``body`` as one HTTP/1.1 chunk, exactly as uvicorn frames a body message."""
    return b"%x\r\n%b\r\n" % (len(body), body)


class DirectSink:
    """Chunks straight to a response's transport; refuses a write once the client is gone or
    when the bytes it has not read yet would pass ``limit``."""

    __slots__ = ("_cycle", "_limit", "_transport")

    def __init__(self, cycle: Any, transport: Any, limit: int) -> None:
        self._cycle, self._transport, self._limit = cycle, transport, limit

    @property
    def gone(self) -> bool:
        """The client went away (uvicorn saw the connection close)."""
        return bool(self._cycle.disconnected) or self._transport.is_closing()

    def write(self, data: bytes) -> bool:
        """Write one framed chunk; False (nothing written) if the client is gone or the bytes it
        has not read yet would pass the limit."""
        transport = self._transport
        if self._cycle.disconnected or transport.is_closing():
            return False
        if transport.get_write_buffer_size() + len(data) > self._limit:
            return False
        transport.write(data)
        return True


class HttpConnection:
    """One request's view of its connection (see the module docstring)."""

    __slots__ = ("_cycle", "_protocol")

    def __init__(self, protocol: HttpProtocol, cycle: RequestResponseCycle) -> None:
        self._protocol, self._cycle = protocol, cycle

    @property
    def gone(self) -> bool:
        return bool(self._cycle.disconnected)

    def on_lost(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the connection closes; returns the function that undoes it."""
        callbacks = self._protocol.lost_callbacks
        callbacks.append(callback)

        def undo() -> None:
            if callback in callbacks:
                callbacks.remove(callback)

        return undo

    def direct_sink(self, limit: int) -> DirectSink | None:
        """A sink on this response, or None where writes cannot bypass ``send`` (no chunked
        body under way, not a GET, a closing connection)."""
        cycle = self._cycle
        transport = cycle.transport
        if (
            cycle.scope["method"] != "GET"
            or not cycle.response_started
            or cycle.chunked_encoding is not True
            or cycle.response_complete
            or cycle.disconnected
            or transport.is_closing()
        ):
            return None
        return DirectSink(cycle, transport, limit)


class _LateHeaders:
    """When each client address was last audited for late headers (bounded)."""

    def __init__(self) -> None:
        self.audited: dict[str, float] = {}

    def should_audit(self, address: str, now: float) -> bool:
        last = self.audited.get(address)
        if last is not None and now - last < _AUDIT_EVERY_S:
            return False
        if len(self.audited) >= _AUDITED_ADDRESSES:
            self.audited = {a: t for a, t in self.audited.items() if now - t < _AUDIT_EVERY_S}
            if len(self.audited) >= _AUDITED_ADDRESSES:  # a flood of addresses: forget them
                self.audited.clear()
        self.audited[address] = now
        return True


_LATE_HEADERS = _LateHeaders()


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus an ``HttpConnection`` in each request's scope, the
    callbacks to run when the connection closes, and a deadline for each request's headers
    (``header_timeout`` seconds; ``protocol_with`` makes the class a server is given)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost_callbacks: list[Callable[[], None]] = []
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:  # a kept-alive connection's next request
            self._await_headers()

    def _await_headers(self) -> None:
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_waiting(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        transport = self.transport
        if transport.is_closing():
            return
        body = _HEADER_TIMEOUT_BODY % self.header_timeout
        transport.write(_HEADER_TIMEOUT_ANSWER % (len(body), body))
        transport.close()
        address = self.client[0] if self.client else "unknown"
        if _LATE_HEADERS.should_audit(address, self.loop.time()):
            denied(
                who=ANONYMOUS,
                what="a request whose headers did not arrive in time",
                rule="header_timeout",
                status=408,
                remote=address,
                reason=f"headers not complete within {self.header_timeout:g}s (more late "
                "requests from this address in the next minute are not logged)",
            )

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()
        cycle = self.cycle
        # (an upgrade request makes no cycle of its own; a pipelined one is queued with its own)
        if cycle is not None and cycle.scope is self.scope:
            self.scope[CONNECTION_KEY] = HttpConnection(self, cycle)  # type: ignore[literal-required]

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        try:
            super().connection_lost(exc)
        finally:
            callbacks, self.lost_callbacks = self.lost_callbacks, []
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    log.exception("a connection-lost callback failed")


def protocol_with(header_timeout: float) -> type[HttpProtocol]:
    """``HttpProtocol`` with its header deadline, for ``uvicorn.Config(http=...)`` (uvicorn
    makes one protocol object per connection from the class it is given)."""
    return type("HttpProtocol", (HttpProtocol,), {"header_timeout": header_timeout})


def connection_of(scope: Any) -> HttpConnection | None:
    """The request's ``HttpConnection``, or None when the server is not running ``HttpProtocol``
    (another server, or the fast path is off)."""
    connection = scope.get(CONNECTION_KEY)
    return connection if isinstance(connection, HttpConnection) else None


class _RecordingTransport:
    """The part of a transport a response uses, keeping what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def _one_response() -> list[str]:
    """Drive one uvicorn response cycle; what differs from what this module expects."""
    transport = _RecordingTransport()
    cycle = RequestResponseCycle(
        scope={"type": "http", "method": "GET", "http_version": "1.1", "headers": []},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=log,
        access_logger=log,
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
    missing = [
        f"RequestResponseCycle.{name}" for name in _CYCLE_ATTRIBUTES if not hasattr(cycle, name)
    ]
    if missing:
        return missing
    await cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    if not cycle.response_started or cycle.chunked_encoding is not True:
        return ["a response without content-length is no longer sent in chunked encoding"]
    transport.written.clear()
    await cycle.send({"type": "http.response.body", "body": b"probe", "more_body": True})
    if b"".join(transport.written) != chunk(b"probe"):
        return [f"a body message is framed as {b''.join(transport.written)!r}, not as chunk()"]
    sink = HttpConnection(None, cycle).direct_sink(1 << 10)  # type: ignore[arg-type]
    if sink is None or not sink.write(chunk(b"x")) or transport.written[-1] != chunk(b"x"):
        return ["a direct write does not reach the transport"]
    return []


def check() -> list[str]:
    """What this uvicorn lacks of what ``HttpProtocol`` and ``DirectSink`` use (empty: all
    there). Call it before the server's loop runs (it runs a loop of its own)."""
    missing = [
        f"HttpToolsProtocol.{name}"
        for name in _PROTOCOL_METHODS
        if not callable(getattr(HttpToolsProtocol, name, None))
    ]
    try:
        missing += asyncio.run(_one_response())
    except Exception as exc:  # a changed constructor or send: the cycle is not what we know
        missing.append(f"RequestResponseCycle: {type(exc).__name__}: {exc}")
    return missing
