"""The proxy as a real process in front of a real gateway (docs/reference/stream.md#proxy-routes, docs/reference/identities.md and docs/reference/stream.md#service-endpoints).

Most tests use the session ``stack`` (ingest + gateway + proxy in dev mode on one NATS). A few
start their own proxy: one whose gateway is a closed port (502), one in production mode, one in
front of a recording HTTP server that shows exactly what the proxy forwards.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.support.nats_source import free_port
from tests.support.processes import ServiceProcess, responds_with
from tests.support.sse_client import open_stream
from tests.support.waiting import wait_until, wait_until_blocking

ETL = "/api/dapadmin/l5-etl/sse/logs/stream"
FAAS = "/api/dapadmin/faas/sse/logs/stream"
ANALYTICS = "/api/dapadmin/analytics/sse/logs/stream"
PLATFORM = "/api/dapadmin/platform/sse/logs/stream"
# route -> (ingest token that may publish there, its query parameters besides workspace_id)
ROUTES = {
    ETL: ("l5-etl-token", "etl", "workflow_id"),
    FAAS: ("faas-token", "faas", "function_id"),
    ANALYTICS: ("analytics-token", "analytics", None),
    PLATFORM: ("platform-token", "platform", None),
}
WORKSPACE = "workspace123"  # the only workspace of dev user user123
# Bounds a failing wait only; a passing test moves on as soon as the event happens.
DEADLINE_S = 15.0
# The gateway's heartbeat is 15 s: an upstream that closes well before that was closed by the
# client leaving, not discovered at the next write.
UPSTREAM_CLOSE_BOUND_S = 8.0


def route_query(path: str, resource: str) -> tuple[dict[str, str], str]:
    """The route's query for ``resource`` in workspace123, and the channel it streams."""
    _, service, param = ROUTES[path]
    if param is None:
        return {"workspace_id": WORKSPACE}, f"logs:{service}:{WORKSPACE}"
    return {"workspace_id": WORKSPACE, param: resource}, f"logs:{service}:{WORKSPACE}:{resource}"


async def publish(stack, token: str, channel: str, message: str, **extra) -> int:
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        answer = await client.post(
            f"{stack.ingest.url}/api/logs/publish",
            headers={"Authorization": f"Bearer {token}"},
            json={"channel": channel, "message": message, **extra},
        )
    assert answer.status_code == 202, answer.text
    return answer.json()["seqs"][0]


async def next_record_with(stream, message: str) -> dict:
    """The next log record carrying ``message`` (a shared channel may carry others' records)."""

    async def find():
        while True:
            (record,) = await stream.logs(1)
            if record["message"] == message:
                return record

    return await asyncio.wait_for(find(), DEADLINE_S)


# -- extra proxies --------------------------------------------------------------------------


class RecordingGateway:
    """A real HTTP server standing in for a gateway: records each request, answers a short SSE."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path in ("/health", "/ready"):
                    return self._answer(200, "application/json", b'{"status":"ok"}')
                url = urlsplit(self.path)
                headers = {name.lower(): value for name, value in self.headers.items()}
                recorder.requests.append(
                    {"path": url.path, "query": parse_qs(url.query), "headers": headers}
                )
                self._answer(
                    200,
                    "text/event-stream",
                    b"retry: 1000\nid: 41\nevent: connected\ndata: {}\n\n"
                    b'id: 42\nevent: log\ndata: {"seq":42,"message":"recorded"}\n\n',
                )

            def _answer(self, status, media_type, body):
                self.send_response(status)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ExtraProxies:
    def __init__(self, recorder: RecordingGateway, **processes: ServiceProcess) -> None:
        self.recorder = recorder
        self.dead = processes["dead"]  # its gateway is a closed port
        self.prod = processes["prod"]  # production mode
        self.recorded = processes["recorded"]  # in front of the RecordingGateway
        self.failover = processes["failover"]  # a closed port and the stack's gateway
        self.drained = processes["drained"]  # for the SIGTERM test alone: it does not survive it


@pytest.fixture(scope="module")
def proxies(stack, nats_server, log_dir):
    """More proxies, started together, each configured for one situation (see ExtraProxies)."""
    recorder = RecordingGateway()
    closed = f"http://127.0.0.1:{free_port()}"
    gateways = {
        "dead": closed,
        "prod": stack.gateway.url,
        "recorded": recorder.url,
        "failover": f"{closed},{stack.gateway.url}",
        "drained": stack.gateway.url,
    }
    processes = {
        name: ServiceProcess(
            "proxy",
            nats_url=nats_server.url,
            log_dir=log_dir,
            dev=name != "prod",
            args=["--gateway-url", url],
        )
        for name, url in gateways.items()
    }
    for process in processes.values():
        process.start(wait=False)
    try:
        for process in processes.values():
            process.wait_healthy()
        yield ExtraProxies(recorder, **processes)
    finally:
        for process in processes.values():
            process.stop()
        recorder.stop()


# -- streaming through the proxy ------------------------------------------------------------


@pytest.mark.parametrize("path", list(ROUTES))
async def test_each_route_streams_a_record_published_through_ingest(stack, unique_id, path):
    query, channel = route_query(path, unique_id)
    token = stack.user_token("user123")
    async with open_stream(stack.proxy.url + path, token=token, params=query) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["cache-control"] == "no-cache"
        connected = await stream.next_of("connected")
        assert json.loads(connected.data)["channels"] == [channel]
        seq = await publish(stack, ROUTES[path][0], channel, f"hello {unique_id}")
        record = await next_record_with(stream, f"hello {unique_id}")
    assert (record["seq"], record["channel"]) == (seq, channel)


async def test_a_session_cookie_from_dev_token_authenticates_the_stream(stack, unique_id):
    query, channel = route_query(ETL, unique_id)
    async with httpx.AsyncClient() as client:
        issued = await client.get(f"{stack.proxy.url}/dev/token", params={"user": "user123"})
    cookies = {"logstream_session": issued.cookies["logstream_session"]}
    async with open_stream(stack.proxy.url + ETL, params=query, cookies=cookies) as stream:
        connected = await stream.next_of("connected")
        assert json.loads(connected.data)["user_id"] == "user123"
        await publish(stack, "l5-etl-token", channel, "via cookie")
        assert (await next_record_with(stream, "via cookie"))["channel"] == channel


@pytest.mark.parametrize("how", ["header", "query"])
async def test_a_resume_cursor_passes_through_to_the_gateway(stack, unique_id, how):
    query, channel = route_query(FAAS, unique_id)
    seqs = [await publish(stack, "faas-token", channel, f"m{i}") for i in range(3)]
    headers = {"Last-Event-ID": str(seqs[0])} if how == "header" else {}
    params = {**query, "last_event_id": str(seqs[0])} if how == "query" else query
    async with open_stream(
        stack.proxy.url + FAAS, token=stack.user_token("user123"), params=params, headers=headers
    ) as stream:
        records = await stream.logs(2)
    assert [r["seq"] for r in records] == seqs[1:]
    assert [r["message"] for r in records] == ["m1", "m2"]


async def test_stream_filters_pass_through_to_the_gateway(stack, unique_id):
    query, channel = route_query(ETL, unique_id)
    params = {**query, "level": "error", "q": "needle"}
    async with open_stream(
        stack.proxy.url + ETL, token=stack.user_token("user123"), params=params
    ) as stream:
        await stream.next_of("connected")
        await publish(stack, "l5-etl-token", channel, "needle but info", level="info")
        await publish(stack, "l5-etl-token", channel, "error without it", level="error")
        await publish(stack, "l5-etl-token", channel, "error with needle", level="error")
        (record,) = await stream.logs(1)
    assert record["message"] == "error with needle"


async def test_the_upstream_stream_closes_soon_after_the_client_leaves(stack, unique_id):
    query, channel = route_query(ETL, unique_id)

    async def subscribers() -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            stats = (await client.get(f"{stack.gateway.url}/admin/logs/stats")).json()
        return stats["channels"].get(channel, 0)

    async def none_left() -> bool:
        return await subscribers() == 0

    async with open_stream(
        stack.proxy.url + ETL, token=stack.user_token("user123"), params=query
    ) as stream:
        await stream.next_of("connected")
        assert await subscribers() == 1
        left_at = time.monotonic()
    await wait_until(none_left, "the gateway connection to close", timeout=UPSTREAM_CLOSE_BOUND_S)
    assert time.monotonic() - left_at < UPSTREAM_CLOSE_BOUND_S


def test_sigterm_ends_open_streams_with_a_retry_hint_and_exits(proxies, stack, unique_id):
    query, _channel = route_query(ETL, unique_id)
    auth = {"Authorization": f"Bearer {stack.user_token('user123')}"}
    with httpx.stream(
        "GET", proxies.drained.url + ETL, params=query, headers=auth, timeout=DEADLINE_S
    ) as response:
        chunks = response.iter_raw()
        seen = b""
        while b"event: connected" not in seen:
            seen += next(chunks)
        proxies.drained.process.send_signal(signal.SIGTERM)
        rest = b"".join(chunks)
    assert rest.endswith(b"retry: 2000\n\n")
    # uvicorn re-raises the signal once it has shut down cleanly, hence -SIGTERM as well as 0.
    assert proxies.drained.process.wait(DEADLINE_S) in (0, -signal.SIGTERM)
    assert "Traceback" not in proxies.drained.log()


def test_a_client_gone_before_the_stream_starts_leaves_no_upstream_open(stack, unique_id):
    query, channel = route_query(ETL, unique_id)
    opened = re.compile(r'logstream_proxy_stream_requests_total\{route="etl",status="200"\} (\S+)')

    def upstreams_opened() -> float:
        found = opened.search(httpx.get(stack.proxy.url + "/metrics").text)
        return float(found.group(1)) if found else 0.0

    def subscribers() -> int:
        stats = httpx.get(f"{stack.gateway.url}/admin/logs/stats", timeout=5).json()
        return stats["channels"].get(channel, 0)

    before = upstreams_opened()
    request = (
        f"GET {ETL}?{urlencode(query)} HTTP/1.1\r\nHost: proxy\r\n"
        f"Authorization: Bearer {stack.user_token('user123')}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", stack.proxy.port), timeout=5) as sock:
        sock.sendall(request.encode())  # and hang up at once, before any answer
    wait_until_blocking(
        lambda: upstreams_opened() > before,
        "the proxy to open the upstream stream",
        timeout=DEADLINE_S,
    )
    wait_until_blocking(
        lambda: subscribers() == 0,
        "the upstream stream to close",
        timeout=UPSTREAM_CLOSE_BOUND_S,
    )


# -- refusals ---------------------------------------------------------------------------------


def test_a_request_without_credential_gets_the_gateways_401(stack, unique_id):
    query, _ = route_query(ETL, unique_id)
    answer = httpx.get(stack.proxy.url + ETL, params=query, timeout=DEADLINE_S)
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthenticated"
    assert answer.headers["www-authenticate"] == "Bearer"


def test_a_bad_token_gets_the_gateways_401(stack, unique_id):
    query, _ = route_query(ANALYTICS, unique_id)
    answer = httpx.get(
        stack.proxy.url + ANALYTICS,
        params=query,
        timeout=DEADLINE_S,
        headers={"Authorization": "Bearer not-a-jwt"},
    )
    assert answer.status_code == 401
    assert set(answer.json()) == {"error", "message", "details"}


@pytest.mark.parametrize("path", list(ROUTES))
def test_another_workspace_gets_the_gateways_403(stack, unique_id, path):
    _, _, param = ROUTES[path]
    query = {"workspace_id": "workspace456", **({param: unique_id} if param else {})}
    answer = httpx.get(
        stack.proxy.url + path,
        params=query,
        timeout=DEADLINE_S,
        headers={"Authorization": f"Bearer {stack.user_token('user123')}"},
    )
    assert answer.status_code == 403
    body = answer.json()
    assert body["error"] == "forbidden"
    assert "workspace456" in body["message"]


def test_a_bad_cursor_gets_the_gateways_400(stack, unique_id):
    query, _ = route_query(ETL, unique_id)
    answer = httpx.get(
        stack.proxy.url + ETL,
        params={**query, "last_event_id": "abc"},
        headers={"Authorization": f"Bearer {stack.user_token('user123')}"},
        timeout=DEADLINE_S,
    )
    assert answer.status_code == 400
    assert "last_event_id" in answer.json()["message"]


def _param_cases():
    for path, (_, _, param) in ROUTES.items():
        names = ["workspace_id"] + ([param] if param else [])
        for name in names:
            yield pytest.param(path, name, id=f"{path.split('/')[3]}-{name}")


@pytest.mark.parametrize(("path", "name"), list(_param_cases()))
@pytest.mark.parametrize("value", [None, "", "bad.value", "x" * 65, "a b"])
def test_a_missing_or_invalid_parameter_is_a_400_naming_it(proxies, path, name, value):
    # The proxy with no gateway answers: the 400 comes from the proxy before any upstream call.
    query, _ = route_query(path, "resource1")
    if value is None:
        del query[name]
    else:
        query[name] = value
    answer = httpx.get(
        proxies.dead.url + path,
        params=query,
        timeout=DEADLINE_S,
        headers={"Authorization": "Bearer anything"},
    )
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid_request"
    assert f"'{name}'" in body["message"]
    assert body["details"][0]["parameter"] == name


def test_a_gateway_that_is_down_is_a_502(proxies, unique_id):
    query, _ = route_query(ETL, unique_id)
    answer = httpx.get(
        proxies.dead.url + ETL,
        params=query,
        timeout=DEADLINE_S,
        headers={"Authorization": "Bearer anything"},
    )
    assert answer.status_code == 502
    body = answer.json()
    assert body["error"] == "bad_gateway"
    assert body["message"] and body["details"] == []
    assert int(answer.headers["retry-after"]) > 0


async def test_streams_fail_over_to_a_gateway_that_answers(proxies, stack, unique_id):
    await wait_until(
        lambda: responds_with(proxies.failover.url + "/ready", 200),
        "the failover proxy to be ready",
        timeout=DEADLINE_S,
    )
    assert "1 of 2" in httpx.get(proxies.failover.url + "/ready").json()["reason"]
    query, _ = route_query(PLATFORM, unique_id)
    for _ in range(3):  # round-robin starts each stream at a different gateway
        async with open_stream(
            proxies.failover.url + PLATFORM, params=query, token=stack.user_token("user123")
        ) as stream:
            assert (await stream.next_of("connected")).id
    metrics = httpx.get(proxies.failover.url + "/metrics").text
    assert re.search(r'logstream_proxy_gateway_up\{gateway="http://[^"]+"\} 0\.0', metrics)


def test_the_proxy_passes_through_only_its_configured_routes_and_the_gateways_read_paths(stack):
    for path in ("/admin/logs/stats", "/api/dapadmin/other/sse/logs/stream"):
        answer = httpx.get(
            stack.proxy.url + path, params={"channels": "logs:etl:workspace123"}, timeout=DEADLINE_S
        )
        assert answer.status_code == 404, path
    for path in ("/api/logs/stream", "/api/logs/history", "/api/logs/channels"):
        answer = httpx.get(
            stack.proxy.url + path,
            params={"channels": "logs:etl:workspace123", "prefix": "logs:etl:workspace123"},
            timeout=DEADLINE_S,
        )
        assert answer.status_code == 401, path  # the gateway's answer: no credential
    assert httpx.post(stack.proxy.url + "/test/logs", timeout=DEADLINE_S).status_code in (404, 405)


# -- what is forwarded ------------------------------------------------------------------------


def test_the_credential_identity_hints_cursor_and_filters_are_forwarded(proxies, stack):
    token = stack.user_token("user456")
    recorder = proxies.recorder
    recorder.requests.clear()
    query = {
        "workspace_id": "workspace456",
        "workflow_id": "wf9",
        "since": "10m",
        "tail": "5",
        "level": "warn",
        "q": "boom",
        "unrelated": "dropped",
    }
    headers = {
        "Authorization": f"Bearer {token}",
        "Last-Event-ID": "17",
        "Cookie": "logstream_session=cookie-token; other=private",
        "X-User-Id": "spoofed",
        "X-Workspace-Id": "spoofed",
    }
    answer = httpx.get(
        proxies.recorded.url + ETL, params=query, headers=headers, timeout=DEADLINE_S
    )
    assert answer.status_code == 200
    assert answer.headers["x-accel-buffering"] == "no"
    assert b"event: log" in answer.content and b"recorded" in answer.content
    (seen,) = recorder.requests
    assert seen["path"] == "/api/logs/stream"
    assert seen["query"] == {
        "channels": ["logs:etl:workspace456:wf9"],
        "since": ["10m"],
        "tail": ["5"],
        "level": ["warn"],
        "q": ["boom"],
    }
    forwarded = seen["headers"]
    assert forwarded["authorization"] == f"Bearer {token}"
    assert forwarded["cookie"] == "logstream_session=cookie-token"
    assert forwarded["last-event-id"] == "17"
    assert forwarded["x-user-id"] == "user456"
    assert forwarded["x-workspace-id"] == "workspace456"


def test_a_query_cursor_is_forwarded_when_no_header_is_sent(proxies):
    proxies.recorder.requests.clear()
    httpx.get(
        proxies.recorded.url + ANALYTICS,
        timeout=DEADLINE_S,
        params={"workspace_id": "w1", "last_event_id": "5"},
    )
    (seen,) = proxies.recorder.requests
    assert seen["query"]["last_event_id"] == ["5"]
    assert "x-user-id" not in seen["headers"]  # no credential, so no identity hint


# -- dev tokens, the page, service routes -------------------------------------------------------


def test_dev_token_returns_a_token_and_sets_the_session_cookie(stack):
    answer = httpx.get(f"{stack.proxy.url}/dev/token", params={"user": "admin"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["token"] and body["workspaces"] == ["*"]
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"logstream_session={body['token']};")
    assert (
        "HttpOnly" in cookie
        and "Path=/" in cookie
        and "SameSite=lax" in cookie.replace("SameSite=Lax", "SameSite=lax")
    )


def test_dev_token_for_an_unknown_user_is_a_404(stack):
    answer = httpx.get(f"{stack.proxy.url}/dev/token", params={"user": "mallory"})
    assert answer.status_code == 404
    assert answer.json()["error"] == "not_found"
    assert "set-cookie" not in answer.headers


def test_dev_token_without_a_user_is_a_400(stack):
    answer = httpx.get(f"{stack.proxy.url}/dev/token")
    assert answer.status_code == 400
    assert "'user'" in answer.json()["message"]


def test_dev_token_does_not_exist_in_production_mode(proxies):
    answer = httpx.get(f"{proxies.prod.url}/dev/token", params={"user": "user123"})
    assert answer.status_code == 404
    assert "set-cookie" not in answer.headers


def test_the_production_proxy_relays_a_refusal_without_dev_identities(proxies, unique_id):
    query, _ = route_query(PLATFORM, unique_id)
    answer = httpx.get(proxies.prod.url + PLATFORM, params=query, timeout=DEADLINE_S)
    assert answer.status_code == 401


def test_the_logs_page_and_its_client_are_served_from_the_same_origin(stack):
    page = httpx.get(stack.proxy.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/logstream.js" type="module"' in page.text
    assert ETL in page.text and '"dev":true' in page.text
    script = httpx.get(stack.proxy.url + "/static/logs-sse-client.js")
    assert script.status_code == 200 and "fetch(" in script.text
    assert "javascript" in script.headers["content-type"]
    style = httpx.get(stack.proxy.url + "/static/logstream.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


def test_the_page_in_production_mode_offers_no_dev_sign_in(proxies):
    page = httpx.get(proxies.prod.url + "/")
    assert '"dev":false' in page.text and '"dev_users":[]' in page.text


def test_ready_follows_the_gateways_health(stack, proxies):
    wait_until_blocking(
        lambda: httpx.get(stack.proxy.url + "/ready").status_code == 200,
        "the stack's proxy to be ready",
        timeout=DEADLINE_S,
    )
    answer = httpx.get(proxies.dead.url + "/ready", timeout=DEADLINE_S)
    assert answer.status_code == 503
    assert answer.json()["ready"] is False
    assert httpx.get(proxies.dead.url + "/health").status_code == 200


def test_metrics_and_openapi_are_served(stack):
    metrics = httpx.get(stack.proxy.url + "/metrics")
    assert metrics.status_code == 200
    assert "logstream_proxy_stream_requests_total" in metrics.text
    schema = httpx.get(stack.proxy.url + "/schema/openapi.json").json()
    assert ETL in schema["paths"]


def test_a_bad_routes_file_stops_the_proxy_naming_routes_file(tmp_path, nats_server, log_dir):
    routes = tmp_path / "routes.toml"
    routes.write_text('[[routes]]\npath = "/a/stream"\nchannel = "logs:etl:{w}:{w}"\n')
    process = ServiceProcess(
        "proxy", nats_url=nats_server.url, log_dir=log_dir, args=["--routes-file", str(routes)]
    ).start(wait=False)
    try:
        assert process.process.wait(DEADLINE_S * 2) == 2
    finally:
        process.kill()
    assert "routes_file" in process.log() and str(routes) in process.log()


def test_the_route_table_is_served_as_json_for_clients(stack):
    table = httpx.get(f"{stack.proxy.url}/api/logs/routes").json()
    paths = {route["path"] for route in table["routes"]}
    assert "/api/dapadmin/l5-etl/sse/logs/stream" in paths and len(paths) == 4
    assert httpx.get(f"{stack.gateway.url}/api/logs/routes").status_code == 404
