"""schemathesis against the running proxy's OpenAPI document (docs/reference/stream.md#proxy-routes and docs/reference/stream.md#service-endpoints).

Each product route declares its own parameters (one channel segment each) and what it passes
through to the gateway; generated requests either open the gateway's stream through the proxy
or are refused, by the proxy or by the gateway, as the document says.
"""

from __future__ import annotations

import pytest
from schemathesis import GenerationMode

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.fuzz.contract_openapi import fetch_document
from tests.fuzz.openapi_checks import fuzz_operation, fuzz_stream

TOKENS = UserTokens(DEV_JWT_SECRET)
ROUTES = ["/api/dapadmin/l5-etl/sse/logs/stream", "/api/dapadmin/analytics/sse/logs/stream"]
# Who sends the generated requests, and how many each: mostly a reader of every workspace.
SENDERS = {
    "reader-of-every-workspace": (
        {"Authorization": "Bearer " + TOKENS.issue("fuzz-proxy-reader", ["*"])},
        8,
    ),
    "user-of-one-workspace": (
        {"Authorization": "Bearer " + TOKENS.issue("user456", ["workspace456"])},
        4,
    ),  # 403 from the gateway, relayed
    "no-token": ({}, 3),
}
# The proxy's own 400 and the gateway's answers (502/503 only when a gateway or NATS is down).
FUZZED = {
    ("GET", path)
    for path in (
        *ROUTES,
        "/api/dapadmin/faas/sse/logs/stream",
        "/api/dapadmin/platform/sse/logs/stream",
        "/api/logs/routes",
        "/api/logs/stream",
        "/api/logs/channels",
        "/api/logs/history",
        "/dev/token",
        "/health",
        "/ready",
        "/metrics",
    )
}


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
@pytest.mark.parametrize("path", ROUTES, ids=["etl", "analytics"])
def test_product_routes_open_a_stream_or_are_refused_as_documented(
    stack, proxy_schema, path, mode, sender
):
    headers, examples = SENDERS[sender]
    fuzz_stream(
        proxy_schema[path]["GET"],
        mode,
        base_url=stack.proxy.url,
        headers=headers,
        max_examples=examples,
    )


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
def test_the_passed_through_stream_opens_or_is_refused_as_documented(
    stack, proxy_schema, mode, sender
):
    headers, examples = SENDERS[sender]
    fuzz_stream(
        proxy_schema["/api/logs/stream"]["GET"],
        mode,
        base_url=stack.proxy.url,
        headers=headers,
        max_examples=examples,
    )


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
@pytest.mark.parametrize("path", ["/api/logs/channels", "/api/logs/history"])
def test_passed_through_lists_and_pages_answer_as_the_gateway_documents(
    stack, proxy_schema, path, mode, sender
):
    headers, examples = SENDERS[sender]
    fuzz_operation(
        proxy_schema[path]["GET"],
        mode,
        base_url=stack.proxy.url,
        headers=headers,
        statuses={200, 400, 401, 403},
        max_examples=examples,
    )


@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
def test_the_dev_token_route_answers_as_documented(stack, proxy_schema, mode):
    fuzz_operation(
        proxy_schema["/dev/token"]["GET"],
        mode,
        base_url=stack.proxy.url,
        headers={},
        statuses={200, 400, 404},
        max_examples=10,
    )


@pytest.mark.parametrize("path", ["/api/logs/routes", "/health", "/ready", "/metrics"])
def test_service_routes_answer_200_as_documented(stack, proxy_schema, path):
    fuzz_operation(
        proxy_schema[path]["GET"],
        GenerationMode.POSITIVE,
        base_url=stack.proxy.url,
        headers={},
        statuses={200},
        max_examples=5,
    )


def test_every_operation_of_the_proxy_document_is_known_here(stack):
    document = fetch_document(stack.proxy.url)
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert operations == FUZZED
