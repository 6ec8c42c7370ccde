"""The Datashop example (examples/product/) in a real Chromium: a product with its own login,
and the Logs page reading the product's session through the gateway's auth callout.

Datashop's app.py runs as a reader would run it (its own process, on a free port). A gateway and
a proxy of this module's own run on the suite's NATS, configured through the variables
examples/product/run.py gives `logstream up`: the gateway's callout points at Datashop (with a
TTL of 2 s, so a sign-out ends a stream fast), the proxy forwards ``datashop_session`` and links
to Datashop's login. Records go in through the suite's ingest, on the same NATS.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import expect

from tests.e2e.conftest import LogsPage
from tests.support.nats_source import distinct_free_ports
from tests.support.processes import ServiceProcess
from tests.support.waiting import wait_until_blocking

pytestmark = pytest.mark.browser

APP = Path(__file__).resolve().parents[2] / "examples" / "product" / "app.py"
# An open stream asks Datashop again this often: the most a sign-out takes to end it.
CALLOUT_TTL_S = 2
# The page shows the end of the stream within the TTL, plus a renewal and a rendering.
SIGNED_OUT_WITHIN_MS = (CALLOUT_TTL_S + 8) * 1000
# The channel alice's Logs link watches (bob's is in workspace456).
ALICE_CHANNEL = "logs:etl:workspace123:workflow456"
ALICE_VIEW = {
    "service": "etl",
    "workspace_id": "workspace123",
    "workflow_id": "workflow456",
    "channels": ALICE_CHANNEL,
}
BOB_CHANNEL = "logs:etl:workspace456:inventory-snapshot"


@dataclass
class Datashop:
    url: str
    gateway: ServiceProcess
    proxy: ServiceProcess


@pytest.fixture(scope="module")
def datashop(nats_server, log_dir) -> Iterator[Datashop]:
    """Datashop, and a gateway and proxy that know it; stopped after the module."""
    product_port, proxy_port = distinct_free_ports(2)
    product_url = f"http://127.0.0.1:{product_port}"
    gateway = ServiceProcess(
        "gateway",
        nats_url=nats_server.url,
        log_dir=log_dir,
        env={
            "LOGSTREAM_AUTH_CALLOUT_URL": f"{product_url}/auth/logstream",
            "LOGSTREAM_AUTH_CALLOUT_TTL": str(CALLOUT_TTL_S),
        },
    )
    proxy = ServiceProcess(
        "proxy",
        nats_url=nats_server.url,
        log_dir=log_dir,
        port=proxy_port,
        args=["--gateway-url", gateway.url],
        env={
            "LOGSTREAM_FORWARD_COOKIES": "datashop_session",
            "LOGSTREAM_SIGN_IN_URL": f"{product_url}/login",
        },
    )
    log_path = Path(log_dir) / f"datashop-{product_port}.log"
    with open(log_path, "ab") as log:
        product = subprocess.Popen(
            [sys.executable, str(APP), "--port", str(product_port), "--logs-url", proxy.url],
            stdout=log,
            stderr=log,
        )
    try:
        gateway.start(wait=False)
        proxy.start(wait=False)

        def product_answers() -> bool:
            if product.poll() is not None:
                raise RuntimeError(f"Datashop exited with {product.returncode}; see {log_path}")
            return httpx.get(f"{product_url}/login", timeout=1).status_code == 200

        wait_until_blocking(
            product_answers, "Datashop to answer GET /login", retry_on=httpx.TransportError
        )
        gateway.wait_ready()
        proxy.wait_ready()
        yield Datashop(product_url, gateway, proxy)
    finally:
        for service in (proxy, gateway):
            service.stop()
        product.terminate()
        try:
            product.wait(10)
        except subprocess.TimeoutExpired:
            product.kill()
            product.wait()


async def sign_in(tab, user: str, password: str) -> None:
    """Fill in Datashop's login form (the tab shows it) and submit it."""
    await tab.get_by_label("Username").fill(user)
    await tab.get_by_label("Password").fill(password)
    await tab.get_by_role("button", name="Sign in").click()


async def on_logs_page(tab, datashop: Datashop) -> LogsPage:
    """The tab has arrived on the Logs page and the page has started."""
    await tab.wait_for_url(f"{datashop.proxy.url}/**")
    await tab.wait_for_selector("html[data-ready=true]")
    return LogsPage(tab, datashop.proxy.url)


async def test_alice_reads_her_logs_with_her_datashop_session_until_she_signs_out(
    datashop, new_context, publish, records, screenshot, unique_id
):
    context = await new_context()
    tab = await context.new_page()
    await tab.goto(datashop.url)  # not signed in: Datashop shows its login form
    await expect(tab).to_have_url(re.compile(r"/login"))
    await sign_in(tab, "alice", "not-her-password")
    await expect(tab.get_by_test_id("login-error")).to_have_text("Wrong username or password.")
    await sign_in(tab, "alice", "alice-password")
    await expect(tab.get_by_test_id("whoami")).to_contain_text("Signed in as alice")

    await tab.get_by_role("link", name="Logs").click()
    logs = await on_logs_page(tab, datashop)
    await logs.wait_state("CONNECTED")
    # The product's login replaces the dev users: no picker, no Logstream token in the page.
    await expect(tab.get_by_test_id("user-select")).to_be_hidden()
    await expect(tab.locator("#whoami")).to_have_text("Signed in as alice")
    assert not [c for c in await context.cookies() if c["name"] == "logstream_session"]
    live = await publish(records(ALICE_CHANNEL, 3, f"alice {unique_id}"))
    await logs.wait_rows(live)
    await expect(logs.row(live[-1])).to_contain_text(f"alice {unique_id} #2")
    await screenshot(tab, "signed-in-through-datashop")

    # Signing out of Datashop, in another tab of the same browser, ends the Logs page's stream.
    home = await context.new_page()
    await home.goto(datashop.url)
    await home.get_by_role("button", name="Sign out").click()
    await expect(home).to_have_url(re.compile(r"/login"))
    await expect(logs.error).to_contain_text("HTTP 401", timeout=SIGNED_OUT_WITHIN_MS)
    # (the page tried once more, as it does after auth-expired: the cookie is gone now)
    await expect(logs.error).to_contain_text("sign in to the product")
    await logs.wait_state("DISCONNECTED")
    await expect(logs.rows.filter(has_text=f"alice {unique_id}")).to_have_count(len(live))
    sign_in_link = tab.get_by_test_id("sign-in-link")
    await expect(sign_in_link).to_be_visible()
    await screenshot(tab, "signed-out-of-datashop")
    target = urlsplit(await sign_in_link.get_attribute("href") or "")
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{datashop.url}/login"
    assert parse_qs(target.query)["next"] == [tab.url]  # back to this view afterwards

    missed = await publish(records(ALICE_CHANNEL, 2, f"alice signed out {unique_id}"))

    # The link leads to Datashop's login and, signed in again, back to the same view.
    await sign_in_link.click()
    await expect(tab).to_have_url(re.compile(re.escape(f"{datashop.url}/login")))
    await sign_in(tab, "alice", "alice-password")
    logs = await on_logs_page(tab, datashop)
    await expect(tab.get_by_test_id("watched-channel")).to_have_attribute(
        "data-channel", ALICE_CHANNEL
    )
    await screenshot(tab, "back-from-sign-in")
    # Stopped for want of a sign-in, the view resumes by itself once signed in again.
    await logs.wait_state("CONNECTED")
    await logs.wait_rows(missed)  # it resumes after the last record shown: nothing is lost
    more = await publish(records(ALICE_CHANNEL, 2, f"alice again {unique_id}"))
    await logs.wait_rows(more)
    ours = live + missed + more
    assert [seq for seq in await logs.seqs() if seq in ours] == ours  # in order, each once
    await expect(logs.error).to_be_hidden()


async def test_bob_reads_his_workspace_but_not_alices(
    datashop, new_context, publish, records, screenshot, unique_id
):
    context = await new_context()
    tab = await context.new_page()
    await tab.goto(f"{datashop.url}/login")
    await sign_in(tab, "bob", "bob-password")
    await expect(tab.get_by_test_id("whoami")).to_contain_text("Signed in as bob")
    await tab.get_by_role("link", name="Logs").click()
    logs = await on_logs_page(tab, datashop)
    await logs.wait_state("CONNECTED")
    (seq,) = await publish(records(BOB_CHANNEL, 1, f"bob {unique_id}"))
    await logs.wait_rows([seq])

    # The address of alice's view, pasted into bob's browser: refused, and why.
    logs = await LogsPage(tab, datashop.proxy.url).open(**ALICE_VIEW)
    await expect(logs.error).to_contain_text("HTTP 403")
    await expect(logs.error).to_contain_text("workspace123")
    await logs.wait_state("DISCONNECTED")
    await expect(tab.get_by_test_id("sign-in-link")).to_be_hidden()  # signed in; not allowed
    await expect(logs.rows).to_have_count(0)
    await screenshot(tab, "bob-refused-alices-workspace")
