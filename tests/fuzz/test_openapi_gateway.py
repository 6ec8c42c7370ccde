"""schemathesis against the running gateway's OpenAPI document (docs/reference/stream.md and docs/reference/stream.md#service-endpoints).

The stream never ends by itself, so a stream case is sent by ``open_and_close``: a 200 is
checked for its event-stream type and its opening ``retry:`` frame, then closed; any other
answer is read and validated by schemathesis against the document.
"""

from __future__ import annotations

import pytest
from schemathesis import GenerationMode

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.fuzz.contract_openapi import STREAM, TEST_LOGS, fetch_document
from tests.fuzz.openapi_checks import fuzz_operation, fuzz_stream

TOKENS = UserTokens(DEV_JWT_SECRET)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Who sends the generated requests, and how many each: mostly a reader of every workspace,
# whose valid requests open a stream.
SENDERS = {
    "reader-of-every-workspace": (_bearer(TOKENS.issue("fuzz-reader", ["*"])), 25),
    "user-of-one-workspace": (_bearer(TOKENS.issue("user123", ["workspace123"])), 8),  # 403
    "no-token": ({}, 5),
    "expired-token": (_bearer(TOKENS.issue("fuzz-late", ["*"], ttl_s=-3600)), 4),
    "forged-token": (
        _bearer(UserTokens("a-different-secret-of-32-bytes-or-more").issue("admin", ["*"])),
        4,
    ),
    "basic-auth": ({"Authorization": "Basic ZnV6ejpmdXp6"}, 4),
}
# docs/reference/stream.md: answers before the stream opens (503 only when NATS is down: it is up here).
FUZZED = {
    ("GET", STREAM),
    ("GET", "/api/logs/channels"),
    ("GET", "/api/logs/history"),
    ("GET", "/admin/logs/stats"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("POST", TEST_LOGS),
}


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
def test_stream_requests_open_a_stream_or_are_refused_as_documented(
    stack, gateway_schema, mode, sender
):
    headers, examples = SENDERS[sender]
    fuzz_stream(
        gateway_schema[STREAM]["GET"],
        mode,
        base_url=stack.gateway.url,
        headers=headers,
        max_examples=examples,
    )


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
@pytest.mark.parametrize("path", ["/api/logs/channels", "/api/logs/history"])
def test_channel_lists_and_history_pages_answer_as_documented(
    stack, gateway_schema, path, mode, sender
):
    headers, examples = SENDERS[sender]
    fuzz_operation(
        gateway_schema[path]["GET"],
        mode,
        base_url=stack.gateway.url,
        headers=headers,
        statuses={200, 400, 401, 403},
        max_examples=max(3, examples // 2),
    )


@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
def test_the_dev_test_record_route_answers_as_documented(stack, gateway_schema, mode):
    fuzz_operation(
        gateway_schema[TEST_LOGS]["POST"],
        mode,
        base_url=stack.gateway.url,
        headers={},
        statuses={202, 400},
        max_examples=15,
    )


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/admin/logs/stats"])
def test_service_routes_answer_200_as_documented(stack, gateway_schema, path):
    fuzz_operation(
        gateway_schema[path]["GET"],
        GenerationMode.POSITIVE,
        base_url=stack.gateway.url,
        headers={},
        statuses={200},
    )


def test_every_operation_of_the_gateway_document_is_fuzzed(stack):
    document = fetch_document(stack.gateway.url)
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert operations == FUZZED
