"""The Logs page's stream in a real Chromium: history on connect, reloads, the network going
away, and the bounded list. Publishing goes through the real ingest; each test has
its own workflow id, so the shared stack's other traffic never shows up here.
"""

from __future__ import annotations

import pytest
from playwright.async_api import expect

pytestmark = pytest.mark.browser

HISTORY = 100  # what the page asks for on connect (tail=100)


def etl_query(workflow: str) -> dict[str, str]:
    return {"service": "etl", "workspace_id": "workspace123", "workflow_id": workflow}


async def test_connecting_shows_the_last_100_records_then_live_ones(
    page, logs_page, publish, records, screenshot, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    earlier = await publish(records(channel, HISTORY + 20, "before connect"))
    logs = await logs_page(page, **etl_query(unique_id))
    await logs.connect()
    await logs.wait_state("CONNECTED")
    await logs.wait_rows(earlier[-HISTORY:])
    assert await logs.seqs() == earlier[-HISTORY:]

    live = await publish(records(channel, 2, "after connect", level="warn"))
    await logs.wait_rows(live)
    assert await logs.seqs() == earlier[-HISTORY:] + live
    await expect(page.get_by_test_id("row-count")).to_have_attribute("data-rows", str(HISTORY + 2))
    await screenshot(page, "history-then-live")


async def test_a_reload_resumes_without_duplicates_and_fills_the_gap(
    page, logs_page, publish, records, screenshot, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    logs = await logs_page(page, **etl_query(unique_id))
    await logs.connect()
    await logs.wait_state("CONNECTED")
    first = await publish(records(channel, 3, "before the reload"))
    await logs.wait_rows(first)
    address = page.url  # the page keeps its channel in the address

    await page.reload()  # nothing published meanwhile: the same rows, once
    await page.wait_for_selector("html[data-ready=true]")
    await logs.wait_state("CONNECTED")
    assert await logs.seqs() == first

    await page.goto("about:blank")  # the page is gone while these are published
    missed = await publish(records(channel, 4, "while the page was away"))
    await page.goto(address)
    await page.wait_for_selector("html[data-ready=true]")
    await logs.wait_state("CONNECTED")
    await logs.wait_rows(missed)
    assert await logs.seqs() == first + missed
    await expect(page.get_by_test_id("notice-row").last).to_contain_text("Reloaded")

    live = await publish(records(channel, 1, "after the reload"))
    await logs.wait_rows(live)
    assert await logs.seqs() == first + missed + live
    await screenshot(page, "after-reload-gap-filled")


async def test_offline_then_online_reconnects_and_shows_every_missed_record_once(
    page, logs_page, publish, records, screenshot, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    logs = await logs_page(page, **etl_query(unique_id))
    await logs.connect()
    await logs.wait_state("CONNECTED")
    before = await publish(records(channel, 2, "online"))
    await logs.wait_rows(before)

    await page.context.set_offline(True)
    await logs.wait_state("RECONNECTING")
    missed = await publish(records(channel, 5, "published while offline"))
    await screenshot(page, "offline-reconnecting")
    await page.context.set_offline(False)
    await logs.wait_state("CONNECTED")
    await logs.wait_rows(missed)
    assert await logs.seqs() == before + missed

    live = await publish(records(channel, 1, "back online"))
    await logs.wait_rows(live)
    assert await logs.seqs() == before + missed + live


async def test_the_row_list_is_bounded_and_old_rows_leave_the_dom(
    page, logs_page, publish, records, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    logs = await logs_page(page, **etl_query(unique_id), max_rows="10")
    await logs.connect()
    await logs.wait_state("CONNECTED")
    seqs = await publish(records(channel, 15, "bounded"))
    await logs.wait_rows(seqs[-1:])
    await expect(logs.rows).to_have_count(10)
    assert await logs.seqs() == seqs[-10:]
    await expect(page.get_by_test_id("row-count")).to_have_attribute("data-dropped", "5")
