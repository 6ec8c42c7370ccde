"""Waiting in tests for a condition that can only be checked by asking (stats, logs, ports).

One helper in two forms that share the deadline, the interval and the failure message:

- ``await wait_until(predicate, what)`` in ``async def`` tests: the event loop keeps running
  between checks (and while an awaited check runs), so streams, clients and tasks of the test
  go on. ``predicate`` may be a plain function or a coroutine function (or any callable
  returning an awaitable, such as ``lambda: responds_with(url, 200)``). A plain predicate runs
  on the loop's thread, so it should be quick (reading a file, a counter); one that does I/O
  is better a coroutine function.
- ``wait_until_blocking(predicate, what)`` in plain ``def`` tests and synchronous helpers; the
  predicate must be a plain function.

Both call ``predicate`` until it returns something truthy and return that value. The deadline
(``timeout``, generous by default) only bounds a failing test: a passing one moves on as soon as
the condition holds. At the deadline they raise ``WaitTimeout`` (an ``AssertionError``) naming
``what`` was awaited and the last value the predicate returned, or the last exception it raised.
An exception from the predicate ends the wait at once unless its type is in ``retry_on``
(e.g. ``httpx.TransportError`` while a service starts): those count as "not yet".

Where the awaited thing is an event the test can hold (an ``asyncio.Event``, a task, a stream's
next frame, a process's exit), await that instead of polling.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

# Bounds a failing wait only: a loaded 2-core machine running the whole suite can be slow.
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_INTERVAL_S = 0.05
# How much of the predicate's last value or exception the failure message quotes.
_QUOTE_CHARS = 500


class WaitTimeout(AssertionError):
    """A condition not met by its deadline: ``what`` was awaited, and ``last`` seen."""

    def __init__(self, message: str, *, what: str, last: object) -> None:
        super().__init__(message)
        self.what, self.last = what, last


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[:_QUOTE_CHARS] + "...(cut)"


class _Poll:
    """The state both forms share: the deadline, the pause between checks, what was last seen,
    and the failure that names it all."""

    def __init__(
        self,
        what: str,
        timeout: float,
        interval: float,
        retry_on: type[BaseException] | tuple[type[BaseException], ...],
    ) -> None:
        if not what or not what.strip():
            raise ValueError("say what is awaited: wait_until(predicate, what, ...)")
        if timeout <= 0 or interval <= 0:
            raise ValueError(f"timeout ({timeout}) and interval ({interval}) must be positive")
        self.what, self.timeout, self.interval = what, timeout, interval
        self.retry_on = retry_on if isinstance(retry_on, tuple) else (retry_on,)
        self.deadline = time.monotonic() + timeout
        self.checks = 0
        self.last: object = None
        self.last_error: BaseException | None = None
        self.seen = "no check finished"

    def got(self, value: object) -> None:
        self.checks += 1
        self.last, self.last_error = value, None
        self.seen = f"last value: {_quote(value)}"

    def raised(self, error: BaseException) -> None:
        self.checks += 1
        self.last, self.last_error = error, error
        self.seen = f"last check raised {_quote(error)}"

    def budget(self) -> float:
        """How long an awaited check may run: until the deadline, but at least one interval."""
        return max(self.deadline - time.monotonic(), self.interval)

    def pause(self) -> float:
        """Seconds to sleep before the next check; raises ``WaitTimeout`` once past the deadline
        (so the last check is made at the deadline, not one interval before it)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.failure() from self.last_error
        return min(self.interval, left)

    def failure(self, note: str = "") -> WaitTimeout:
        checks = f"{self.checks} check{'s' if self.checks != 1 else ''}"
        return WaitTimeout(
            f"not within {self.timeout:g}s: {self.what} ({checks}; {self.seen}{note})",
            what=self.what,
            last=self.last,
        )


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]],
    what: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> Any:
    """Await ``predicate()`` until it is truthy and return it; the loop runs between checks.

    ``what`` says what is awaited, as the failure will read: "not within 30s: <what> (...)".
    An awaited check still running at the deadline is cancelled and the wait fails.
    """
    poll = _Poll(what, timeout, interval, retry_on)
    while True:
        overran = False
        try:
            value = predicate()
            if inspect.isawaitable(value):
                bound = asyncio.timeout(poll.budget())
                try:
                    async with bound:
                        value = await value
                except TimeoutError:
                    if not bound.expired():
                        raise  # the predicate's own timeout, not the deadline
                    overran = True
        except poll.retry_on as error:
            poll.raised(error)
        else:
            if overran:
                raise poll.failure("; the last check was still running at the deadline")
            if value:
                return value
            poll.got(value)
        await asyncio.sleep(poll.pause())


def wait_until_blocking(
    predicate: Callable[[], Any],
    what: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> Any:
    """``wait_until`` for synchronous code: sleeps the calling thread between checks.

    Not for ``async def`` tests (it would stop their event loop): ``await wait_until`` there.
    """
    poll = _Poll(what, timeout, interval, retry_on)
    while True:
        try:
            value = predicate()
        except poll.retry_on as error:
            poll.raised(error)
        else:
            if inspect.isawaitable(value):
                if inspect.iscoroutine(value):
                    value.close()
                raise TypeError(f"the predicate for {what!r} is async: `await wait_until(...)`")
            if value:
                return value
            poll.got(value)
        time.sleep(poll.pause())
