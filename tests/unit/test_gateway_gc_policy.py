"""The gateway's collector policy: survivors of a full collection are frozen, and thawed again."""

from __future__ import annotations

import asyncio
import gc

import pytest

from logstream.services.gateway import gc_policy


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(gc_policy, "CHECK_EVERY_S", 0.01)
    yield
    gc.unfreeze()


async def wait_for(predicate) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_the_survivors_of_a_full_collection_are_frozen_and_thawed_when_it_stops():
    gc.unfreeze()
    policy = asyncio.create_task(gc_policy.keep_collections_short())
    await asyncio.sleep(0.02)  # the policy has noted how many full collections ran
    gc.collect()
    await wait_for(lambda: gc.get_freeze_count() > 0)
    policy.cancel()
    await asyncio.gather(policy, return_exceptions=True)
    assert gc.get_freeze_count() == 0


async def test_everything_is_thawed_once_a_period_so_frozen_garbage_is_found(monkeypatch):
    monkeypatch.setattr(gc_policy, "THAW_EVERY_S", 0.05)
    policy = asyncio.create_task(gc_policy.keep_collections_short())
    try:
        await asyncio.sleep(0.02)  # the policy has noted how many full collections ran
        gc.collect()
        await wait_for(lambda: gc.get_freeze_count() > 0)
        await wait_for(lambda: gc.get_freeze_count() == 0)
    finally:
        policy.cancel()
        await asyncio.gather(policy, return_exceptions=True)
