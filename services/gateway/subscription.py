"""One connection's interest in the log, as the hub sees it: its channels, its filters, where
its records go (its outbox, or straight to its socket once caught up), and when its writer
wants waking."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from logstream.services.gateway.outbox import Outbox
from logstream.services.gateway.source import StoredMessage
from logstream.shared.channels import ChannelPattern, to_subject
from logstream.shared.records import delivered_json, level_rank
from logstream.shared.sse import sse_frame
from logstream.shared.uvicorn_adapter import DirectSink

__all__ = ["FILTER_VIEW", "Subscription", "encode_record"]


class FilterView(msgspec.Struct):
    level: str = "info"
    message: str = ""


FILTER_VIEW = msgspec.json.Decoder(FilterView)


def encode_record(message: StoredMessage) -> bytes:
    """A stored record's SSE frame: built once, the same bytes for every connection."""
    return sse_frame(id=message.seq, event="log", data=delivered_json(message.seq, message.data))


@dataclass(eq=False, slots=True)
class Subscription:
    """One connection's interest: its channels, optional filters, and its outbox."""

    connection_id: str
    user_id: str
    patterns: tuple[ChannelPattern, ...]
    outbox: Outbox
    min_level: int = 0
    query: str | None = None
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
        self.filtered = self.min_level > 0 or bool(self.query)

    def lost_sink(self, *, gone: bool) -> None:
        """A direct write was refused: the client left, or it fell behind (``overflow``)."""
        if gone:
            self.sink = None
            self.gone = True
            self.outbox.ready.set()
        else:
            self.cut()

    def cut(self, *, rewind: int | None = None) -> None:
        """End the connection with ``overflow`` (the client resumes from its last id, or from
        ``rewind``); nothing more is written to its socket directly, so that frame is the last."""
        self.sink = None
        if rewind is not None:
            self.rewind = rewind if self.rewind is None else min(self.rewind, rewind)
        self.outbox.cut()

    def accepts(self, view: FilterView) -> bool:
        if level_rank(view.level) < self.min_level:
            return False
        return not self.query or self.query in view.message.lower()
