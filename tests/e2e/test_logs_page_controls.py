"""The Logs page's controls in a real Chromium: the URL drives the form, filters apply as you
type, pause counts new rows, clear and download, the keyboard, 401, the dark scheme.
"""

from __future__ import annotations

import json

import pytest
from playwright.async_api import expect

pytestmark = pytest.mark.browser


def etl_query(workflow: str) -> dict[str, str]:
    return {"service": "etl", "workspace_id": "workspace123", "workflow_id": workflow}


def mixed_levels(channel: str) -> list[dict]:
    steps = [
        ("debug", "Opened a connection to the warehouse"),
        ("info", "Loaded batch 1 of 3"),
        ("warn", "Batch 2 is slow: 12 s"),
        ("error", "Batch 3 failed: deadlock detected"),
        ("info", "Retried batch 3"),
        ("fatal", "Worker crashed after batch 3"),
    ]
    return [
        {"channel": channel, "level": level, "source": "etl.load", "message": message}
        for level, message in steps
    ]


async def shown_seqs(page) -> list[int]:
    return await page.eval_on_selector_all(
        '[data-testid="log-row"]:not([hidden])', "rows => rows.map(r => Number(r.dataset.seq))"
    )


async def test_the_url_query_chooses_the_service_and_ids_and_the_form_can_change_them(
    page, logs_page, publish, unique_id
):
    logs = await logs_page(page, service="faas", workspace_id="workspace123", function_id=unique_id)
    await expect(page.get_by_test_id("service-select")).to_have_value("faas")
    await expect(page.get_by_test_id("workspace-input")).to_have_value("workspace123")
    await expect(page.get_by_test_id("resource-input")).to_have_value(unique_id)
    await expect(page.locator("#resource-label")).to_have_text("Function ID")
    await logs.connect()
    await logs.wait_state("CONNECTED")
    seqs = await publish(
        [{"channel": f"logs:faas:workspace123:{unique_id}", "message": "cold start in 412 ms"}],
        token="faas-token",
    )
    await logs.wait_rows(seqs)

    await page.get_by_test_id("service-select").select_option("analytics")
    await expect(page.get_by_test_id("resource-input")).to_be_hidden()
    await expect(page.locator("#channel-name")).to_have_text("logs:analytics:workspace123")
    await page.get_by_test_id("service-select").select_option("etl")
    await page.get_by_test_id("resource-input").fill(unique_id)
    await logs.connect()  # another channel: watched too, and the address follows
    await logs.wait_state("CONNECTED")
    etl = f"logs:etl:workspace123:{unique_id}"
    await expect(page.get_by_test_id("watched-channel")).to_have_count(2)
    chips = page.get_by_test_id("watched-channel")
    await expect(chips.nth(0)).to_have_attribute(
        "data-channel", f"logs:faas:workspace123:{unique_id}"
    )
    await expect(chips.nth(1)).to_have_attribute("data-channel", etl)
    assert await logs.seqs() == seqs  # the first channel's row stays
    assert f"service=etl&workspace_id=workspace123&workflow_id={unique_id}" in page.url
    (etl_seq,) = await publish([{"channel": etl, "message": "etl joins"}])
    await logs.wait_rows([etl_seq])
    assert await logs.seqs() == [*seqs, etl_seq]


async def test_the_level_filter_and_the_search_apply_as_you_type(
    page, logs_page, publish, screenshot, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    logs = await logs_page(page, **etl_query(unique_id))
    await logs.connect()
    await logs.wait_state("CONNECTED")
    seqs = await publish(mixed_levels(channel))
    await logs.wait_rows(seqs)

    level = page.get_by_test_id("level-filter")
    assert await level.locator("option").first.text_content() == "All levels"
    await level.select_option("warn")
    await expect(page.get_by_test_id("row-count")).to_have_attribute("data-shown", "3")
    assert await shown_seqs(page) == [seqs[2], seqs[3], seqs[5]]

    search = page.get_by_test_id("search-filter")
    await search.press_sequentially("batch 3")
    await expect(page.get_by_test_id("row-count")).to_have_attribute("data-shown", "2")
    assert await shown_seqs(page) == [seqs[3], seqs[5]]
    await search.press("Backspace")
    await search.press("Backspace")  # "batch": as you type, no button to press
    await expect(page.get_by_test_id("row-count")).to_have_attribute("data-shown", "3")
    live = await publish(
        [
            {"channel": channel, "level": "error", "message": "Batch 4 lost"},
            {"channel": channel, "level": "info", "message": "Batch 5 done"},
        ]
    )
    await logs.wait_rows(live)
    # New rows are filtered too: the info one is below the level.
    assert await shown_seqs(page) == [seqs[2], seqs[3], seqs[5], live[0]]
    await screenshot(page, "filtered-warn-and-above-batch")

    await search.press("Escape")  # clears the search
    await level.select_option("")
    await expect(page.get_by_test_id("row-count")).to_have_attribute("data-shown", "8")


async def test_pause_counts_new_rows_and_resume_scrolls_to_them(
    page, logs_page, publish, records, screenshot, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    logs = await logs_page(page, **etl_query(unique_id))
    await logs.connect()
    await logs.wait_state("CONNECTED")
    first = await publish(records(channel, 60, "fills the screen"))
    await logs.wait_rows(first[-1:])

    toggle = page.get_by_test_id("autoscroll-button")
    await toggle.click()
    await expect(toggle).to_have_attribute("aria-pressed", "true")
    more = await publish(records(channel, 4, "while paused"))
    await logs.wait_rows(more)
    await expect(toggle).to_have_attribute("data-new", "4")
    await expect(toggle).to_have_text("Resume (4 new)")
    assert not await at_bottom(page)  # paused: the view stayed where it was
    await screenshot(page, "paused-with-new-rows")

    await toggle.click()
    await expect(toggle).to_have_attribute("aria-pressed", "false")
    await page.wait_for_function(AT_BOTTOM)
    await expect(logs.row(more[-1])).to_be_in_viewport()


AT_BOTTOM = """() => { const s = document.getElementById('log-scroll');
                       return s.scrollHeight - s.scrollTop - s.clientHeight < 2; }"""


async def at_bottom(page) -> bool:
    return await page.evaluate(AT_BOTTOM)


async def test_download_saves_the_shown_rows_as_ndjson_and_clear_empties_the_list(
    page, logs_page, publish, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    logs = await logs_page(page, **etl_query(unique_id))
    await logs.connect()
    await logs.wait_state("CONNECTED")
    seqs = await publish(mixed_levels(channel))
    await logs.wait_rows(seqs)
    await page.get_by_test_id("search-filter").fill("batch 3")

    async with page.expect_download() as download_info:
        await page.get_by_test_id("download-button").click()
    download = await download_info.value
    assert download.suggested_filename.endswith(".ndjson")
    lines = (await download.path()).read_text().splitlines()
    saved = [json.loads(line) for line in lines]
    assert [record["seq"] for record in saved] == [seqs[3], seqs[4], seqs[5]]
    assert all(record["channel"] == channel for record in saved)

    await page.get_by_test_id("clear-button").click()
    await expect(logs.rows).to_have_count(0)
    await page.reload()  # cleared rows stay cleared; the stream goes on from its cursor
    await page.wait_for_selector("html[data-ready=true]")
    await logs.wait_state("CONNECTED")
    live = await publish([{"channel": channel, "message": "after the clear"}])
    await logs.wait_rows(live)
    assert await logs.seqs() == live


async def test_the_page_is_usable_from_the_keyboard(page, logs_page, publish, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    logs = await logs_page(page, **etl_query(unique_id))
    await page.get_by_test_id("resource-input").focus()
    await page.keyboard.press("Enter")  # submits the form: connects
    await logs.wait_state("CONNECTED")
    seqs = await publish(mixed_levels(channel))
    await logs.wait_rows(seqs)

    await page.locator("body").click(position={"x": 5, "y": 5})
    await page.keyboard.press("/")
    await expect(page.get_by_test_id("search-filter")).to_be_focused()
    await page.locator("#log-list").focus()
    await page.keyboard.press("End")
    await page.keyboard.press("ArrowUp")
    await page.keyboard.press("ArrowUp")
    await page.keyboard.press("Enter")
    await expect(logs.row(seqs[3]).locator(".row-line")).to_have_attribute("aria-expanded", "true")
    await expect(logs.row(seqs[3]).locator(".details")).to_contain_text(channel)
    await page.keyboard.press("Enter")  # and closes again
    await expect(logs.row(seqs[3]).locator(".details")).to_be_hidden()
    await expect(logs.status).to_have_attribute("aria-live", "polite")


async def test_an_anonymous_visitor_is_refused_with_401_and_told_why(
    page, logs_page, screenshot, unique_id
):
    logs = await logs_page(page, **etl_query(unique_id))
    await page.get_by_test_id("user-select").select_option("")  # no user: no credential
    await logs.connect()
    await expect(logs.error).to_contain_text("HTTP 401")
    await logs.wait_state("DISCONNECTED")
    text = await logs.error.text_content()
    assert "unauthenticated" in text and "dev user" in text
    await screenshot(page, "401-explained")

    await page.get_by_test_id("user-select").select_option("user123")
    await logs.connect()
    await logs.wait_state("CONNECTED")
    await expect(logs.error).to_be_hidden()


async def test_the_page_follows_a_dark_color_scheme(
    new_context, logs_page, publish, screenshot, unique_id
):
    context = await new_context(color_scheme="dark")
    page = await context.new_page()
    channel = f"logs:etl:workspace123:{unique_id}"
    logs = await logs_page(page, **etl_query(unique_id))
    await logs.connect()
    await logs.wait_state("CONNECTED")
    seqs = await publish(mixed_levels(channel))
    await logs.wait_rows(seqs)
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"
    await logs.row(seqs[3]).locator(".row-line").click()
    await screenshot(page, "dark-scheme")


async def test_a_level_in_the_url_is_asked_of_the_server_so_lower_records_never_arrive(
    page, logs_page, publish, unique_id
):
    streams: list[str] = []
    page.on(
        "request",
        lambda request: streams.append(request.url) if "/logs/stream" in request.url else None,
    )
    channel = f"logs:etl:workspace123:{unique_id}"
    logs = await logs_page(page, **etl_query(unique_id), level="error")
    await expect(page.get_by_test_id("level-filter")).to_have_value("error")
    await logs.connect()
    await logs.wait_state("CONNECTED")
    assert streams and all("level=error" in url for url in streams), streams
    info, error = await publish(
        [
            {"channel": channel, "level": "info", "message": "all good"},
            {"channel": channel, "level": "error", "message": "disk full"},
        ]
    )
    await logs.wait_rows([error])
    # Records arrive in seq order, so the info one (published first) would be here by now:
    # it is not in the page at all, not even as a hidden row.
    assert await logs.seqs() == [error]
    assert "level=error" in page.url  # the address keeps the filter for a reload or a link

    # Widening the level while connected filters in the page at once and keeps the stream;
    # Connect then asks the server for the new level: a fresh list with the history.
    await page.get_by_test_id("level-filter").select_option("")
    await logs.connect()
    await logs.wait_rows([info, error])
    assert "level=" not in streams[-1], streams


async def test_a_search_in_the_url_is_asked_of_the_server_as_q(page, logs_page, publish, unique_id):
    streams: list[str] = []
    page.on(
        "request",
        lambda request: streams.append(request.url) if "/logs/stream" in request.url else None,
    )
    channel = f"logs:etl:workspace123:{unique_id}"
    logs = await logs_page(page, **etl_query(unique_id), q="Disk")
    await logs.connect()
    await logs.wait_state("CONNECTED")
    assert streams and all("q=Disk" in url for url in streams), streams
    _, disk = await publish(
        [
            {"channel": channel, "level": "error", "message": "cpu hot"},
            {"channel": channel, "level": "error", "message": "disk full"},
        ]
    )
    await logs.wait_rows([disk])  # case-insensitive on the server, like the page's search
    assert await logs.seqs() == [disk]
