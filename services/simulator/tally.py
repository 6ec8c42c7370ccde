"""What a simulation run did, counted honestly: sent, accepted, failed, and why.

Every record handed to a transport ends in exactly one bucket: accepted (202) or failed (its
final status, ``transport`` when ingest never answered, ``interrupted`` when the run stopped
before it did). Each distinct failure (status, code, server message) is written to stderr once,
as it happens; the summary goes to stdout at the end.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["Tally", "stderr_line"]

# A failure's details (e.g. the refused channels of a 403) are shown, but not a 1,000-item list.
MAX_DETAILS_CHARS = 300
_ENCODE = msgspec.json.Encoder()


def stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Tally:
    def __init__(self, *, report: Callable[[str], None] = stderr_line) -> None:
        self.report = report
        self.sent = self.accepted = self.failed = self.retries = 0
        self.by_status: Counter[str] = Counter()
        self.aborted: str | None = None
        self.interrupted = False
        self.started = time.monotonic()
        self._seen: set[tuple[str, str, str]] = set()

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.aborted is None

    def accept(self, count: int) -> None:
        self.accepted += count
        self.by_status["202"] += count

    def fail(
        self, count: int, status: str, code: str, message: str, details: list[Any] | None = None
    ) -> None:
        self.failed += count
        self.by_status[status] += count
        key = (status, code, message)
        if key not in self._seen:
            self._seen.add(key)
            self.report("simulate: failed: " + _describe(status, code, message, details))

    def retry(
        self, status: str, code: str, message: str, delay: float, attempt: int, attempts: int
    ) -> None:
        self.retries += 1
        key = ("retry " + status, code, message)
        if key not in self._seen:
            self._seen.add(key)
            self.report(
                f"simulate: retrying in {delay:.1f} s (attempt {attempt + 1} of "
                f"{attempts}, same ids) after " + _describe(status, code, message, None)
            )

    def abort(self, reason: str) -> None:
        """Stop the run: ingest cannot be reached. Said once, not again for each batch."""
        if self.aborted is None:
            self.aborted = reason
            self._seen.add(("transport", "", reason))
            self.report(f"simulate: giving up: {reason}")

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.accepted / elapsed if elapsed > 0 else 0.0

    def progress_line(self) -> str:
        return (
            f"simulate: progress: sent {self.sent:,}, accepted {self.accepted:,}, "
            f"failed {self.failed:,} ({self.rate():.1f} records/s)"
        )

    def summary_lines(self, *, via: str, run_id: str, seed: int) -> list[str]:
        elapsed = time.monotonic() - self.started
        state = " (interrupted)" if self.interrupted else ""
        statuses = ", ".join(
            f"{status}={count:,}" for status, count in sorted(self.by_status.items())
        )
        lines = [
            f"simulate: sent {self.sent:,}, accepted {self.accepted:,}, failed {self.failed:,} "
            f"in {elapsed:.1f} s via {via}{state} (run {run_id}, seed {seed})",
            f"simulate: by status: {statuses or 'none'}; retried requests: {self.retries:,}",
        ]
        if self.aborted:
            lines.append(f"simulate: gave up: {self.aborted}")
        return lines


def _describe(status: str, code: str, message: str, details: list[Any] | None) -> str:
    text = status + (f" {code}" if code else "") + (f": {message}" if message else "")
    if details:
        shown = _ENCODE.encode(details).decode(errors="replace")
        if len(shown) > MAX_DETAILS_CHARS:
            shown = shown[: MAX_DETAILS_CHARS - 3] + "..."
        text += f" details={shown}"
    return text
