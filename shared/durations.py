"""Durations as people write them: ``30s``, ``10m``, ``2h``, ``7d`` (or a bare number of seconds)."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
# Callers turn durations into timedeltas; past this (and at infinity) that conversion fails.
_MAX_SECONDS = timedelta.max.total_seconds()


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ``ValueError`` with a message a person can act on."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text[:40]!r} is not a duration such as 30s, 10m, 2h or 7d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not seconds < _MAX_SECONDS:
        raise ValueError(f"{text[:40]!r} is too long a duration")
    return seconds
