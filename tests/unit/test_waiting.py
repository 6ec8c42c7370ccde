"""The tests' one polling helper (tests.support.waiting): both forms, the deadline, the message."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.waiting import WaitTimeout, wait_until, wait_until_blocking


async def test_an_async_wait_returns_the_first_truthy_value_and_the_loop_keeps_running():
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(len(ticks))
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        assert await wait_until(lambda: len(ticks) >= 5 and ticks[:2], "five ticks") == [0, 1]
    finally:
        task.cancel()


async def test_an_async_wait_awaits_a_coroutine_predicate():
    calls = []

    async def third_call() -> str | None:
        calls.append(1)
        return "yes" if len(calls) == 3 else None

    assert await wait_until(third_call, "the third call", interval=0.01) == "yes"


async def test_a_failure_names_what_was_awaited_and_the_last_value():
    with pytest.raises(
        WaitTimeout, match=r"not within 0.2s: the moon \(\d+ checks; last value: 0\)"
    ):
        await wait_until(lambda: 0, "the moon", timeout=0.2)


async def test_an_exception_ends_the_wait_unless_it_is_retried_and_then_it_is_quoted():
    def refused():
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        await wait_until(refused, "a connection")
    with pytest.raises(
        WaitTimeout, match=r"last check raised ConnectionError\('refused'\)"
    ) as late:
        await wait_until(refused, "a connection", timeout=0.2, retry_on=ConnectionError)
    assert isinstance(late.value.__cause__, ConnectionError)


async def test_an_awaited_check_still_running_at_the_deadline_is_cut_off():
    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="still running at the deadline"):
        await wait_until(hangs, "a check that hangs", timeout=0.2)
    assert time.monotonic() - started < 5


def test_the_blocking_form_shares_the_deadline_and_the_message():
    values = iter([None, [], "done"])
    assert wait_until_blocking(lambda: next(values), "the third value", interval=0.01) == "done"
    with pytest.raises(
        WaitTimeout, match=r"not within 0.1s: nothing \(\d+ checks; last value: None\)"
    ):
        wait_until_blocking(lambda: None, "nothing", timeout=0.1)


def test_the_blocking_form_refuses_an_async_predicate_and_a_wait_must_say_what_it_awaits():
    async def check() -> bool:
        return True

    with pytest.raises(TypeError, match="await wait_until"):
        wait_until_blocking(check, "an async check")
    with pytest.raises(ValueError, match="say what is awaited"):
        wait_until_blocking(lambda: True, " ")
