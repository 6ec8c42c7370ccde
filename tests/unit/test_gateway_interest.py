"""The interest table's bookkeeping: which patterns a subject falls under, and the per-subject
sequence chain that shows a record never arrived."""

from __future__ import annotations

from logstream.services.gateway.interest import InterestTable
from logstream.services.gateway.live import MemoryLiveFeed
from logstream.services.gateway.outbox import Outbox
from logstream.services.gateway.source import MemoryLogSource, StoredMessage
from logstream.services.gateway.subjects import generalisations
from logstream.services.gateway.subscription import Subscription
from logstream.shared.channels import parse_pattern


def subscription(*channels: str) -> Subscription:
    return Subscription("c", "u", tuple(parse_pattern(c) for c in channels), Outbox(1 << 16))


def live(seq: int, subject: str, previous: int) -> StoredMessage:
    return StoredMessage(seq, subject, b"{}", previous)


def test_a_subject_falls_under_every_wildcard_that_could_name_it():
    found = set(generalisations("logs.etl.ws1.wf1"))
    assert {"logs.*.ws1.wf1", "logs.etl.*.wf1", "logs.etl.ws1.*", "logs.*.*.*"} <= found
    assert len(found) == 7 and "logs.etl.ws1.wf1" not in found
    assert set(generalisations("logs.etl.ws1")) == {"logs.*.ws1", "logs.etl.*", "logs.*.*"}


async def test_a_record_whose_previous_was_taken_shows_no_gap():
    table = InterestTable(MemoryLogSource(), MemoryLiveFeed())
    await table.add(subscription("logs:etl:ws1:a"))  # settled at the stream's last seq, 0
    assert table.note(live(1, "logs.etl.ws1.a", 0)) is None
    assert table.note(live(5, "logs.etl.ws1.a", 1)) is None
    await table.close()


async def test_a_record_whose_previous_never_came_shows_where_the_gap_starts():
    table = InterestTable(MemoryLogSource(), MemoryLiveFeed())
    await table.add(subscription("logs:etl:ws1:*"))
    assert table.note(live(3, "logs.etl.ws1.a", 0)) is None
    assert table.note(live(4, "logs.etl.ws1.b", 0)) is None
    assert table.note(live(9, "logs.etl.ws1.a", 7)) == 3  # 7 (after 3) never arrived
    assert table.note(live(10, "logs.etl.ws1.b", 4)) is None  # b's own chain is whole
    await table.close()


async def test_records_from_before_a_pattern_was_settled_are_not_a_gap():
    source = MemoryLogSource()
    for _ in range(10):
        await source.publish("logs.etl.ws1.a", b"{}")
    table = InterestTable(source, MemoryLiveFeed())
    await table.add(subscription("logs:etl:ws1:a"))  # settled at 10: 1..10 are not owed
    assert table.note(live(11, "logs.etl.ws1.a", 10)) is None
    await table.close()
