"""Tabs of one origin share one stream: the leader tab (a Web Lock) holds the only
connection and relays rows over a BroadcastChannel; when it closes, another tab takes over from
its last id. Counted on the gateway's own stats, in a real Chromium.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from playwright.async_api import expect

from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser

# Bounds the wait for the gateway to see a closed tab's connection go (the proxy closes its
# upstream within 1 s of the browser leaving; the rest is a busy machine).
STATS_DEADLINE_S = 15.0


async def subscribers(gateway_stats, channel: str, want: int) -> int:
    """Poll the gateway until ``channel`` has ``want`` subscribers; return the last count."""
    deadline = time.monotonic() + STATS_DEADLINE_S
    while True:
        count = (await gateway_stats())["channels"].get(channel, 0)
        if count == want or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.1)


async def test_two_tabs_share_one_stream_and_the_second_takes_over_when_the_first_closes(
    new_context, logs_page, publish, records, gateway_stats, screenshot, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    query = {"service": "etl", "workspace_id": "workspace123", "workflow_id": unique_id}
    context = await new_context()
    first = await logs_page(await context.new_page(), **query)
    await first.connect()
    await first.wait_state("CONNECTED")
    await expect(first.status).to_have_attribute("data-role", "leader")
    second = await logs_page(await context.new_page(), **query)
    await second.connect()
    await second.wait_state("CONNECTED")
    await expect(second.status).to_have_attribute("data-role", "follower")

    shared = await publish(records(channel, 3, "seen by both tabs"))
    await first.wait_rows(shared)
    await second.wait_rows(shared)
    assert await second.seqs() == shared
    stats = await gateway_stats()  # both tabs are CONNECTED and show the rows
    assert stats["channels"][channel] == 1  # over one connection
    await expect(second.tab.locator("#status-detail")).to_contain_text("shared with another tab")
    await screenshot(second.tab, "follower-tab")

    await first.tab.close()
    await expect(second.status).to_have_attribute("data-role", "leader")
    await second.wait_state("CONNECTED")
    after = await publish(records(channel, 2, "after the first tab closed"))
    await second.wait_rows(after)
    assert await second.seqs() == shared + after
    assert await subscribers(gateway_stats, channel, 1) == 1
    await screenshot(second.tab, "second-tab-took-over")


async def test_a_follower_that_joins_later_shows_the_leaders_history(
    new_context, logs_page, publish, records, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    query = {"service": "etl", "workspace_id": "workspace123", "workflow_id": unique_id}
    earlier = await publish(records(channel, 5, "before any tab"))
    context = await new_context()
    leader = await logs_page(await context.new_page(), **query, connect="1")
    await leader.wait_rows(earlier)
    follower = await logs_page(await context.new_page(), **query, connect="1")
    await follower.wait_state("CONNECTED")
    await follower.wait_rows(earlier)
    live = await publish(records(channel, 1, "live"))
    await follower.wait_rows(live)
    assert await follower.seqs() == earlier + live

    await follower.tab.get_by_test_id("disconnect-button").click()  # a follower leaving
    await follower.wait_state("DISCONNECTED")
    await leader.wait_state("CONNECTED")  # does not disturb the leader
    more = await publish(records(channel, 1, "only the leader"))
    await leader.wait_rows(more)
    assert await follower.seqs() == earlier + live


async def test_three_page_tabs_on_three_channels_use_one_gateway_connection(
    new_context, logs_page, publish, records, gateway_stats, screenshot, unique_id
):
    """The page itself (not only its client module): three tabs, each on its own workflow,
    stream over one connection, and each shows only its own workflow's rows."""
    workflows = [f"{unique_id}-{n}" for n in range(3)]
    channels = [f"logs:etl:workspace123:{workflow}" for workflow in workflows]
    context = await new_context()
    tabs = []
    for workflow in workflows:
        query = {"service": "etl", "workspace_id": "workspace123", "workflow_id": workflow}
        tab = await logs_page(await context.new_page(), **query, connect="1")
        await tab.wait_state("CONNECTED")
        tabs.append(tab)

    async def one_connection_with_all_three() -> bool:
        stats = await gateway_stats()  # (earlier tests' streams are gone: their contexts closed)
        return stats["connections"] == 1 and set(stats["channels"]) == set(channels)

    await wait_until(one_connection_with_all_three, "one connection carrying the three channels")
    sent = [await publish(records(channel, 2, f"for {channel}")) for channel in channels]
    for tab, seqs in zip(tabs, sent):
        await tab.wait_rows(seqs)
    for tab, seqs in zip(tabs, sent):
        assert await tab.seqs() == seqs  # its own rows only, once each
    stats = await gateway_stats()
    assert stats["connections"] == 1 and stats["users"] == 1
    await screenshot(tabs[0].tab, "first-of-three-tabs")
