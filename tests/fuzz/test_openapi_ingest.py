"""schemathesis against the running ingest's OpenAPI document (docs/reference/ingest.md and docs/reference/stream.md#service-endpoints).

Generated publish requests (valid records, broken ones, and schemathesis' negative cases),
each sent with no credential, a valid token, a token without the grant, or a bad token.
"""

from __future__ import annotations

import pytest
from schemathesis import GenerationMode

from tests.fuzz.contract_openapi import PUBLISH, fetch_document
from tests.fuzz.openapi_checks import fuzz_operation

# Who sends the generated requests, and how many each: mostly the valid token, so most cases
# reach record validation and storage.
SENDERS = {
    "valid-token": ({"Authorization": "Bearer l5-etl-token"}, 25),
    "valid-header-token": ({"X-Service-Token": "l5-etl-token"}, 6),
    "token-without-grant": ({"Authorization": "Bearer faas-token"}, 8),  # etl records: 403
    "no-token": ({}, 5),
    "bad-token": ({"Authorization": "Bearer not-a-service-token"}, 5),
}
# docs/reference/ingest.md: every answer of the publish route (503 only when NATS is down: it is up here).
PUBLISH_STATUSES = {202, 400, 401, 403, 413, 415, 429}
OTLP, LOKI = "/v1/logs", "/loki/api/v1/push"
FUZZED = {
    ("POST", PUBLISH),
    ("POST", OTLP),
    ("POST", LOKI),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
}
# What other tools' routes answer a generated request: stored, or a documented refusal; never a
# 5xx (an exporter would retry a broken request for ever).
FOREIGN_STATUSES = {OTLP: {200, 400, 401, 403, 413, 415}, LOKI: {204, 400, 401, 403, 413, 415}}


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
def test_publish_answers_every_generated_request_as_documented(stack, ingest_schema, mode, sender):
    headers, examples = SENDERS[sender]
    fuzz_operation(
        ingest_schema[PUBLISH]["POST"],
        mode,
        base_url=stack.ingest.url,
        headers=headers,
        statuses=PUBLISH_STATUSES,
        max_examples=examples,
    )


@pytest.mark.parametrize("path", [OTLP, LOKI])
@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
def test_other_tools_routes_answer_every_generated_request_as_documented(
    stack, ingest_schema, mode, path
):
    fuzz_operation(
        ingest_schema[path]["POST"],
        mode,
        base_url=stack.ingest.url,
        headers={"Authorization": "Bearer l5-etl-token"},
        statuses=FOREIGN_STATUSES[path],
        max_examples=25,
    )


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
def test_service_routes_answer_200_as_documented(stack, ingest_schema, path):
    fuzz_operation(
        ingest_schema[path]["GET"],
        GenerationMode.POSITIVE,
        base_url=stack.ingest.url,
        headers={},
        statuses={200},
    )


def test_every_operation_of_the_ingest_document_is_fuzzed(stack):
    document = fetch_document(stack.ingest.url)
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert operations == FUZZED
