"""Fixtures for the OpenAPI fuzz runs: each service's served document, with the contract's inputs.

The services are the suite's dev-mode ``stack`` (tests/conftest.py): real processes on the real
NATS, read over HTTP.
"""

from __future__ import annotations

import pytest
import schemathesis

from tests.fuzz.contract_openapi import fetch_document, with_contract_inputs


@pytest.fixture(scope="module")
def ingest_schema(stack):
    return schemathesis.openapi.from_dict(with_contract_inputs(fetch_document(stack.ingest.url)))


@pytest.fixture(scope="module")
def gateway_schema(stack):
    return schemathesis.openapi.from_dict(with_contract_inputs(fetch_document(stack.gateway.url)))
