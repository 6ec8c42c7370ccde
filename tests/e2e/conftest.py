"""Fixtures for end-to-end tests: ``logstream up`` runs, and a real headless Chromium for the
Logs page (Debian's /usr/bin/chromium driven by Playwright; the tests skip when it is missing).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.support.up_process import Up

CHROMIUM = "/usr/bin/chromium"
# Headless in a container: no sandbox (no user namespaces), and nothing that phones home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
# Bounds a failing wait; a passing one returns as soon as the condition holds.
WAIT_MS = 15_000
VIEWPORT = {"width": 1440, "height": 900}
# When set, every screenshot is also copied there (for a person to look at after the run).
SCREENSHOTS_ENV = "LOGSTREAM_SCREENSHOTS_DIR"


@pytest.fixture
def running(tmp_path):
    """Starts ``up`` runs for a test, and kills whatever a failed test left."""
    runs: list[Up] = []

    def start(*flags: str, **options) -> Up:
        runs.append(Up(tmp_path, *flags, **options).start())
        return runs[-1].wait_banner()

    yield start
    for up in runs:
        up.kill_everything()


@pytest.fixture(scope="session")
async def browser():
    """One Chromium for the session; each test opens its own contexts (cookies, storage)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        playwright_api.expect.set_options(timeout=WAIT_MS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def new_context(browser):
    """Opens browser contexts (a fresh profile each) and fails the test if a page raised."""
    contexts, errors = [], []

    async def open_context(**options):
        context = await browser.new_context(viewport=VIEWPORT, accept_downloads=True, **options)
        context.set_default_timeout(WAIT_MS)
        context.on("page", lambda tab: tab.on("pageerror", lambda exc: errors.append(str(exc))))
        contexts.append(context)
        return context

    yield open_context
    for context in contexts:
        await context.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture
async def page(new_context):
    context = await new_context()
    return await context.new_page()


@pytest.fixture(scope="session")
def screenshot_dir(log_dir, request):
    """Where this run's screenshots go; the path is printed at the end of the run."""
    folder = Path(log_dir) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    taken = sorted(folder.glob("*.png"))
    if reporter is not None and capture is not None and taken:
        with capture.global_and_fixture_disabled():  # past the capture, to the terminal
            reporter.write_line(f"\nLogs page screenshots ({len(taken)}): {folder}")


@pytest.fixture
def screenshot(screenshot_dir, request):
    """``await screenshot(page, "state")`` saves ``<test>--<state>.png`` (and a copy where
    LOGSTREAM_SCREENSHOTS_DIR points)."""
    test = re.sub(r"[^A-Za-z0-9_]+", "_", request.node.name).strip("_")
    copies = os.environ.get(SCREENSHOTS_ENV)

    async def take(tab, state: str, **options) -> Path:
        path = screenshot_dir / f"{test}--{state}.png"
        await tab.screenshot(path=str(path), **options)
        if copies:
            Path(copies).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(copies) / path.name)
        return path

    return take


@pytest.fixture
def publish(stack):
    """``await publish(records, token=...)``: through the real ingest; returns the seqs."""

    async def send(records: list[dict], token: str = "l5-etl-token") -> list[int]:
        async with httpx.AsyncClient(timeout=15) as client:
            answer = await client.post(
                f"{stack.ingest.url}/api/logs/publish",
                json=records,
                headers={"Authorization": f"Bearer {token}"},
            )
        assert answer.status_code == 202, answer.text
        return answer.json()["seqs"]

    return send


@pytest.fixture
def gateway_stats(stack):
    """``await gateway_stats()``: the gateway's /admin/logs/stats, read as the dev admin."""
    token = stack.user_token("admin")

    async def read() -> dict:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(
                f"{stack.gateway.url}/admin/logs/stats",
                headers={"Authorization": f"Bearer {token}"},
            )
        assert answer.status_code == 200, answer.text
        return answer.json()

    return read


class LogsPage:
    """The Logs page in one tab, through its stable ``data-testid`` hooks."""

    def __init__(self, tab, base_url: str) -> None:
        self.tab = tab
        self.base_url = base_url
        self.status = tab.get_by_test_id("connection-status")
        self.error = tab.get_by_test_id("connection-error")
        self.rows = tab.get_by_test_id("log-row")

    async def open(self, **query: str) -> LogsPage:
        """Load the page (with ``query`` in its URL) and wait until it has signed in."""
        await self.tab.goto(f"{self.base_url}/?{httpx.QueryParams(query)}")
        await self.tab.wait_for_selector("html[data-ready=true]")
        return self

    def row(self, seq: int):
        return self.tab.locator(f'[data-testid="log-row"][data-seq="{seq}"]')

    async def connect(self) -> None:
        await self.tab.get_by_test_id("connect-button").click()

    async def wait_state(self, state: str) -> None:
        from playwright.async_api import expect

        await expect(self.status).to_have_attribute("data-state", state)
        await expect(self.status).to_have_text(state)

    async def wait_rows(self, seqs: list[int]) -> None:
        """Until every seq in ``seqs`` has a row."""
        await self.tab.wait_for_function(
            """seqs => seqs.every(s => document.querySelector(
                   `[data-testid="log-row"][data-seq="${s}"]`))""",
            arg=seqs,
        )

    async def seqs(self) -> list[int]:
        """The data-seq of every row in the DOM, top to bottom (duplicates included)."""
        return await self.tab.eval_on_selector_all(
            '[data-testid="log-row"]', "rows => rows.map(r => Number(r.dataset.seq))"
        )


@pytest.fixture
def logs_page(stack):
    """``await logs_page(tab, **query)``: the Logs page opened in ``tab``."""

    async def open_page(tab, **query: str) -> LogsPage:
        return await LogsPage(tab, stack.proxy.url).open(**query)

    return open_page


def make_records(channel: str, count: int, tag: str, level: str = "info") -> list[dict]:
    """``count`` distinct records for ``channel``, messages ``<tag> #<n>``."""
    return [
        {"channel": channel, "level": level, "source": "etl.test", "message": f"{tag} #{index}"}
        for index in range(count)
    ]


@pytest.fixture
def records():
    return make_records
