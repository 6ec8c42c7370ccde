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
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from logstream.shared.audit import ANONYMOUS, denied

__all__ = [
    "CONNECTION_KEY",
    "FAST_PATH",
    "DirectSink",
    "EdgeLimits",
    "HttpConnection",
    "HttpProtocol",
    "check",
    "chunk",
    "connection_of",
    "open_connections",
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
    "on_body",
    "on_message_complete",
    "data_received",
    "connection_lost",
)
# A request's headers must all arrive within this (``ServiceSettings.header_timeout``).
DEFAULT_HEADER_TIMEOUT_S = 10.0
# A request still arriving after this long counts against its address's pending cap.
PENDING_GRACE_S = 1.0
# A connection refused or timed out is answered, then read (and what it sends dropped) for at
# most this long before it is closed: closing a socket with unread data makes the kernel send
# a reset, which can destroy the answer before the client reads it.
LINGER_S = 2.0
# Of a refused connection's request only this much is read while looking for the headers' end.
_REFUSED_HEAD_BYTES = 16 * 1024
# One audit line per rule and client address per this many seconds, whatever the number of
# connections.
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

    def abort(self) -> None:
        """Close the connection at once, dropping what the client has not read (it stopped
        reading): a write waiting for it returns, and the connection's callbacks run."""
        self._cycle.transport.abort()

    def close_unless_read(self, within: float) -> None:
        """After a response: if the client has not taken everything written to it within
        ``within`` seconds, close the connection (a transport closes only once its buffer is
        sent, so a client that stopped reading would hold it, and its buffer, for ever)."""
        transport = self._cycle.transport
        if transport.is_closing() or not transport.get_write_buffer_size():
            return

        def check() -> None:
            if not transport.is_closing() and transport.get_write_buffer_size():
                log.info("closing a connection whose client stopped reading")
                transport.abort()

        asyncio.get_running_loop().call_later(within, check)

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


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """What every service's HTTP edge holds a client to (``ServiceSettings``; SECURITY.md)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S  # s for a request's headers
    body_min_rate: int = 1024  # bytes/s a body must average, after header_timeout of grace
    max_pending_per_address: int = 64  # connections of one address still sending, past 1 s
    max_connections: int = 10_000  # open connections of the process; past it 503


class _Audited:
    """When each (rule, client address) was last audited (bounded)."""

    def __init__(self) -> None:
        self.audited: dict[tuple[str, str], float] = {}

    def should_audit(self, rule: str, address: str, now: float) -> bool:
        key = (rule, address)
        last = self.audited.get(key)
        if last is not None and now - last < _AUDIT_EVERY_S:
            return False
        if len(self.audited) >= _AUDITED_ADDRESSES:
            self.audited = {k: t for k, t in self.audited.items() if now - t < _AUDIT_EVERY_S}
            if len(self.audited) >= _AUDITED_ADDRESSES:  # a flood of addresses: forget them
                self.audited.clear()
        self.audited[key] = now
        return True


class _Edge:
    """Process-wide: open connections, and per address those still sending a request."""

    def __init__(self) -> None:
        self.open = 0
        self.pending: dict[str, int] = {}
        self.audited = _Audited()

    def add_pending(self, address: str) -> int:
        count = self.pending.get(address, 0) + 1
        self.pending[address] = count
        return count

    def drop_pending(self, address: str) -> None:
        count = self.pending.get(address, 0) - 1
        if count > 0:
            self.pending[address] = count
        else:
            self.pending.pop(address, None)


_EDGE = _Edge()


def open_connections() -> int:
    """HTTP connections open on this process (``logstream_http_connections``)."""
    return _EDGE.open


def _answer(status: str, code: str, message: str, retry_after: int | None = None) -> bytes:
    body = json.dumps({"error": code, "message": message, "details": []}).encode()
    retry = b"retry-after: %d\r\n" % retry_after if retry_after is not None else b""
    return (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nconnection: close\r\n%b"
        b"content-length: %d\r\n\r\n%b" % (status.encode(), retry, len(body), body)
    )


# Where a connection is in its current request.
_IDLE, _HEAD, _BODY, _DONE = range(4)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus an ``HttpConnection`` in each request's scope, the
    callbacks to run when the connection closes, and the edge's limits (``EdgeLimits``;
    ``protocol_with`` makes the class a server is given):

    - a request's headers must arrive within ``header_timeout`` of the connection (or of the
      request's first byte on a kept-alive connection): else 408;
    - its body must then arrive at ``body_min_rate`` bytes/s on average, after a grace of
      ``header_timeout`` (time the app leaves it unread does not count): else 408;
    - a request still arriving after ``PENDING_GRACE_S`` counts against its client address;
      past ``max_pending_per_address`` such connections, the newest late one gets 429;
    - past ``max_connections`` open connections, a new one gets 503 with ``Retry-After``.

    Each is answered by the protocol itself (no app runs), the rest of what the client sends is
    dropped for ``LINGER_S``, and the connection closed; one audit line per rule and address
    per minute. Time spent answering a request (a stream) is not limited here."""

    limits: EdgeLimits = EdgeLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost_callbacks: list[Callable[[], None]] = []
        self._phase = _IDLE
        self._since = 0.0  # when the request (or its body's clock) began
        self._body_since = 0.0
        self._body_counted = 0  # body bytes received since _body_since
        self._pending = False  # counted in _EDGE.pending
        self._timer: asyncio.TimerHandle | None = None
        self._refused_head = b""
        self._answered = False
        self._counted = False

    # -- the connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _EDGE.open += 1
        self._counted = True
        if _EDGE.open > self.limits.max_connections:
            self._refuse_when_headers_arrive()
            return
        self._request_begins()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._not_pending()
        if self._counted:
            self._counted = False
            _EDGE.open -= 1
        try:
            super().connection_lost(exc)
        finally:
            callbacks, self.lost_callbacks = self.lost_callbacks, []
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    log.exception("a connection-lost callback failed")

    def data_received(self, data: bytes) -> None:
        if self._phase == _DONE:
            self._drop_or_answer(data)
            return
        super().data_received(data)

    # -- a request's progress ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase == _IDLE:  # a kept-alive connection's next request
            self._request_begins()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # (an upgrade request makes no cycle of its own; a pipelined one is queued with its own)
        if cycle is not None and cycle.scope is self.scope:
            self.scope[CONNECTION_KEY] = HttpConnection(self, cycle)  # type: ignore[literal-required]
        if self._phase == _HEAD:
            self._phase = _BODY
            self._body_since = self.loop.time()
            self._body_counted = 0

    def on_body(self, body: bytes) -> None:
        self._body_counted += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._phase in (_HEAD, _BODY):
            self._phase = _IDLE
            self._stop_timer()
            self._not_pending()

    def _request_begins(self) -> None:
        self._phase = _HEAD
        self._since = self.loop.time()
        self._arm(min(PENDING_GRACE_S, self.limits.header_timeout))

    def _arm(self, delay: float) -> None:
        self._stop_timer()
        self._timer = self.loop.call_later(max(delay, 0.0), self._check)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _not_pending(self) -> None:
        if self._pending:
            self._pending = False
            _EDGE.drop_pending(self._address)

    @property
    def _address(self) -> str:
        return self.client[0] if self.client else "unknown"

    def _check(self) -> None:
        """The request is still arriving: is it late, and is its address over its cap?"""
        self._timer = None
        if self.transport.is_closing() or self._phase not in (_HEAD, _BODY):
            return
        limits, now = self.limits, self.loop.time()
        if not self._pending and now - self._since >= PENDING_GRACE_S:
            self._pending = True
            pending = _EDGE.add_pending(self._address)
            if pending > limits.max_pending_per_address:
                self._refuse(
                    "429 Too Many Requests",
                    "rate_limited",
                    f"this address has {pending - 1} other connections still sending a "
                    f"request (at most {limits.max_pending_per_address}); finish or close them",
                    rule="pending_per_address",
                    what="a connection over its address's cap on requests still arriving",
                    retry_after=1,
                )
                return
        if self._phase == _HEAD:
            deadline = self._since + limits.header_timeout
            if now >= deadline:
                self._refuse(
                    "408 Request Timeout",
                    "request_timeout",
                    f"the request headers did not arrive within {limits.header_timeout:g}s",
                    rule="header_timeout",
                    what="a request whose headers did not arrive in time",
                )
                return
        else:
            cycle = self.cycle
            if cycle is None or cycle.response_started:
                return  # the app answered without the whole body: not the client's delay
            if self.flow.read_paused:  # the app is not reading: restart the body's clock
                self._body_since, self._body_counted = now, 0
                self._arm(limits.header_timeout)
                return
            deadline = (
                self._body_since + limits.header_timeout + self._body_counted / limits.body_min_rate
            )
            if now >= deadline:
                self._refuse(
                    "408 Request Timeout",
                    "request_timeout",
                    f"the request body did not arrive at {limits.body_min_rate} bytes/s "
                    f"(after {limits.header_timeout:g}s)",
                    rule="body_timeout",
                    what="a request whose body arrived too slowly",
                )
                return
        if not self._pending:
            deadline = min(deadline, self._since + PENDING_GRACE_S)
        self._arm(deadline - now)

    # -- answering from the protocol -----------------------------------------------------------

    def _refuse_when_headers_arrive(self) -> None:
        """Over the ceiling: read the request's headers (dropped), answer 503, close."""
        self._phase = _DONE
        self._answered = False
        # headers that do not come in time: closed without an answer
        self._timer = self.loop.call_later(LINGER_S, self._close)

    def _drop_or_answer(self, data: bytes) -> None:
        if self._answered:
            return  # lingering: what the client still sends is dropped
        head = self._refused_head + data
        if b"\r\n\r\n" not in head and len(head) < _REFUSED_HEAD_BYTES:
            self._refused_head = head[-3:] if len(head) > 3 else head
            return
        self._refused_head = b""
        limits = self.limits
        self._answer_and_linger(
            _answer(
                "503 Service Unavailable",
                "overloaded",
                f"this server holds its most connections ({limits.max_connections}); "
                "try again shortly",
                retry_after=1,
            )
        )
        self._audit(
            "connection_ceiling",
            "a connection past the process's connection ceiling",
            503,
            f"{_EDGE.open - 1} connections open, at most {limits.max_connections}",
        )

    def _refuse(
        self,
        status: str,
        code: str,
        message: str,
        *,
        rule: str,
        what: str,
        retry_after: int | None = None,
    ) -> None:
        self._phase = _DONE
        self._not_pending()
        self._answer_and_linger(_answer(status, code, message, retry_after))
        self._audit(rule, what, int(status[:3]), message)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's request (a body it waits on) is over
            cycle.message_event.set()

    def _answer_and_linger(self, answer: bytes) -> None:
        self._answered = True
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
        self._stop_timer()
        self._timer = self.loop.call_later(LINGER_S, self._close)

    def _close(self) -> None:
        self._timer = None
        self.transport.close()

    def _audit(self, rule: str, what: str, status: int, reason: str) -> None:
        address = self._address
        if _EDGE.audited.should_audit(rule, address, self.loop.time()):
            denied(
                who=ANONYMOUS,
                what=what,
                rule=rule,
                status=status,
                remote=address,
                reason=f"{reason} (more from this address in the next minute are not logged)",
            )


def protocol_with(limits: EdgeLimits) -> type[HttpProtocol]:
    """``HttpProtocol`` with these limits, for ``uvicorn.Config(http=...)`` (uvicorn makes one
    protocol object per connection from the class it is given)."""
    return type("HttpProtocol", (HttpProtocol,), {"limits": limits})


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
