"""The Logs page as a place to work, in a real Chromium against the real stack: the sidebar of
active channels, several channels at once, the server-side where filter, Load older through a
long run, and a link that opens the same view in another browser.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import expect

from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser

PAGE = 100  # history on connect and per "Load older"


def etl_query(workflow: str) -> dict[str, str]:
    return {"service": "etl", "workspace_id": "workspace123", "workflow_id": workflow}


async def shown_seqs(page) -> list[int]:
    return await page.eval_on_selector_all(
        '[data-testid="log-row"]:not([hidden])', "rows => rows.map(r => Number(r.dataset.seq))"
    )


async def sidebar_channels(page) -> list[str]:
    return await page.eval_on_selector_all(
        '[data-testid="channel-item"]', "items => items.map(i => i.dataset.channel)"
    )


async def watched(page) -> list[str]:
    return await page.eval_on_selector_all(
        '[data-testid="watched-channel"]', "chips => chips.map(c => c.dataset.channel)"
    )


def address_where(page) -> str:
    """The where= of the page's address (the page writes it once the filter is applied)."""
    return parse_qs(urlsplit(page.url).query).get("where", [""])[0]


async def listed_by_the_api(stack, prefix: str, user: str = "user123") -> list[str]:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(
            f"{stack.proxy.url}/api/logs/channels",
            params={"prefix": prefix},
            headers={"Authorization": f"Bearer {stack.user_token(user)}"},
        )
    assert answer.status_code == 200, answer.text
    return [entry["channel"] for entry in answer.json()["channels"]]


async def test_the_sidebar_lists_the_readable_channels_and_a_click_watches_one(
    stack, page, logs_page, publish, screenshot, unique_id
):
    older, newer = f"logs:etl:workspace123:{unique_id}-a", f"logs:etl:workspace123:{unique_id}-b"
    foreign = f"logs:etl:workspace456:{unique_id}-c"  # user123 may not read workspace456
    a_seqs = await publish(
        [
            {"channel": older, "level": "info", "source": "etl.extract", "message": f"a #{n}"}
            for n in range(3)
        ]
    )
    await publish([{"channel": foreign, "level": "error", "message": "not for user123"}])
    b_seqs = await publish(
        [
            {"channel": newer, "level": "info", "source": "etl.load", "message": "b #0"},
            {"channel": newer, "level": "warn", "source": "etl.load", "message": "b #1 slow"},
        ]
    )
    logs = await logs_page(page, service="etl", workspace_id="workspace123")
    sidebar = page.get_by_test_id("channel-list")
    item_a = sidebar.locator(f'[data-testid="channel-item"][data-channel="{older}"]')
    item_b = sidebar.locator(f'[data-testid="channel-item"][data-channel="{newer}"]')
    await expect(item_b).to_be_visible()
    listed = await sidebar_channels(page)
    # Exactly what the gateway says user123 may read under this prefix, most recent first.
    assert listed == await listed_by_the_api(stack, "logs:etl:workspace123")
    assert foreign not in listed
    assert listed.index(newer) < listed.index(older)
    await expect(item_a).to_contain_text("3 records")
    await expect(item_b).to_contain_text("2 records")
    await expect(item_b.locator(".channel-level")).to_have_text("warn")
    await expect(item_b).to_contain_text(f"{unique_id}-b")

    await item_b.click()  # watches it: its history, then live
    await logs.wait_state("CONNECTED")
    await logs.wait_rows(b_seqs)
    assert await logs.seqs() == b_seqs
    assert await watched(page) == [newer]
    await expect(item_b).to_have_attribute("aria-pressed", "true")

    await item_a.focus()  # a second channel, from the keyboard: the rows merge in seq order
    await page.keyboard.press("Enter")
    await logs.wait_rows(a_seqs)
    await expect(page.get_by_test_id("watched-channel")).to_have_count(2)
    assert await watched(page) == [newer, older]
    assert await logs.seqs() == sorted(a_seqs + b_seqs)
    await expect(logs.row(a_seqs[0]).locator(".chan")).to_have_text(f"{unique_id}-a")
    live = await publish(
        [
            {"channel": older, "message": "a live"},
            {"channel": newer, "message": "b live", "level": "error"},
        ]
    )
    await logs.wait_rows(live)
    assert await logs.seqs() == sorted(a_seqs + b_seqs) + live
    assert f"channels={newer},{older}" in page.url
    await screenshot(page, "sidebar-and-two-channels")

    # Removing a chip stops watching that channel: its rows go, the other's stay.
    chip = page.locator(f'[data-testid="watched-channel"][data-channel="{newer}"]')
    await chip.get_by_role("button").click()
    await expect(page.get_by_test_id("watched-channel")).to_have_count(1)
    await expect(logs.row(b_seqs[0])).to_have_count(0)
    await logs.wait_rows([*a_seqs, live[0]])
    assert await logs.seqs() == [*a_seqs, live[0]]

    # Another workspace's channels: the sidebar says why it lists none.
    await page.get_by_test_id("workspace-input").fill("workspace456")
    error = page.get_by_test_id("channel-list-error")
    await expect(error).to_contain_text("HTTP 403")
    await expect(page.get_by_test_id("channel-item")).to_have_count(0)
    await screenshot(page, "sidebar-403")


async def test_the_where_filter_runs_on_the_server_and_a_clicked_value_adds_to_it(
    page, logs_page, publish, screenshot, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    streams: list[str] = []
    page.on(
        "request",
        lambda request: streams.append(request.url) if "/logs/stream" in request.url else None,
    )

    def step(table: str, name: str, rows: int, level: str = "info") -> dict:
        return {
            "channel": channel,
            "level": level,
            "source": f"etl.{name}",
            "message": f"{name} {table}: {rows} rows",
            "fields": {"table": table, "step": name, "rows": rows},
        }

    logs = await logs_page(page, **etl_query(unique_id), connect="1")
    await logs.wait_state("CONNECTED")
    where = page.get_by_test_id("where-input")
    await where.fill("fields.table = orders")
    await where.press("Enter")
    await expect(page.get_by_test_id("where-state")).to_have_text("applied")
    await wait_until(
        lambda: any("where=fields.table" in url for url in streams), "a stream with where="
    )
    await logs.wait_state("CONNECTED")
    seqs = await publish(
        [
            step("orders", "extract", 10),
            step("customers", "extract", 20),
            step("orders", "load", 2000, "warn"),
            step("customers", "load", 5),
        ]
    )
    await logs.wait_rows([seqs[2]])
    # Records come in seq order: the customers one between would be here by now. It never came.
    assert await logs.seqs() == [seqs[0], seqs[2]]
    assert address_where(page) == "fields.table = orders"

    # A value of an open record: `fields.step = load` ANDed, applied, the history asked again.
    await logs.row(seqs[2]).locator(".row-line").click()
    value = logs.row(seqs[2]).locator('[data-testid="field-filter"][data-field="fields.step"]')
    await value.click()
    await expect(where).to_have_value("fields.table = orders and fields.step = load")
    await wait_until(
        lambda: address_where(page) == "fields.table = orders and fields.step = load",
        "the narrower filter applied",
    )
    await logs.wait_state("CONNECTED")
    await logs.wait_rows([seqs[2]])
    more = await publish([step("orders", "extract", 1), step("orders", "load", 3)])
    await logs.wait_rows([more[1]])
    assert await logs.seqs() == [seqs[2], more[1]]
    await logs.row(more[1]).locator(".row-line").click()
    await screenshot(page, "where-filter-applied")

    # The level of a record is a value to filter on too.
    await logs.row(more[1]).locator('[data-testid="field-filter"][data-field="level"]').click()
    narrowest = "fields.table = orders and fields.step = load and level = info"
    await expect(where).to_have_value(narrowest)
    await wait_until(lambda: address_where(page) == narrowest, "the level filter applied")
    await logs.wait_rows([more[1]])
    assert await logs.seqs() == [more[1]]

    # A bad expression: the server's 400, with the position, next to the input.
    await where.fill("fields.rows > and level = warn")
    await where.press("Enter")
    problem = page.get_by_test_id("where-error")
    await expect(problem).to_be_visible()
    await expect(problem).to_contain_text(re.compile(r"where: .*position \d+"))
    await expect(where).to_have_attribute("aria-invalid", "true")
    await logs.wait_state("CONNECTED")  # the stream in force goes on
    await screenshot(page, "where-bad-expression")


async def test_load_older_goes_back_through_5000_records_and_joins_the_live_tail(
    page, logs_page, publish, records, screenshot, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    seqs: list[int] = []
    for batch in range(5):  # the ingest takes at most 1,000 records per request
        seqs += await publish(records(channel, 1000, f"run part {batch}"))
    logs = await logs_page(page, **etl_query(unique_id), connect="1")
    await logs.wait_state("CONNECTED")
    await logs.wait_rows(seqs[-PAGE:])
    assert await logs.seqs() == seqs[-PAGE:]

    button = page.get_by_test_id("load-older-button")
    await expect(button).to_have_text("Load older")
    first_row = logs.row(seqs[-PAGE])
    await button.click()
    await logs.wait_rows(seqs[-2 * PAGE : -PAGE])
    # The reader stays where they were: the row that was on top did not move out of view.
    await expect(first_row).to_be_in_viewport()
    await screenshot(page, "after-load-older")
    clicks, done = 1, False
    while not done:  # one click, then wait for its page (the button says when nothing is left)
        await button.click()
        clicks += 1
        answer = await page.wait_for_function(
            """() => { const b = document.querySelector('[data-testid="load-older-button"]');
                       return b.getAttribute('aria-busy') !== 'true' && b.dataset.done; }"""
        )
        done = await answer.json_value() == "true"
        assert clicks <= len(seqs) // PAGE + 1, "Load older never said Nothing older"
    await expect(button).to_have_text("Nothing older")
    await expect(button).to_be_disabled()
    assert await logs.seqs() == seqs  # every record once, in order

    live = await publish(records(channel, 3, "after the run"))
    await logs.wait_rows(live)
    assert await logs.seqs() == seqs + live
    await screenshot(page, "all-5000-loaded-then-live")


async def test_a_link_opens_the_same_view_in_another_browser(
    new_context, logs_page, publish, screenshot, unique_id
):
    first, second = f"logs:etl:workspace123:{unique_id}-x", f"logs:etl:workspace123:{unique_id}-y"
    published = await publish(
        [
            {
                "channel": first if n % 2 else second,
                "level": "warn" if n % 3 == 0 else "info",
                "source": "etl.load",
                "message": f"step {n}",
                "fields": {"n": n, "table": "orders"},
            }
            for n in range(40)
        ]
    )
    context = await new_context()
    page = await context.new_page()
    logs = await logs_page(
        page, service="etl", workspace_id="workspace123", channels=f"{first},{second}"
    )
    await logs.wait_state("CONNECTED")
    await logs.wait_rows(published)
    where = page.get_by_test_id("where-input")
    await where.fill("fields.table = orders and fields.n >= 4")
    await where.press("Enter")
    await wait_until(
        lambda: address_where(page) == "fields.table = orders and fields.n >= 4",
        "the filter applied",
    )
    await logs.wait_state("CONNECTED")
    await logs.wait_rows(published[4:])
    await expect(logs.row(published[3])).to_have_count(0)
    await logs.wait_rows(published[4:])
    await page.get_by_test_id("search-filter").fill("step")
    await page.get_by_test_id("level-filter").select_option("info")
    looked_at = published[20]
    await logs.row(looked_at).locator(".row-line").click()
    await expect(logs.row(looked_at)).to_have_class(re.compile(r"\bselected\b"))
    await wait_until(lambda: f"at={looked_at}" in page.url, "the address has the position")
    link = page.url

    other = await new_context()  # another browser profile: no cookie, no saved session
    tab = await other.new_page()
    opened = await logs_page(tab)
    await tab.goto(link)
    await tab.wait_for_selector("html[data-ready=true]")
    await opened.wait_state("CONNECTED")
    assert await watched(tab) == [first, second]
    await expect(tab.get_by_test_id("where-input")).to_have_value(
        "fields.table = orders and fields.n >= 4"
    )
    await expect(tab.get_by_test_id("level-filter")).to_have_value("info")
    await expect(tab.get_by_test_id("search-filter")).to_have_value("step")
    row = opened.row(looked_at)
    await expect(row).to_have_class(re.compile(r"\bselected\b"))
    await expect(row).to_be_in_viewport()
    # History up to the record, then the stream from it on: every matching record once.
    await opened.wait_rows(published[-1:])
    assert await opened.seqs() == published[4:]
    live = await publish(
        [
            {
                "channel": first,
                "message": "step after the link",
                "fields": {"n": 99, "table": "orders"},
            },
            {"channel": second, "message": "filtered out", "fields": {"n": 1, "table": "orders"}},
        ]
    )
    await opened.wait_rows(live[:1])
    assert await opened.seqs() == published[4:] + live[:1]
    await screenshot(tab, "opened-from-a-link")


async def test_a_channel_past_the_gateway_limit_is_refused_and_the_page_says_so(
    page, logs_page, publish, unique_id
):
    channels = [f"logs:etl:workspace123:{unique_id}-{n}" for n in range(20)]  # the limit is 20
    logs = await logs_page(
        page,
        service="etl",
        workspace_id="workspace123",
        workflow_id=f"{unique_id}-more",
        channels=",".join(channels),
    )
    await logs.wait_state("CONNECTED")
    await expect(page.get_by_test_id("watched-channel")).to_have_count(20)
    await logs.connect()  # the form's channel would be the 21st
    await expect(logs.error).to_contain_text("HTTP 400")
    await expect(logs.error).to_contain_text("at most 20")
    await expect(logs.error).to_contain_text("Watch fewer channels")
    # The 21st is taken back; the 20 go on streaming.
    await expect(page.get_by_test_id("watched-channel")).to_have_count(20)
    assert await watched(page) == channels
    await logs.wait_state("CONNECTED")
    (seq,) = await publish([{"channel": channels[-1], "message": "still streaming"}])
    await logs.wait_rows([seq])
