"""logstream.services.gateway.ticker: one clock wakes the connections whose heartbeat or expiry is due."""

from __future__ import annotations

import asyncio
import math

import pytest

from logstream.services.gateway.outbox import Outbox
from logstream.services.gateway.subscription import Subscription
from logstream.services.gateway.ticker import Ticker, tick_period
from logstream.shared.channels import parse_pattern


def sub(wake_at: float) -> Subscription:
    made = Subscription(f"c{wake_at}", "u", (parse_pattern("logs:etl:ws"),), Outbox(4096))
    made.wake_by(wake_at)
    return made


@pytest.mark.parametrize(("heartbeat", "period"), [(15.0, 0.25), (1.0, 0.25), (0.5, 0.125)])
def test_the_ticker_looks_four_times_per_heartbeat_and_at_least_four_times_a_second(
    heartbeat, period
):
    assert tick_period(heartbeat) == period


def test_only_connections_whose_time_has_come_are_woken():
    due, exactly_due, later, never = sub(9.0), sub(10.0), sub(10.5), sub(math.inf)
    ticker = Ticker(15.0, lambda: [due, exactly_due, later, never])
    ticker.wake_due(now=10.0)
    assert due.outbox.ready.is_set() and exactly_due.outbox.ready.is_set()
    assert not later.outbox.ready.is_set() and not never.outbox.ready.is_set()


def test_a_new_connection_is_not_woken_before_its_writer_asks():
    assert (
        sub(math.inf).wake_at
        == math.inf
        == Subscription("c", "u", (parse_pattern("logs:etl:ws"),), Outbox(4096)).wake_at
    )


async def test_the_running_ticker_wakes_a_due_connection_within_a_period():
    waiting = sub(0.0)  # due since the clock began
    ticker = Ticker(0.2, lambda: [waiting])
    running = asyncio.create_task(ticker.run())
    try:
        async with asyncio.timeout(5):
            await waiting.outbox.ready.wait()
    finally:
        running.cancel()


def test_a_quiet_connection_whose_client_left_is_woken_to_end_and_no_other():
    left, staying, unknown = sub(math.inf), sub(math.inf), sub(math.inf)
    left.set_client_probe(lambda: True)
    staying.set_client_probe(lambda: False)
    ticker = Ticker(15.0, lambda: [left, staying, unknown])
    ticker.wake_due(now=10.0)
    assert left.gone and left.outbox.ready.is_set() and not left.outbox.overflowed
    assert not staying.gone and not staying.outbox.ready.is_set()
    assert not unknown.gone and not unknown.outbox.ready.is_set()
    left.outbox.ready.clear()  # its writer woke and looked
    ticker.wake_due(now=11.0)
    assert not left.outbox.ready.is_set()  # woken once
