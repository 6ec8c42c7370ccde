"""The soak's ledger: every record ingest acknowledged (202), by stream sequence and channel,
and the comparisons of what readers received against it.

The soak publishes one request at a time and retries a refused request with the same record
ids until it is acknowledged (JetStream's duplicate window stores each id once), so every
stored record with a sequence up to ``max_seq`` is in the ledger: a reader that received a
record with sequence ``s`` must also have received every record of its channels acknowledged
with a sequence below ``s`` (after its starting cursor).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Comparison", "Ledger"]


@dataclass
class Comparison:
    """What a reader got against what the ledger says it should have got, over one window."""

    expected: int = 0
    received: int = 0
    missing: int = 0
    extra: int = 0  # received, but not an acknowledged record of its channels in the window
    repeated: int = 0
    out_of_order: int = 0
    first_missing: list[int] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return not (self.missing or self.extra or self.repeated or self.out_of_order)

    def add(self, other: Comparison) -> None:
        self.expected += other.expected
        self.received += other.received
        self.missing += other.missing
        self.extra += other.extra
        self.repeated += other.repeated
        self.out_of_order += other.out_of_order
        self.first_missing = (self.first_missing + other.first_missing)[:10]


class Ledger:
    def __init__(self) -> None:
        self.by_channel: dict[str, list[int]] = {}  # acknowledged seqs, ascending
        self.all_seqs: list[int] = []  # ascending
        self.record_of: dict[int, int] = {}  # seq -> the record's number (its id is soak-<n>)
        self.channel_of: dict[int, str] = {}
        self.acknowledged = 0  # records answered 202 (a retried record once)
        self.max_seq = 0
        self.repeated_acks = 0  # two records acknowledged with one seq (never expected)

    def add(self, channel: str, number: int, seq: int) -> None:
        self.acknowledged += 1
        known = self.record_of.get(seq)
        if known is not None:  # one seq for two records: only a repeated id could do that
            self.repeated_acks += known != number
            return
        self.record_of[seq] = number
        self.channel_of[seq] = channel
        bisect.insort(self.by_channel.setdefault(channel, []), seq)
        bisect.insort(self.all_seqs, seq)
        self.max_seq = max(self.max_seq, seq)

    def expected(self, channels: Iterable[str] | None, after: int, upto: int) -> list[int]:
        """Acknowledged seqs of ``channels`` (None: every channel) in ``(after, upto]``."""
        if channels is None:
            lists = [self.all_seqs]
        else:
            lists = [self.by_channel.get(channel, []) for channel in channels]
        found: list[int] = []
        for seqs in lists:
            found.extend(seqs[bisect.bisect_right(seqs, after) : bisect.bisect_right(seqs, upto)])
        found.sort()
        return found

    def compare(
        self, channels: Iterable[str] | None, after: int, received: list[int], upto: int
    ) -> Comparison:
        """``received`` (in the order it arrived) against the ledger over ``(after, upto]``."""
        window = [seq for seq in received if after < seq <= upto]
        result = Comparison(received=len(window))
        last = after
        for seq in window:
            if seq <= last:
                result.out_of_order += 1
            last = max(last, seq)
        got = set(window)
        result.repeated = len(window) - len(got)
        wanted = self.expected(channels, after, upto)
        result.expected = len(wanted)
        wanted_set = set(wanted)
        missing = [seq for seq in wanted if seq not in got]
        result.missing = len(missing)
        result.first_missing = missing[:10]
        result.extra = len(got - wanted_set)
        return result
