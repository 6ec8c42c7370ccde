"""One connection's interest in the log, as the hub sees it: its channels, its filters, where
its records go (its outbox, or straight to its socket once caught up), and when its writer
wants waking."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from logstream.services.gateway.outbox import Outbox
from logstream.services.gateway.source import StoredMessage
from logstream.shared.channels import ChannelPattern, to_subject
from logstream.shared.records import delivered_json, level_rank
from logstream.shared.sse import sse_frame
from logstream.shared.uvicorn_adapter import DirectSink
from logstream.shared.where import Where

if TYPE_CHECKING:
    from logstream.services.gateway.direct import Coalescer

__all__ = ["FILTER_VIEW", "FilterView", "Subscription", "encode_record", "record_accepted"]


_NO_FIELDS = msgspec.Raw(b"null")


class FilterView(msgspec.Struct):
    """What the filters look at in a stored record, decoded once per record for every
    filtered connection; ``fields`` stays raw JSON until a ``where`` asks about it."""

    level: str = "info"
    message: str = ""
    source: str | None = None
    channel: str = ""
    fields: msgspec.Raw = _NO_FIELDS


FILTER_VIEW = msgspec.json.Decoder(FilterView)
_FIELDS = msgspec.json.Decoder(dict[str, Any] | None)


@dataclass(slots=True)
class _WhereRecord:
    """A record as ``logstream.shared.where.Where.matches`` reads it."""

    level: str
    source: str | None
    message: str
    channel: str
    fields: dict[str, Any] | None


def record_accepted(
    view: FilterView, min_level: int, query: str | None, where: Where | None
) -> bool:
    """The level, ``q`` (lower case) and ``where`` filters, in that order (cheapest first)."""
    if level_rank(view.level) < min_level:
        return False
    if query and query not in view.message.lower():
        return False
    if where is None:
        return True
    fields = _FIELDS.decode(view.fields) if view.fields else None
    return where.matches(_WhereRecord(view.level, view.source, view.message, view.channel, fields))


def encode_record(message: StoredMessage) -> bytes:
    """A stored record's SSE frame: built once, the same bytes for every connection."""
    return sse_frame(id=message.seq, event="log", data=delivered_json(message.seq, message.data))


@dataclass(eq=False, slots=True)
class Subscription:
    """One connection's interest: its channels, optional filters, and where its records go.

    Its state below is assigned here only, by methods named for what happened: the hub
    (``start_after``, ``deliver``, ``missed``, ``cut``), the coalescer (``take_pending``,
    ``mark_written``, ``lost_sink``), the ticker (``lost_sink``), the connection's writer
    (``go_direct``, ``take_back_sink``, ``wake_by``) and the stream handler
    (``set_client_probe``, ``lost_sink``) ask instead of setting it. The fields stay plain
    slots for reading: the fan-out reads them per record per connection.
    """

    connection_id: str
    user_id: str
    patterns: tuple[ChannelPattern, ...]
    outbox: Outbox
    min_level: int = 0
    query: str | None = None
    where: Where | None = None
    subjects: frozenset[str] = field(init=False)
    filtered: bool = field(init=False)  # a plain attribute: read per record per connection
    # When (time.monotonic()) the writer wants waking even without records: its next heartbeat
    # or its token's expiry. Looked at by ``logstream.services.gateway.ticker``.
    wake_at: float = field(init=False, default=math.inf)
    # Once caught up, records go straight to the socket (``logstream.services.gateway.direct``): the
    # sink, the frames of the current read batch, and when the hub last wrote.
    sink: DirectSink | None = field(init=False, default=None)
    pending: list[bytes] = field(init=False, default_factory=list)
    written_at: float = field(init=False, default=0.0)
    gone: bool = field(init=False, default=False)
    # The seq of the last record given to this connection (outbox or socket), and, when the hub
    # ends it to resend a record it missed, the id it resumes after (``Hub._repair``).
    last_sent: int = field(init=False, default=0)
    rewind: int | None = field(init=False, default=None)
    # Has the client left? (``logstream.shared.uvicorn_adapter.HttpConnection.gone``; None: the server says so
    # through ``receive`` instead.) Asked by the ticker: a quiet stream writes nothing that
    # could fail.
    client_gone: Callable[[], bool] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.subjects = frozenset(to_subject(p) for p in self.patterns)
        if self.query is not None:
            self.query = self.query.lower()
        self.filtered = self.min_level > 0 or bool(self.query) or self.where is not None

    # -- the hub -------------------------------------------------------------------------

    def start_after(self, cursor: int) -> None:
        """Registered with the hub at ``cursor``: records up to it are not this one's (the hub
        may still be fanning some out), whether they would go to the outbox or the socket."""
        self.outbox.set_floor(cursor)
        self.last_sent = max(self.last_sent, cursor)

    def deliver(self, seq: int, frame: bytes, direct: Coalescer) -> bool:
        """Take record ``seq``'s frame: once caught up, into the batch ``direct`` writes to the
        socket at its next flush; before, into the outbox. False if it was not taken (before
        the outbox's floor, or the outbox is full)."""
        if self.sink is not None:
            pending = self.pending
            if not pending:
                direct.note(self)  # the batch's first frame for this connection
            pending.append(frame)
        elif not self.outbox.push(seq, frame):
            return False
        self.last_sent = seq
        return True

    def missed(self, seq: int) -> None:
        """The hub read back record ``seq``, which this connection never got though it has
        later ones (``Hub._repair``): unless it is at or before the cursor it started after,
        end the connection so the client resumes from just before it."""
        floor = self.outbox.floor
        if floor is None or seq > floor:
            self.cut(rewind=seq - 1)

    def cut(self, *, rewind: int | None = None) -> None:
        """End the connection with ``overflow`` (the client resumes from its last id, or from
        ``rewind``); nothing more is written to its socket directly, so that frame is the last."""
        self.sink = None
        if rewind is not None:
            self.rewind = rewind if self.rewind is None else min(self.rewind, rewind)
        self.outbox.cut()

    # -- the coalescer (direct writes) ---------------------------------------------------

    def take_pending(self) -> list[bytes]:
        """The frames queued for the socket since the last flush; none are left queued."""
        frames, self.pending = self.pending, []
        return frames

    def mark_written(self, now: float) -> None:
        """Frames reached the socket at ``now``: the writer's next heartbeat counts from it."""
        self.written_at = now

    def lost_sink(self, *, gone: bool) -> None:
        """A direct write was refused: the client left, or it fell behind (``overflow``)."""
        if gone:
            self.sink = None
            self.gone = True
            self.outbox.ready.set()
        else:
            self.cut()

    # -- the connection's writer ---------------------------------------------------------

    def go_direct(self, sink: DirectSink) -> None:
        """Caught up: from now on the hub's records go straight to ``sink``."""
        self.sink = sink

    def take_back_sink(self) -> None:
        """The writer sends what follows itself (its final frame, the server's closing chunk):
        nothing more is written to the socket directly, and frames still pending are dropped
        at the flush."""
        self.sink = None

    def wake_by(self, when: float) -> None:
        """The writer wants waking at ``when`` (time.monotonic()) even without records."""
        self.wake_at = when

    def set_client_probe(self, client_gone: Callable[[], bool]) -> None:
        """How the ticker asks whether the client left (a quiet stream writes nothing that
        could fail)."""
        self.client_gone = client_gone

    # -- filters -------------------------------------------------------------------------

    def accepts(self, view: FilterView) -> bool:
        return record_accepted(view, self.min_level, self.query, self.where)
