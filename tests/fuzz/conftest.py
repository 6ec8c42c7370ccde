"""Fixtures for the OpenAPI fuzz runs: each service's served document, kept to fuzz workspaces.

The services are the suite's dev-mode ``stack`` (tests/conftest.py): real processes on the real
NATS, read over HTTP. Each test says who sends its requests (a valid token, none, a forged
one...), so schemathesis does not make up credentials from the documents' security schemes.
"""

from __future__ import annotations

import pytest
import schemathesis

from tests.fuzz.contract_openapi import fetch_document, in_fuzz_workspaces


def _loaded(document: dict):
    schema = schemathesis.openapi.from_dict(document)
    schema.config.generation.update(with_security_parameters=False)
    return schema


@pytest.fixture(scope="module")
def ingest_schema(stack):
    return _loaded(in_fuzz_workspaces(fetch_document(stack.ingest.url), "PublishedRecord"))


@pytest.fixture(scope="module")
def gateway_schema(stack):
    return _loaded(
        in_fuzz_workspaces(fetch_document(stack.gateway.url), "ChannelList", "TestRecordRequest")
    )


@pytest.fixture(scope="module")
def proxy_schema(stack):
    # Only streams are read through the proxy (nothing is stored), so its channels need no
    # narrowing: a generated workspace id opens an empty stream or is refused.
    return _loaded(fetch_document(stack.proxy.url))
