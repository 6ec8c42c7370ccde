"""Writing HTTP/1.1 chunks straight to a response's socket, past the ASGI ``send``.

A stream that writes often (the gateway to a caught-up browser, the proxy relaying a gateway)
pays for every ``send`` a trip through Litestar's and uvicorn's layers and, for a generator
body, a task wake. Under uvicorn's httptools protocol the connection's transport is reachable
from the server's own ``send`` (``RequestResponseCycle.transport``, which the outermost wrapper
in ``logstream.shared.web`` leaves in the scope under ``RAW_SEND_KEY``). Once the response is under way in
chunked encoding, a ``DirectSink`` writes chunks framed exactly as uvicorn frames a body
message, and refuses a write when the client is gone or the bytes it has not read pass a limit.
Under any other server ``attach`` answers None and the caller keeps ``send``.

The caller owns the order: everything it sent through ``send`` before attaching is already on
the transport (same thread), and it must stop writing directly before it sends the last body
message (the terminating chunk).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["DirectSink", "chunk", "disconnect_probe", "on_client_gone"]

# The one protocol whose body writes we mirror byte for byte (``RequestResponseCycle.send``):
# chunked encoding as ``%x\r\n<body>\r\n``, and no state of its own to keep in step.
_CYCLE_MODULE = "uvicorn.protocols.http.httptools_impl"


def chunk(body: bytes) -> bytes:
    """``body`` as one HTTP/1.1 chunk, exactly as uvicorn frames a body message."""
    return b"%x\r\n%b\r\n" % (len(body), body)


class DirectSink:
    __slots__ = ("_cycle", "_limit", "_transport")

    def __init__(self, cycle: Any, transport: Any, limit: int) -> None:
        self._cycle, self._transport, self._limit = cycle, transport, limit

    @classmethod
    def attach(cls, raw_send: Callable | None, limit: int) -> DirectSink | None:
        """A sink on the connection behind ``raw_send``, or None where writes cannot bypass
        ``send`` (another server, no chunked body under way, a closing connection)."""
        cycle = _uvicorn_cycle(raw_send)
        if cycle is None:
            return None
        transport = getattr(cycle, "transport", None)
        if (
            transport is None
            or cycle.scope["method"] != "GET"
            or not cycle.response_started
            or cycle.chunked_encoding is not True
            or cycle.response_complete
            or cycle.disconnected
            or transport.is_closing()
        ):
            return None
        return cls(cycle, transport, limit)

    @property
    def gone(self) -> bool:
        """The client went away (uvicorn saw the connection close)."""
        return self._cycle.disconnected or self._transport.is_closing()

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


def disconnect_probe(raw_send: Callable | None) -> Callable[[], bool] | None:
    """A cheap "has the client gone?" for the response behind ``raw_send`` (uvicorn's httptools
    protocol sets ``disconnected`` when the connection closes), or None under another server.
    uvicorn's ``send`` does nothing once the client is gone, so a stream that does not wait on
    ``receive`` must ask."""
    cycle = _uvicorn_cycle(raw_send)
    if cycle is None:
        return None
    return lambda: cycle.disconnected


def on_client_gone(
    raw_send: Callable | None, callback: Callable[[], None]
) -> Callable[[], None] | None:
    """Call ``callback`` the moment the client's connection closes (the protocol's
    ``connection_lost``), so a stream lets go of what it holds at once instead of at the next
    probe. Returns the function that undoes it (call it when the response ends: a kept-alive
    connection serves other requests), or None under another server."""
    cycle = _uvicorn_cycle(raw_send)
    transport = getattr(cycle, "transport", None)
    if transport is None or transport.is_closing():
        return None
    protocol = transport.get_protocol()
    before = protocol.connection_lost
    own = protocol.__dict__.get("connection_lost")  # another stream's hook, or None

    def connection_lost(exc: Exception | None) -> None:
        try:
            before(exc)
        finally:
            callback()

    protocol.connection_lost = connection_lost

    def undo() -> None:
        if protocol.__dict__.get("connection_lost") is connection_lost:
            if own is None:
                del protocol.connection_lost
            else:
                protocol.connection_lost = own

    return undo


def _uvicorn_cycle(raw_send: Callable | None) -> Any:
    """The httptools ``RequestResponseCycle`` whose bound ``send`` this is, or None."""
    cycle = getattr(raw_send, "__self__", None)
    if cycle is None or type(cycle).__module__ != _CYCLE_MODULE:
        return None
    return cycle
