"""Consumer filters for a set of wanted subjects.

JetStream refuses a consumer whose filter subjects overlap, and a consumer with thousands of
filters is slow to create. ``covering_filters`` turns the subjects the hub's connections want
into a set of pairwise disjoint filters that together match at least all of them; the hub's own
index decides who gets a record, so a filter that matches a little more costs only bandwidth.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MAX_FILTERS", "covering_filters", "covers", "generalisations", "overlaps"]

# Above this many filters, collapse per workspace, then to everything: consumer creation time
# grows with the filter count and a rebuild happens on the request path.
MAX_FILTERS = 256


def covers(wide: str, narrow: str) -> bool:
    """Every subject ``narrow`` matches, ``wide`` matches too (tokens, ``*`` and ``>``)."""
    a, b = wide.split("."), narrow.split(".")
    for index, token in enumerate(a):
        if token == ">":
            return len(b) > index
        if index >= len(b) or b[index] == ">":
            return False
        if token != "*" and token != b[index]:
            return False
    return len(a) == len(b)


def overlaps(x: str, y: str) -> bool:
    """Some subject matches both."""
    a, b = x.split("."), y.split(".")
    for index in range(min(len(a), len(b))):
        if a[index] == ">" or b[index] == ">":
            return True
        if a[index] != b[index] and "*" not in (a[index], b[index]):
            return False
    return len(a) == len(b)


def _join(x: str, y: str) -> str:
    return ".".join(s if s == t else "*" for s, t in zip(x.split("."), y.split(".")))


def generalisations(subject: str) -> Iterable[str]:
    """``subject`` with each non-empty set of its segments (after ``logs``) made ``*``: the
    wildcard patterns that match it."""
    head, *rest = subject.split(".")
    for mask in range(1, 1 << len(rest)):
        yield ".".join([head, *("*" if mask >> i & 1 else t for i, t in enumerate(rest))])


def _without_covered(items: set[str]) -> set[str]:
    if "logs.>" in items:
        return {"logs.>"}
    return {s for s in items if not any(g != s and g in items for g in generalisations(s))}


def _disjoint(subjects: Iterable[str]) -> list[str]:
    """Drop subjects another one covers, then merge overlapping wildcards until none overlap.

    Two concrete subjects never overlap, and a concrete subject that overlaps a wildcard is
    covered by it, so only wildcard pairs need merging: linear in the concrete subjects.
    """
    items = _without_covered(set(subjects))
    while True:
        wild = sorted(s for s in items if "*" in s.split(".") or ">" in s)
        pair = next(
            ((x, y) for i, x in enumerate(wild) for y in wild[i + 1 :] if overlaps(x, y)), None
        )
        if pair is None:
            return sorted(items)
        items = _without_covered((items - set(pair)) | {_join(*pair)})


def covering_filters(subjects: Iterable[str]) -> list[str]:
    filters = _disjoint(subjects)
    if len(filters) > MAX_FILTERS:
        filters = _disjoint(
            ".".join(f.split(".")[:3] + ["*"] * (len(f.split(".")) > 3)) for f in filters
        )
    if len(filters) > MAX_FILTERS:
        filters = ["logs.>"]
    return filters
