"""The whole pipeline as a browser and a producer meet it: ingest -> JetStream -> gateway -> proxy.

Real processes (the session's dev stack), real HTTP, SSE and NATS clients.
"""

from __future__ import annotations

import json

import httpx
import pytest

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support.processes import ServiceProcess, responds_with
from tests.support.sse_client import StreamRefused, open_stream
from tests.support.waiting import wait_until

ETL_ROUTE = "/api/dapadmin/l5-etl/sse/logs/stream"
FAAS_ROUTE = "/api/dapadmin/faas/sse/logs/stream"


def publish(stack, record: dict, token: str = "l5-etl-token") -> int:
    response = httpx.post(
        f"{stack.ingest.url}/api/logs/publish",
        json=record,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202, response.text
    return response.json()["seqs"][0]


async def test_a_record_published_over_http_reaches_the_proxy_route(stack, unique_id):
    url = f"{stack.proxy.url}{ETL_ROUTE}?workspace_id=workspace123&workflow_id={unique_id}"
    async with open_stream(url, token=stack.user_token()) as stream:
        await stream.next_of("connected")
        seq = publish(
            stack,
            {
                "channel": f"logs:etl:workspace123:{unique_id}",
                "message": "extract finished",
                "level": "WARNING",
                "fields": {"rows": 12},
                "id": f"{unique_id}-1",
            },
        )
        [record] = await stream.logs(1)
    assert record["seq"] == seq
    assert record["message"] == "extract finished" and record["level"] == "warn"
    assert record["fields"] == {"rows": 12} and record["publisher"] == "l5-etl-token"


async def test_a_record_published_over_nats_reaches_the_proxy_route(stack, unique_id):
    url = f"{stack.proxy.url}{FAAS_ROUTE}?workspace_id=workspace123&function_id={unique_id}"
    producer = await stack.nats.connect("producer")
    try:
        async with open_stream(url, token=stack.user_token()) as stream:
            await stream.next_of("connected")
            reply = await producer.request(
                "ingest.logs",
                json.dumps(
                    {
                        "channel": f"logs:faas:workspace123:{unique_id}",
                        "message": "cold start 812 ms",
                    }
                ).encode(),
                timeout=10,
                headers={"Authorization": "Bearer faas-token"},
            )
            answer = json.loads(reply.data)
            [record] = await stream.logs(1)
    finally:
        await producer.close()
    assert answer["status"] == 202
    assert record["seq"] == answer["seqs"][0]
    assert record["message"] == "cold start 812 ms" and record["publisher"] == "faas-token"


async def test_the_gateways_test_route_publishes_to_the_seed_channel_through_ingest(stack):
    url = f"{stack.proxy.url}{ETL_ROUTE}?workspace_id=workspace123&workflow_id=workflow456"
    async with open_stream(url, token=stack.user_token()) as stream:
        await stream.next_of("connected")
        response = httpx.post(f"{stack.gateway.url}/test/logs")
        assert response.status_code == 202, response.text
        seq = response.json()["seqs"][0]
        records = await stream.logs(1)
        while records[-1]["seq"] < seq:
            records += await stream.logs(1)
    assert records[-1]["channel"] == "logs:etl:workspace123:workflow456"
    assert records[-1]["source"] == "gateway.test"


async def test_the_test_route_takes_a_channel_and_message(stack, unique_id):
    channel = f"logs:analytics:{unique_id}"
    token = UserTokens(DEV_JWT_SECRET).issue("u", [unique_id])
    async with open_stream(
        f"{stack.gateway.url}/api/logs/stream?channels={channel}", token=token
    ) as stream:
        await stream.next_of("connected")
        response = httpx.post(
            f"{stack.gateway.url}/test/logs", json={"channel": channel, "message": "hello"}
        )
        assert response.status_code == 202, response.text
        [record] = await stream.logs(1)
    assert record["message"] == "hello" and record["publisher"] == "analytics-token"


@pytest.mark.parametrize(
    "body", [{"channel": "logs:etl:a.b"}, {"channel": "nope"}, {"message": 5}, {"colour": "red"}]
)
def test_the_test_route_refuses_bad_input_with_400(stack, body):
    response = httpx.post(f"{stack.gateway.url}/test/logs", json=body)
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_request", "invalid_channel")


async def test_the_proxy_relays_the_gateways_429_with_retry_after(stack, unique_id):
    token = UserTokens(DEV_JWT_SECRET).issue(f"busy-{unique_id}", ["workspace123"])
    url = f"{stack.proxy.url}{ETL_ROUTE}?workspace_id=workspace123&workflow_id={unique_id}"
    streams = [open_stream(url, token=token) for _ in range(32)]  # the gateway's default cap
    opened = []  # held here: a dropped stream object closes its connection
    try:
        for stream in streams:
            opened.append(await stream.__aenter__())
            await opened[-1].next_of("connected")
        with pytest.raises(StreamRefused) as refused:
            async with open_stream(url, token=token):
                pass
    finally:
        for stream in streams:
            await stream.__aexit__(None, None, None)
    assert refused.value.status == 429
    assert refused.value.response.headers["retry-after"]
    assert refused.value.body["error"] == "rate_limited"


async def test_a_broker_outage_is_503_everywhere_then_everything_recovers_without_loss(
    own_broker, log_dir, unique_id
):
    broker = own_broker
    ingest = ServiceProcess("ingest", nats_url=broker.url, log_dir=log_dir).start()
    gateway = ServiceProcess("gateway", nats_url=broker.url, log_dir=log_dir).start()
    proxy = ServiceProcess(
        "proxy", nats_url=broker.url, log_dir=log_dir, args=["--gateway-url", gateway.url]
    ).start()
    services = [proxy, gateway, ingest]
    token = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"])
    channel = f"logs:etl:workspace123:{unique_id}"
    url = f"{proxy.url}{ETL_ROUTE}?workspace_id=workspace123&workflow_id={unique_id}"
    body = {"channel": channel, "message": "m"}
    headers = {"Authorization": "Bearer l5-etl-token"}
    try:
        await wait_until(lambda: responds_with(proxy.url + "/ready", 200), "the proxy to be ready")
        before = httpx.post(f"{ingest.url}/api/logs/publish", json=body, headers=headers)
        assert before.status_code == 202
        broker.kill()
        refused = httpx.post(
            f"{ingest.url}/api/logs/publish", json=body, headers=headers, timeout=10
        )
        assert refused.status_code == 503 and refused.headers["retry-after"]
        for service in services:
            await wait_until(
                lambda service=service: responds_with(service.url + "/ready", 503),
                f"{service.service}'s /ready to answer 503 with the broker down",
            )
        relayed = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert relayed.status_code == 503 and relayed.headers["retry-after"]
        broker.start()
        for service in services:
            await wait_until(
                lambda service=service: responds_with(service.url + "/ready", 200),
                f"{service.service}'s /ready to answer 200 with the broker back",
            )
        first = before.json()["seqs"][0]
        async with open_stream(
            url, token=token, headers={"Last-Event-ID": str(first - 1)}
        ) as stream:
            after = httpx.post(f"{ingest.url}/api/logs/publish", json=body, headers=headers)
            assert after.status_code == 202
            records = await stream.logs(2)
        assert [r["seq"] for r in records] == [first, after.json()["seqs"][0]]
    finally:
        for service in services:
            service.stop()
