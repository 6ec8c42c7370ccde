"""The Logs page in a real headless Chromium, against the real dev stack (CONTRACT section 7).

Skips when /usr/bin/chromium is missing. Every wait is bounded by a Playwright timeout.
"""

from __future__ import annotations

import os
import re

import httpx
import pytest

from shared.identities import DEV_JWT_SECRET
from shared.user_tokens import UserTokens

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = "/tmp/logstream-page.png"
# Bounds a failing wait; a passing one returns as soon as the element appears.
WAIT_MS = 15_000
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/etl/load.py", line 88, in write_batch\n'
    "    cursor.executemany(INSERT_SQL, rows)\n"
    "psycopg.errors.UniqueViolation: duplicate key value violates unique constraint \"orders_pkey\""
)


@pytest.fixture(scope="module")
async def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                    headless=True)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser):
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    tab = await context.new_page()
    tab.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    await context.close()
    assert not errors, f"the page raised: {errors}"


async def publish(stack, records: list[dict]) -> list[int]:
    async with httpx.AsyncClient(timeout=15) as client:
        answer = await client.post(f"{stack.ingest.url}/api/logs/publish", json=records,
                                   headers={"Authorization": "Bearer l5-etl-token"})
    assert answer.status_code == 202, answer.text
    return answer.json()["seqs"]


def sample_records(channel: str, tag: str) -> list[dict]:
    steps = [
        ("info", "etl.scheduler", f"Run {tag} started: extract → transform → load",
         {"run_id": tag}),
        ("debug", "etl.extract", "Fetched 12,480 rows from s3://datashop-raw/orders/2024-06-01",
         {"rows": 12480, "bytes": 3481221}),
        ("info", "etl.transform", "Normalised currencies and deduplicated 37 orders",
         {"duplicates": 37}),
        ("warn", "etl.transform", "Schema drift: column 'discount_code' is new; kept as text",
         {"column": "discount_code"}),
        ("info", "etl.load", "Loading 12,443 rows into warehouse.orders", {"batch_size": 500}),
        ("error", "etl.load", "Batch 7 of 25 failed: duplicate key in orders_pkey",
         {"batch": 7, "exception": TRACEBACK}),
        ("info", "etl.load", "Retrying batch 7 with upsert", {"batch": 7, "attempt": 2}),
        ("info", "etl.scheduler", f"Run {tag} finished in 41.2 s", {"status": "succeeded"}),
    ]
    return [{"channel": channel, "level": level, "source": source, "message": message,
             "fields": fields} for level, source, message, fields in steps]


async def sign_in_and_connect(page, stack, workflow: str) -> None:
    await page.goto(stack.proxy.url + "/")
    await page.select_option("#dev-user", "user123")
    await page.click("#sign-in")
    await page.wait_for_selector('#whoami[data-user="user123"]')
    await page.select_option("#route", "etl")
    await page.fill("#param-workspace_id", "workspace123")
    await page.fill("#param-workflow_id", workflow)
    await page.click("#connect")


async def test_a_published_record_appears_live_on_the_logs_page(stack, page, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    await sign_in_and_connect(page, stack, unique_id)
    await page.wait_for_selector('#status[data-state="live"]')
    assert await page.text_content("#channel-name") == channel

    seqs = await publish(stack, sample_records(channel, unique_id))
    last = await page.wait_for_selector(f'#log-list .row[data-seq="{seqs[-1]}"]')
    assert unique_id in await last.text_content()
    assert await page.get_attribute("#count", "data-total") == str(len(seqs))

    failed = page.locator(f'#log-list .row[data-seq="{seqs[5]}"]')
    assert await failed.get_attribute("data-level") == "error"
    await failed.locator(".row-line").click()
    assert "UniqueViolation" in await failed.locator(".details").text_content()

    await page.fill("#filter", "schema drift")
    await page.wait_for_selector('#count[data-shown="1"]')
    await page.fill("#filter", "")
    await page.select_option("#level-filter", "warn")
    await page.wait_for_selector('#count[data-shown="2"]')
    await page.select_option("#level-filter", "")
    await page.screenshot(path=SCREENSHOT)

    await page.click("#disconnect")
    await page.wait_for_selector('#status[data-state="idle"]')


async def test_an_expired_session_is_renewed_and_the_stream_resumes(stack, page, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    await page.goto(stack.proxy.url + "/")
    await page.wait_for_selector('#whoami[data-user="user123"]')  # dev mode signs in on load
    short_lived = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"], ttl_s=2)
    await page.context.add_cookies([{"name": "logstream_session", "value": short_lived,
                                     "url": stack.proxy.url}])
    await page.fill("#param-workflow_id", unique_id)
    async with page.expect_request(lambda request: "/dev/token" in request.url) as renewal:
        await page.click("#connect")
        await page.wait_for_selector('#status[data-state="live"]')
        (first,) = await publish(stack, sample_records(channel, unique_id)[:1])
        await page.wait_for_selector(f'#log-list .row[data-seq="{first}"]')
    await renewal.value  # the gateway ended the stream with auth-expired; the page renewed
    (second,) = await publish(stack, sample_records(channel, unique_id)[1:2])
    await page.wait_for_selector(f'#log-list .row[data-seq="{second}"]')
    assert await page.locator("#log-list .row").count() == 2


async def test_a_refused_stream_shows_why_on_the_page(stack, page, unique_id):
    await page.goto(stack.proxy.url + "/")
    await page.click("#sign-in")  # the default dev user, user123
    await page.wait_for_selector('#whoami[data-user="user123"]')
    await page.fill("#param-workspace_id", "workspace456")
    await page.fill("#param-workflow_id", unique_id)
    await page.click("#connect")
    await page.wait_for_selector('#status[data-state="error"]')
    assert re.search(r"Access denied.*workspace456", await page.text_content("#notice"))


async def test_the_page_refuses_a_malformed_id_before_connecting(stack, page):
    await page.goto(stack.proxy.url + "/")
    await page.fill("#param-workflow_id", "not a segment")
    await page.click("#connect")
    await page.wait_for_selector('#param-workflow_id[aria-invalid="true"]')
    assert await page.get_attribute("#status", "data-state") == "idle"
