"""What the formats of other tools (OTLP, the Loki push API) share on their way to records:
their nanosecond times, their level names, and the ids that make a retried request idempotent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

from logstream.shared.records import LEVELS

__all__ = ["id_maker", "level_named", "timestamp_from_nanos"]

# Level names other tools use, beside Logstream's own (``warning`` is already a record alias).
_NAMES = {name: name for name in LEVELS} | {
    "warning": "warn",
    "critical": "fatal",
    "crit": "fatal",
    "err": "error",
    "dbg": "debug",
    "information": "info",
}


def level_named(text: str | None) -> str:
    """A level from another tool's name for it; info for none or a name nobody here knows
    (another tool's unknown level is not a reason to refuse its record)."""
    return _NAMES.get((text or "").strip().lower(), "info")


def timestamp_from_nanos(nanos: int) -> str | None:
    """Nanoseconds since the epoch as RFC 3339 (None for 0: unset). A time past any calendar
    is passed on as its digits, for the record check to name."""
    if nanos <= 0:
        return None
    seconds, fraction = divmod(nanos, 1_000_000_000)
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return str(nanos)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:09d}Z"


def id_maker(kind: str, body: bytes) -> Callable[[int], str]:
    """Record ids for the entries of one request: its kind, a hash of its (decompressed) body
    and the entry's place, so the same request sent again makes the same ids."""
    digest = hashlib.sha256(body).hexdigest()[:24]
    return lambda index: f"{kind}-{digest}-{index}"
