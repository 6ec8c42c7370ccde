"""``GET /api/logs/history``: a page of the past, newest last, for scrolling back
(docs/reference/stream.md#history).

A page is the ``limit`` newest records of the channels before ``before`` that pass the filters.
It is found without reading the stream up to it: ``logstream.services.gateway.replay``'s
counting search finds the seq from which the channels hold ``limit`` records up to
``before - 1`` (each step a count the broker answers from its per-subject state), and only that
range is read. With filters a read range may match fewer; the search then goes one range
further back, until the page is full, the stream's start is reached, or ``SCAN_BUDGET`` records
were read, when the page is answered short with ``next_before`` set so the client asks on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import aclosing

from logstream.services.gateway.replay import ReplayStalled, read_range, tail_range
from logstream.services.gateway.source import LogSource, StoredMessage, subject_matches
from logstream.services.gateway.stream_request import HistoryRequest
from logstream.services.gateway.subjects import covering_filters
from logstream.services.gateway.subscription import FILTER_VIEW, record_accepted
from logstream.shared.channels import to_subject
from logstream.shared.errors import BrokerUnavailable
from logstream.shared.records import delivered_json

__all__ = ["SCAN_BUDGET", "HistoryPage", "read_history"]

# Records one request reads at most while looking for filtered matches: a filter that matches
# rarely costs the client more requests, never one long one.
SCAN_BUDGET = 10_000
# Records read per range while filtering: fewer ranges for a filter that matches little.
FILTERED_RANGE = 1_000


class HistoryPage:
    """The records of a page (each the delivered JSON, with its ``seq``), ascending."""

    __slots__ = ("next_before", "records")

    def __init__(self, records: list[bytes], next_before: int | None) -> None:
        self.records = records
        self.next_before = next_before

    def to_json(self) -> bytes:
        before = "null" if self.next_before is None else str(self.next_before)
        return (
            b'{"records":[' + b",".join(self.records) + b'],"next_before":' + before.encode() + b"}"
        )


async def read_history(
    source: LogSource,
    request: HistoryRequest,
    on_read: Callable[[int], None] = lambda count: None,
) -> HistoryPage:
    subjects = sorted({to_subject(pattern) for pattern in request.patterns})
    # The broker is asked with at most MAX_FILTERS filters, which may cover more than was asked
    # for (logstream.services.gateway.subjects): what they add is left out here.
    filters = covering_filters(subjects)
    wider = sorted(filters) != subjects
    first, last = await source.bounds()
    end = last if request.before is None else min(request.before - 1, last)
    filtered = request.min_level > 0 or bool(request.query) or request.where is not None
    query = request.query.lower() if request.query else None
    kept: list[StoredMessage] = []  # the newest matches, ascending
    scanned = 0
    while end >= first:
        wanted = request.limit - len(kept)
        span = min(max(wanted, FILTERED_RANGE), SCAN_BUDGET - scanned) if filtered else wanted
        start, held = await tail_range(source, filters, span, first, end)
        if start > end:
            break
        found = await _read_range(source, filters, start, end, held)
        on_read(len(found))
        scanned += len(found)
        if wider:
            found = [m for m in found if any(subject_matches(s, m.subject) for s in subjects)]
        if filtered:
            found = [
                message
                for message in found
                if record_accepted(
                    FILTER_VIEW.decode(message.data), request.min_level, query, request.where
                )
            ]
        kept[:0] = found
        if len(kept) >= request.limit:
            page = kept[-request.limit :]
            older = len(kept) > request.limit or start > first
            return _page(page, page[0].seq if older else None)
        if start <= first:
            break  # the channels hold nothing older
        end = start - 1
        if scanned >= SCAN_BUDGET:
            return _page(kept, start)
    return _page(kept, None)


def _page(kept: list[StoredMessage], next_before: int | None) -> HistoryPage:
    return HistoryPage([delivered_json(message.seq, message.data) for message in kept], next_before)


async def _read_range(
    source: LogSource, filters: Sequence[str], start: int, end: int, count: int
) -> list[StoredMessage]:
    """The ``count`` records of ``filters`` in ``[start, end]`` (counted), in order."""
    found: list[StoredMessage] = []
    batches = read_range(source, filters, start, end, count, chunk=max(count, 1))
    try:
        async with aclosing(batches):
            async for batch in batches:
                found.extend(batch)
    except ReplayStalled:
        raise BrokerUnavailable(
            f"the broker stopped answering with {count - len(found)} records to read; retry"
        ) from None
    return found
