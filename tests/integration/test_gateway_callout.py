"""The product's own login: the gateway asks the product's backend who a caller is (the auth
callout, docs/reference/identities.md#the-auth-callout).

The backend is a real HTTP server on a thread of the test (``AuthBackend``) that knows sessions
by a ``session`` cookie; the gateways are real processes on the suite's NATS, read by httpx.
Records are written to JetStream as ingest would (``js_writer``), on the test's own workspace.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import jwt
import pytest

from tests.support.auth_backend import COOKIE, NOT_SIGNED_IN, AuthBackend
from tests.support.processes import ServiceProcess
from tests.support.sse_client import StreamRefused, open_stream
from tests.support.waiting import wait_until

# Bounds a failing wait only; a passing test moves on as soon as its event arrives.
DEADLINE_S = 20.0
SECRET = "gateway-callout-integration-secret-0123456789"
CALLOUT_TIMEOUT_S = 1.0


class Product:
    def __init__(self, backend: AuthBackend, gateway: ServiceProcess) -> None:
        self.backend, self.gateway = backend, gateway

    def stream_url(self, channel: str) -> str:
        return f"{self.gateway.url}/api/logs/stream?channels={channel}"

    def stop(self) -> None:
        self.gateway.stop()
        self.backend.stop()


def _product(nats_server, log_dir, *, ttl_s: float, args: tuple[str, ...] = ()) -> Product:
    backend = AuthBackend().start()
    gateway = ServiceProcess(
        "gateway",
        nats_url=nats_server.url_as("gateway"),
        log_dir=log_dir,
        dev=False,
        args=[
            "--jwt-secret",
            SECRET,
            "--auth-callout-url",
            backend.url,
            "--auth-callout-timeout",
            str(CALLOUT_TIMEOUT_S),
            "--auth-callout-ttl",
            str(ttl_s),
            *args,
        ],
    ).start()
    return Product(backend, gateway)


@pytest.fixture(scope="module")
def product(nats_server, log_dir, js_writer):
    made = _product(nats_server, log_dir, ttl_s=60)
    yield made
    made.stop()


@pytest.fixture
def fragile(nats_server, log_dir, js_writer):
    """Its own backend, which the test slows, breaks and stops."""
    made = _product(nats_server, log_dir, ttl_s=60)
    yield made
    made.stop()


@pytest.fixture(scope="module")
def short_lived(nats_server, log_dir, js_writer):
    """Asks again every second: an open stream's session is checked that often."""
    made = _product(nats_server, log_dir, ttl_s=1)
    yield made
    made.stop()


def history(product: Product, channel: str, cookies: dict[str, str] | None) -> httpx.Response:
    return httpx.get(
        f"{product.gateway.url}/api/logs/history",
        params={"channels": channel},
        cookies=cookies,
        timeout=DEADLINE_S,
    )


async def test_a_product_session_cookie_opens_a_stream_with_the_backends_workspaces(
    product, js_writer, unique_id
):
    channel = f"logs:etl:{unique_id}:wf1"
    cookies = product.backend.sign_in(f"s-{unique_id}", f"alice-{unique_id}", [unique_id])
    async with open_stream(product.stream_url(channel), cookies=cookies) as stream:
        connected = json.loads((await stream.next_of("connected")).data)
        assert connected["user_id"] == f"alice-{unique_id}"
        seq = await js_writer.put(channel, "seen through the product's login")
        [record] = await stream.logs(1)
    assert record["seq"] == seq and record["message"] == "seen through the product's login"
    # The backend was asked with the browser's cookie, and the gateway's own headers.
    asked = [h for h in product.backend.headers_seen if f"s-{unique_id}" in h.get("cookie", "")]
    assert asked and asked[0]["accept"] == "application/json"
    assert "x-forwarded-for" in asked[0]
    answer = history(product, channel, cookies)
    assert answer.status_code == 200, answer.text
    assert [r["seq"] for r in answer.json()["records"]] == [seq]


async def test_a_workspace_the_backend_did_not_grant_is_forbidden(product, unique_id):
    cookies = product.backend.sign_in(f"s-{unique_id}", "bob", [unique_id])
    with pytest.raises(StreamRefused) as refused:
        async with open_stream(product.stream_url("logs:etl:someone-else:wf1"), cookies=cookies):
            pass
    assert refused.value.status == 403
    assert refused.value.body["error"] == "forbidden"
    wildcard = history(product, "logs:etl:*:wf1", cookies)
    assert wildcard.status_code == 403


async def test_a_wrong_cookie_is_401_with_the_backends_message_and_an_audit_line(
    product, unique_id
):
    with pytest.raises(StreamRefused) as refused:
        async with open_stream(
            product.stream_url(f"logs:etl:{unique_id}"), cookies={COOKIE: f"forged-{unique_id}"}
        ):
            pass
    assert refused.value.status == 401
    assert refused.value.body == {
        "error": "unauthenticated",
        "message": NOT_SIGNED_IN,
        "details": [],
    }
    assert refused.value.response.headers["www-authenticate"] == "Bearer"
    # No credential at all: refused without asking the backend.
    before = product.backend.calls()
    bare = history(product, f"logs:etl:{unique_id}", None)
    assert bare.status_code == 401 and "sign in" in bare.json()["message"]
    assert product.backend.calls() == before
    denied = await wait_until(
        lambda: product.gateway.audit_lines("callout_denied"),
        "the gateway's audit line for the refused cookie",
        timeout=DEADLINE_S,
    )
    assert denied[-1]["status"] == 401 and NOT_SIGNED_IN in denied[-1]["reason"]


async def test_a_logstream_token_still_works_beside_the_callout(product, js_writer, unique_id):
    channel = f"logs:etl:{unique_id}"
    token = jwt.encode(
        {"sub": "token-user", "workspaces": [unique_id], "exp": int(time.time()) + 600},
        SECRET,
        algorithm="HS256",
    )
    before = product.backend.calls()
    async with open_stream(product.stream_url(channel), token=token) as stream:
        connected = json.loads((await stream.next_of("connected")).data)
    assert connected["user_id"] == "token-user"
    assert product.backend.calls() == before  # a verified token asks nobody


async def test_twenty_streams_on_one_cookie_ask_the_backend_once_and_users_never_share(
    product, js_writer, unique_id
):
    backend = product.backend
    channel = f"logs:etl:{unique_id}"
    alice = backend.sign_in(f"alice-{unique_id}", "alice", [unique_id])
    bob = backend.sign_in(f"bob-{unique_id}", "bob", [f"{unique_id}-bob"])
    async with asyncio.TaskGroup() as group:

        async def one(cookies: dict[str, str], channel: str) -> str:
            async with open_stream(product.stream_url(channel), cookies=cookies) as stream:
                return json.loads((await stream.next_of("connected")).data)["user_id"]

        alices = [group.create_task(one(alice, channel)) for _ in range(20)]
        bobs = [group.create_task(one(bob, f"logs:etl:{unique_id}-bob")) for _ in range(5)]
    assert {task.result() for task in alices} == {"alice"}
    assert {task.result() for task in bobs} == {"bob"}
    assert backend.calls(f"alice-{unique_id}") <= 2
    assert backend.calls(f"bob-{unique_id}") <= 2
    # Bob's identity never answers for Alice's cookie, nor the other way round.
    assert history(product, f"logs:etl:{unique_id}-bob", alice).status_code == 403
    assert history(product, channel, bob).status_code == 403
    metrics = httpx.get(f"{product.gateway.url}/metrics", timeout=DEADLINE_S).text
    granted = re.search(
        r'^logstream_gateway_auth_callouts_total{outcome="granted"} (\S+)$', metrics, re.M
    )
    assert granted is not None and float(granted.group(1)) >= 2


async def test_the_backend_down_slow_or_answering_garbage_is_503_never_a_grant(fragile, unique_id):
    backend, channel = fragile.backend, f"logs:etl:{unique_id}"
    cookies = backend.sign_in(f"s-{unique_id}", "carol", [unique_id])

    def refused_with_503(why: str) -> httpx.Response:
        answer = history(fragile, channel, cookies)
        assert answer.status_code == 503, (why, answer.text)
        assert answer.json()["error"] == "auth_unavailable", why
        assert int(answer.headers["retry-after"]) >= 1, why
        return answer

    backend.body = b"<html>a login page</html>"
    assert "not JSON" in refused_with_503("garbage").json()["message"]
    backend.body = json.dumps({"user": "carol", "workspaces": "all"}).encode()
    refused_with_503("the wrong shape")
    backend.body = json.dumps({"user": "carol", "workspaces": ["*"], "expires_in": -5}).encode()
    refused_with_503("a negative expiry")
    backend.body, backend.status = None, 500
    assert "answered 500" in refused_with_503("a 500").json()["message"]
    backend.status = 302
    refused_with_503("a redirect to its login page")
    backend.status = None

    backend.delay_s = 30.0
    started = time.monotonic()
    assert "within 1 s" in refused_with_503("slow").json()["message"]
    # Well within the backend's 30 s: the callout's own timeout (1 s) answered.
    assert time.monotonic() - started < 15
    backend.delay_s = 0.0

    backend.stop()
    with pytest.raises(StreamRefused) as refused:
        async with open_stream(fragile.stream_url(channel), cookies=cookies):
            pass
    assert refused.value.status == 503 and refused.value.response.headers["retry-after"]
    assert fragile.gateway.audit_lines("callout_unavailable")
    # Unavailability is not remembered: the backend back, the same cookie is let in at once.
    backend.start()
    assert history(fragile, channel, cookies).status_code == 200


async def test_expires_in_ends_an_open_stream_with_auth_expired_and_it_resumes(
    product, js_writer, unique_id
):
    """``expires_in`` is the identity's expiry, as a token's ``exp``: the stream ends then even
    though the backend would still say yes; the reconnect is asked for anew and loses nothing."""
    backend, channel = product.backend, f"logs:etl:{unique_id}"
    session = f"s-{unique_id}"
    cookies = backend.sign_in(session, "dave", [unique_id], expires_in=2)
    async with open_stream(product.stream_url(channel), cookies=cookies) as stream:
        await stream.next_of("connected")
        first = await js_writer.put(channel, "before the expiry")
        assert [r["seq"] for r in await stream.logs(1)] == [first]
        ended = await stream.next_of("auth-expired", timeout=DEADLINE_S)
        assert "expires_in has passed" in json.loads(ended.data)["reason"]
        with pytest.raises(EOFError):
            await stream.next_of("log", timeout=DEADLINE_S)
    asked = backend.calls(session)
    missed = await js_writer.put(channel, "while away")
    async with open_stream(
        product.stream_url(channel), cookies=cookies, headers={"Last-Event-ID": str(first)}
    ) as resumed:
        await resumed.next_of("connected")
        assert [r["seq"] for r in await resumed.logs(1)] == [missed]
    assert backend.calls(session) == asked + 1  # the expired answer was not reused


async def test_a_live_session_keeps_its_stream_through_renewals_and_sign_out_ends_it(
    short_lived, js_writer, unique_id
):
    backend, channel = short_lived.backend, f"logs:etl:{unique_id}"
    session = f"s-{unique_id}"
    cookies = backend.sign_in(session, "erin", [unique_id])
    async with open_stream(short_lived.stream_url(channel), cookies=cookies) as stream:
        await stream.next_of("connected")
        # The gateway asks again every second (its TTL); the stream goes on meanwhile.
        await wait_until(
            lambda: backend.calls(session) >= 3,
            "the gateway to renew the session twice",
            timeout=DEADLINE_S,
        )
        seq = await js_writer.put(channel, "after two renewals")
        assert [r["seq"] for r in await stream.logs(1)] == [seq]
        backend.sign_out(session)
        ended = await stream.next_of("auth-expired", timeout=DEADLINE_S)
        reason = json.loads(ended.data)["reason"]
        assert "no longer vouches" in reason and NOT_SIGNED_IN in reason


async def test_a_narrowed_session_ends_the_stream_it_no_longer_covers(
    short_lived, js_writer, unique_id
):
    backend, channel = short_lived.backend, f"logs:etl:{unique_id}"
    session = f"s-{unique_id}"
    cookies = backend.sign_in(session, "frank", [unique_id, f"{unique_id}-other"])
    async with open_stream(short_lived.stream_url(channel), cookies=cookies) as stream:
        await stream.next_of("connected")
        backend.sign_in(session, "frank", [f"{unique_id}-other"])  # removed from the workspace
        ended = await stream.next_of("auth-expired", timeout=DEADLINE_S)
        assert "no longer covers" in json.loads(ended.data)["reason"]


async def test_through_the_proxy_the_product_cookie_reaches_the_backend_and_no_other(
    product, nats_server, log_dir, js_writer, unique_id
):
    proxy = ServiceProcess(
        "proxy",
        nats_url=nats_server.url,
        log_dir=log_dir,
        dev=False,
        args=["--gateway-url", product.gateway.url, "--forward-cookies", COOKIE],
    ).start()
    try:
        session = f"s-{unique_id}"
        product.backend.sign_in(session, "grace", [unique_id])
        url = (
            f"{proxy.url}/api/dapadmin/l5-etl/sse/logs/stream"
            f"?workspace_id={unique_id}&workflow_id=wf1"
        )
        # As a browser sends them: the product's session among the site's other cookies.
        browser = {"Cookie": f"_ga=GA1.1.tracker; {COOKIE}={session}; theme=dark"}
        async with open_stream(url, headers=browser) as stream:
            connected = json.loads((await stream.next_of("connected")).data)
            seq = await js_writer.put(f"logs:etl:{unique_id}:wf1", "through the proxy")
            [record] = await stream.logs(1)
        assert connected["user_id"] == "grace" and record["seq"] == seq
        asked = [c for h in product.backend.headers_seen if session in (c := h.get("cookie", ""))]
        assert asked == [f"{COOKIE}={session}"]
    finally:
        proxy.stop()


def test_with_the_products_login_the_page_offers_no_dev_users_even_in_dev_mode(
    product, nats_server, log_dir
):
    """A dev user's token would win over the product's session at the gateway: the page that
    passes the product's cookie on (or sends people to its login) picks none."""
    for extra in (["--forward-cookies", COOKIE], ["--sign-in-url", "/login"]):
        proxy = ServiceProcess(
            "proxy",
            nats_url=nats_server.url,
            log_dir=log_dir,
            dev=True,
            args=["--gateway-url", product.gateway.url, *extra],
        ).start()
        try:
            page = httpx.get(proxy.url + "/", timeout=DEADLINE_S).text
        finally:
            proxy.stop()
        assert '"dev":true' in page and '"dev_users":[]' in page, extra


async def test_named_cookies_alone_reach_the_backend_and_make_the_credential(
    nats_server, log_dir, js_writer, unique_id
):
    """A browser talking to the gateway directly sends all its cookies: with
    ``auth_callout_cookies`` only the session goes to the backend, and a changing analytics
    cookie is not a new credential."""
    made = _product(nats_server, log_dir, ttl_s=60, args=("--auth-callout-cookies", COOKIE))
    try:
        session = f"s-{unique_id}"
        made.backend.sign_in(session, "heidi", [unique_id])
        for visit in range(3):
            browser = {"Cookie": f"_ga=GA1.{visit}; {COOKIE}={session}; theme=dark"}
            async with open_stream(
                made.stream_url(f"logs:etl:{unique_id}"), headers=browser
            ) as stream:
                connected = json.loads((await stream.next_of("connected")).data)
            assert connected["user_id"] == "heidi"
        assert made.backend.calls(session) == 1
        assert [h["cookie"] for h in made.backend.headers_seen] == [f"{COOKIE}={session}"]
        # Only other cookies: nothing to ask about.
        answer = httpx.get(
            f"{made.gateway.url}/api/logs/history",
            params={"channels": f"logs:etl:{unique_id}"},
            headers={"Cookie": "_ga=GA1.9; theme=dark"},
            timeout=DEADLINE_S,
        )
        assert answer.status_code == 401 and made.backend.calls() == 1
    finally:
        made.stop()
