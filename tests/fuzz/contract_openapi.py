"""The services' served OpenAPI documents, as the fuzz runs use them.

Every input the fuzzer varies (the publish body, the stream's query and headers, the test
record body) is declared by the services' own documents, and every response is checked against
what they declare. The fuzzer narrows one thing only: the channels it generates stay in
workspaces named ``fuzz...``, so records it gets stored never land in a channel another test
reads. ``in_fuzz_workspaces`` fails loudly if a document stops declaring a schema it narrows.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx

__all__ = ["PUBLISH", "STREAM", "TEST_LOGS", "fetch_document", "in_fuzz_workspaces"]

PUBLISH = "/api/logs/publish"
STREAM = "/api/logs/stream"
TEST_LOGS = "/test/logs"

_SEGMENT = "[A-Za-z0-9_-]{1,12}"
FUZZ_CHANNEL = rf"^logs:(etl|faas):fuzz[A-Za-z0-9_-]{{0,8}}(:{_SEGMENT})?$"
_PATTERN = rf"logs:(etl|faas|\*):(fuzz[A-Za-z0-9_-]{{0,8}}|\*)(:({_SEGMENT}|\*))?"
FUZZ_CHANNELS = rf"^{_PATTERN}(,{_PATTERN}){{0,2}}$"
# Where each document declares a channel: the component schema and the path to its pattern.
_CHANNEL_SCHEMAS = {
    "PublishedRecord": (("properties", "channel"), FUZZ_CHANNEL),
    "TestRecordRequest": (("properties", "channel"), FUZZ_CHANNEL),
    "ChannelList": ((), FUZZ_CHANNELS),
}


def fetch_document(base_url: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/schema/openapi.json", timeout=10)
    response.raise_for_status()
    return response.json()


def in_fuzz_workspaces(document: dict[str, Any], *expected: str) -> dict[str, Any]:
    """A copy of ``document`` whose channel schemas (``expected`` must all be declared) only
    generate channels of ``fuzz...`` workspaces."""
    document = copy.deepcopy(document)
    schemas = document["components"]["schemas"]
    missing = [name for name in expected if name not in schemas]
    assert not missing, f"the document no longer declares {missing}"
    for name in expected:
        where, pattern = _CHANNEL_SCHEMAS[name]
        schema = schemas[name]
        for key in where:
            schema = schema[key]
        assert schema.get("type") == "string" and "pattern" in schema, (name, schema)
        schema["pattern"] = pattern
    return document
