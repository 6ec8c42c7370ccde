"""``LogstreamHandler``: the standard ``logging`` module, published to a channel (docs/clients.md).

::

    handler = LogstreamHandler("logs:etl:workspace123:workflow456", token="l5-etl-token")
    logging.getLogger("etl").addHandler(handler)
    log.info("loaded %d rows", 1200, extra={"table": "orders"})

Each ``LogRecord`` becomes one record:

- ``message``: ``record.getMessage()``, the message with its arguments, without the handler's
  formatter (time, level and logger travel in their own fields); cut to 64 KiB if longer.
- ``level``: DEBUG -> debug, INFO -> info, WARNING -> warn, ERROR -> error, CRITICAL -> fatal,
  anything below DEBUG -> trace; custom levels go to the nearest standard level below them.
- ``source``: the logger's name. ``timestamp``: when the record was made (``record.created``).
- ``fields``: every ``extra`` value (the attributes a plain ``LogRecord`` does not have), made
  JSON-safe: strings, numbers, booleans, None, lists and dicts of them as they are; anything
  else as its ``repr()``.
- With ``exc_info`` (``log.exception(...)``): ``fields["exception"] = {"type", "message"}`` and
  ``fields["stack"]``, the traceback as ``logging`` prints it; with ``stack_info=True``:
  ``fields["stack_info"]``. These are the names the simulator uses and the Logs page shows.
  Over the 16 KiB that ``fields`` may take, the stack keeps its head and its end (where the
  error is) and the largest extras are shortened.

``emit`` never raises or waits: problems go to ``handleError`` (stderr). When the queue is full
(100,000 records by default) the oldest queued record is dropped to make room (the
publisher's ``drop_oldest`` policy) and counted in ``dropped``, reported once per overflow; a
shared publisher with the ``block`` or ``raise`` policy drops the new record instead. The handler's own publisher retries a batch until it is
stored: an absent or broken ingest is one line on stderr when it stops answering and one when
it answers again, never one per record, and the records logged meanwhile wait in the queue.
Records logged on a publisher's
thread (its HTTP or NATS client) are not published, so handlers cannot feed on each other.
``flush()`` waits until every record is stored; ``close()`` flushes and, when the handler made
its own publisher, closes it.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from logstream.publisher import LogPublisher, PublishFailed, PublishQueueFull, in_sender_thread
from logstream.shared.channels import DEFAULT_SERVICES, parse_channel
from logstream.shared.errors import InvalidChannel, LogstreamError
from logstream.shared.records import MAX_FIELDS_BYTES, MAX_MESSAGE_BYTES, format_time

__all__ = ["FLUSH_TIMEOUT_S", "LogstreamHandler", "fields_of", "json_safe", "level_of", "shorten"]

# logging.shutdown() flushes every handler at exit: long enough to ride out a short ingest
# hiccup, short enough that a dead ingest does not hold the program's exit for minutes.
FLUSH_TIMEOUT_S = 10.0
# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# Nested extras deeper than this are a data structure, not a log field: shown by repr().
_MAX_DEPTH = 6
# Shortening aims this far under MAX_FIELDS_BYTES: JSON escapes (a newline is 2 bytes) make
# the encoded text longer than the text itself.
_FIELDS_SLACK = 512
_CUT = "\n... [{} characters cut] ...\n"
_ENCODE = msgspec.json.encode
_THRESHOLDS = (
    (logging.CRITICAL, "fatal"),
    (logging.ERROR, "error"),
    (logging.WARNING, "warn"),
    (logging.INFO, "info"),
    (logging.DEBUG, "debug"),
)


def level_of(levelno: int) -> str:
    """The contract's level for a ``logging`` level number."""
    return next((name for floor, name in _THRESHOLDS if levelno >= floor), "trace")


def json_safe(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if depth < _MAX_DEPTH and isinstance(value, (list, tuple)):
        return [json_safe(item, depth + 1) for item in value]
    if depth < _MAX_DEPTH and isinstance(value, dict):
        return {
            key if isinstance(key, str) else repr(key): json_safe(item, depth + 1)
            for key, item in value.items()
        }
    return repr(value)


def shorten(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` UTF-8 bytes: its head and its end, with the cut marked."""
    if len(text.encode()) <= limit:
        return text
    keep = max(0, limit - len(_CUT.format(len(text))) - 8)
    head, tail = text[: keep // 4], text[len(text) - (keep - keep // 4) :]
    while len((head + tail).encode()) > keep:  # multi-byte characters: trim until it fits
        head, tail = head[: len(head) * 9 // 10], tail[len(tail) // 10 :]
    return head + _CUT.format(len(text) - len(head) - len(tail)) + tail


def _fit(fields: dict[str, Any]) -> dict[str, Any]:
    """Shorten the largest values alike until ``fields`` encodes within the contract's limit."""
    for _ in range(4):  # JSON escapes can leave it a little over: go again
        total = len(_ENCODE(fields))
        if total <= MAX_FIELDS_BYTES:
            return fields
        sizes = {key: len(_ENCODE(value)) for key, value in fields.items()}
        budget = MAX_FIELDS_BYTES - _FIELDS_SLACK - (total - sum(sizes.values()))
        cap = _fair_share(sorted(sizes.values()), budget)
        for key, size in sizes.items():
            if size > cap:
                text = fields[key] if isinstance(fields[key], str) else repr(fields[key])
                fields[key] = shorten(text, max(64, cap))
    return {"fields_dropped": f"the extras did not fit in {MAX_FIELDS_BYTES} bytes"}


def _fair_share(ascending: list[int], budget: int) -> int:
    """The largest cap with ``sum(min(size, cap)) <= budget``: small values stay whole."""
    for index, size in enumerate(ascending):
        share = budget // (len(ascending) - index)
        if size > share:
            return share
        budget -= size
    return ascending[-1] if ascending else budget


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    fields = {
        key: json_safe(value)
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }
    if record.exc_info and record.exc_info[0] is not None:
        kind, error, trace = record.exc_info
        fields["exception"] = {"type": kind.__qualname__, "message": str(error)}
        fields["stack"] = "".join(traceback.format_exception(kind, error, trace)).rstrip()
    elif record.exc_text:
        fields["stack"] = record.exc_text
    if record.stack_info:
        fields["stack_info"] = record.stack_info
    return _fit(fields)


class LogstreamHandler(logging.Handler):
    """A ``logging.Handler`` that publishes each record to one channel; see the module doc."""

    def __init__(
        self,
        channel: str,
        *,
        token: str | None = None,
        url: str | None = None,
        transport: str = "http",
        publisher: LogPublisher | None = None,
        level: int = logging.NOTSET,
        services: Iterable[str] = DEFAULT_SERVICES,
    ) -> None:
        super().__init__(level)
        try:
            self.channel = str(parse_channel(channel, services))
        except InvalidChannel as exc:
            raise ValueError(exc.message) from None
        self._owns = publisher is None  # a publisher passed in is shared: close() flushes it
        if publisher is None:
            if not token:
                raise ValueError("token is required (or pass publisher=)")
            publisher = LogPublisher(
                token=token,
                url=url,
                transport=transport,
                services=services,
                max_attempts=None,
                on_outage=self._report_outage,
            )
        self.publisher = publisher
        self._refused = 0  # records a shared "block"/"raise" publisher would not queue
        self._overflowing = False

    @property
    def dropped(self) -> int:
        """Records given up because the queue was full."""
        return self._refused + getattr(self.publisher, "dropped", 0)

    def _report_outage(self, problem: PublishFailed | None) -> None:
        where = f"LogstreamHandler({self.channel}): ingest at {self.publisher.url}"
        if problem is None:
            _report(f"{where} answers again; sending the records kept meanwhile")
        else:
            why = f"{problem.status or problem.error}: {problem.server_message}"
            _report(f"{where} is not answering ({why}); records are kept and sent when it is back")

    def emit(self, record: logging.LogRecord) -> None:
        if in_sender_thread():
            return  # a publisher's own HTTP/NATS client logging: publishing it would loop
        try:
            message = shorten(record.getMessage(), MAX_MESSAGE_BYTES)
            dropped_before = self.dropped
            self.publisher.publish(
                self.channel,
                message,
                level_of(record.levelno),
                source=record.name[:128],
                timestamp=format_time_of(record),
                fields=fields_of(record),
            )
            if self.dropped > dropped_before:
                self._overflow(
                    f"the queue is full: the oldest records are being dropped "
                    f"({self.dropped} so far)"
                )
            else:
                self._overflowing = False
        except PublishQueueFull as exc:
            self._refused += 1
            self._overflow(exc.message)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _overflow(self, why: str) -> None:
        """Report a full queue once per overflow, not once per record."""
        if not self._overflowing:
            self._overflowing = True
            _report(f"LogstreamHandler({self.channel}): {why}")

    def flush(self) -> None:
        try:
            self.publisher.flush(FLUSH_TIMEOUT_S)
        except LogstreamError as exc:
            _report(f"LogstreamHandler({self.channel}): {exc.message}")

    def close(self) -> None:
        try:
            if self._owns:
                try:
                    self.publisher.close(FLUSH_TIMEOUT_S)
                except LogstreamError as exc:
                    _report(f"LogstreamHandler({self.channel}): {exc.message}")
            else:
                self.flush()
        finally:
            super().close()


def format_time_of(record: logging.LogRecord) -> str:
    return format_time(datetime.fromtimestamp(record.created, UTC))


def _report(text: str) -> None:
    """Like ``Handler.handleError``: a line on stderr, unless logging is told to keep quiet."""
    if logging.raiseExceptions and sys.stderr is not None:
        try:
            print(text, file=sys.stderr)
        except Exception:  # stderr closed at exit: nothing more we can do
            pass
