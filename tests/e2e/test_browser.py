"""The Logs page in a real headless Chromium, against the real dev stack (docs/reference/stream.md#proxy-routes).

Skips when /usr/bin/chromium is missing. Every wait is bounded by a Playwright timeout. The
fixtures (browser, pages, screenshots, publishing) are in tests/e2e/conftest.py.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens

pytestmark = pytest.mark.browser

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/etl/load.py", line 88, in write_batch\n'
    "    cursor.executemany(INSERT_SQL, rows)\n"
    'psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "orders_pkey"'
)


def sample_records(channel: str, tag: str) -> list[dict]:
    steps = [
        (
            "info",
            "etl.scheduler",
            f"Run {tag} started: extract → transform → load",
            {"run_id": tag},
        ),
        (
            "debug",
            "etl.extract",
            "Fetched 12,480 rows from s3://datashop-raw/orders/2024-06-01",
            {"rows": 12480, "bytes": 3481221},
        ),
        (
            "info",
            "etl.transform",
            "Normalised currencies and deduplicated 37 orders",
            {"duplicates": 37},
        ),
        (
            "warn",
            "etl.transform",
            "Schema drift: column 'discount_code' is new; kept as text",
            {"column": "discount_code"},
        ),
        ("info", "etl.load", "Loading 12,443 rows into warehouse.orders", {"batch_size": 500}),
        (
            "error",
            "etl.load",
            "Batch 7 of 25 failed: duplicate key in orders_pkey",
            {"batch": 7, "exception": TRACEBACK},
        ),
        ("info", "etl.load", "Retrying batch 7 with upsert", {"batch": 7, "attempt": 2}),
        ("info", "etl.scheduler", f"Run {tag} finished in 41.2 s", {"status": "succeeded"}),
    ]
    return [
        {"channel": channel, "level": level, "source": source, "message": message, "fields": fields}
        for level, source, message, fields in steps
    ]


async def test_a_published_record_appears_live_on_the_logs_page(
    stack, page, logs_page, publish, screenshot, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    logs = await logs_page(page, service="etl", workspace_id="workspace123", workflow_id=unique_id)
    await expect(page.locator("#channel-name")).to_have_text(channel)
    await logs.connect()
    await logs.wait_state("CONNECTED")

    seqs = await publish(sample_records(channel, unique_id))
    await logs.wait_rows(seqs)
    assert unique_id in await logs.row(seqs[-1]).text_content()
    assert await logs.seqs() == seqs

    failed = logs.row(seqs[5])
    assert await failed.get_attribute("data-level") == "error"
    await failed.locator(".row-line").click()
    await expect(failed.locator(".details")).to_contain_text("UniqueViolation")
    await expect(failed.locator(".row-line")).to_have_attribute("aria-expanded", "true")
    await screenshot(page, "live-rows-with-a-stack-trace-open")

    await page.get_by_test_id("disconnect-button").click()
    await logs.wait_state("DISCONNECTED")
    await expect(logs.rows).to_have_count(len(seqs))  # disconnecting keeps what was shown


async def test_an_expired_session_is_renewed_and_the_stream_resumes(
    stack, page, logs_page, publish, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    logs = await logs_page(page, service="etl", workspace_id="workspace123", workflow_id=unique_id)
    await expect(page.locator("#whoami")).to_have_attribute("data-user", "user123")
    short_lived = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"], ttl_s=2)
    await page.context.add_cookies(
        [{"name": "logstream_session", "value": short_lived, "url": stack.proxy.url}]
    )
    async with page.expect_request(lambda request: "/dev/token" in request.url) as renewal:
        await logs.connect()
        await logs.wait_state("CONNECTED")
        (first,) = await publish(sample_records(channel, unique_id)[:1])
        await logs.wait_rows([first])
    await renewal.value  # the gateway ended the stream with auth-expired; the page renewed
    (second,) = await publish(sample_records(channel, unique_id)[1:2])
    await logs.wait_rows([second])
    assert await logs.seqs() == [first, second]
    await logs.wait_state("CONNECTED")
    await expect(logs.error).to_be_hidden()


async def test_a_refused_stream_shows_why_on_the_page(
    stack, page, logs_page, screenshot, unique_id
):
    logs = await logs_page(page, service="etl", workspace_id="workspace456", workflow_id=unique_id)
    await logs.connect()  # user123 has workspace123 only
    await expect(logs.error).to_be_visible()
    await expect(logs.error).to_contain_text("HTTP 403")
    assert re.search(r"workspace456", await logs.error.text_content())
    await logs.wait_state("DISCONNECTED")
    await expect(page.get_by_test_id("disconnect-button")).to_be_disabled()
    await screenshot(page, "403-explained")


async def test_the_page_refuses_a_malformed_id_before_connecting(stack, page, logs_page):
    logs = await logs_page(page, service="etl", workspace_id="workspace123")
    await page.get_by_test_id("resource-input").fill("not a segment")
    await logs.connect()
    await expect(page.get_by_test_id("resource-input")).to_have_attribute("aria-invalid", "true")
    await expect(logs.error).to_contain_text("Workflow ID")
    assert await logs.status.get_attribute("data-state") == "DISCONNECTED"
