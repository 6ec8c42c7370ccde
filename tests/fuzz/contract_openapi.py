"""The request side of CONTRACT 4 and 6 in OpenAPI terms, for fuzzing the services' documents.

Litestar documents what a handler's signature declares. The publish handler reads its body
raw and the stream handler reads its query through ``parse_stream_request``, so the served
documents name no request body and no query parameter, and schemathesis would have nothing
to vary. ``with_contract_inputs`` fills in those inputs from the contract, only where the
served document is silent (once a service declares them, its own words are fuzzed), and never
adds a response: responses are checked against what each service itself declares.

Generated channels stay in workspaces named ``fuzz...``, so records the fuzzer gets stored
never land in a channel another test reads.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import msgspec

from shared.records import LEVELS, PublishedRecord

__all__ = ["PUBLISH", "STREAM", "TEST_LOGS", "fetch_document", "with_contract_inputs"]

PUBLISH = "/api/logs/publish"
STREAM = "/api/logs/stream"
TEST_LOGS = "/test/logs"

_SEGMENT = "[A-Za-z0-9_-]{1,12}"
FUZZ_CHANNEL = rf"^logs:(etl|faas):fuzz[A-Za-z0-9_-]{{0,8}}(:{_SEGMENT})?$"
_PATTERN = rf"logs:(etl|faas|\*):(fuzz[A-Za-z0-9_-]{{0,8}}|\*)(:({_SEGMENT}|\*))?"
FUZZ_CHANNELS = rf"^{_PATTERN}(,{_PATTERN}){{0,2}}$"


def fetch_document(base_url: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/schema/openapi.json", timeout=10)
    response.raise_for_status()
    return response.json()


def _record_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    (body,), components = msgspec.json.schema_components(
        [PublishedRecord | list[PublishedRecord]], ref_template="#/components/schemas/{name}")
    properties = components["PublishedRecord"]["properties"]
    # What the types alone cannot say (CONTRACT 3), so that most records are valid ones.
    properties["channel"] = {"type": "string", "pattern": FUZZ_CHANNEL}
    properties["level"] = {"type": "string", "enum": [*LEVELS, "warning", "INFO", "Warning"]}
    properties["timestamp"] = {"anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "integer", "minimum": 0, "maximum": 253402300799999}]}
    return body, components


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


STREAM_PARAMETERS = [
    {**_query("channels", {"type": "string", "pattern": FUZZ_CHANNELS}), "required": True},
    _query("tail", {"type": "integer", "minimum": 0, "maximum": 10_000}),
    _query("since", {"type": "string", "pattern": r"^[0-9]{1,4}[smh]$"}),
    _query("last_event_id", {"type": "integer", "minimum": 0, "maximum": 2**63}),
    _query("level", {"type": "string", "enum": list(LEVELS)}),
    _query("q", {"type": "string", "maxLength": 256}),
]


def with_contract_inputs(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` whose publish, stream and test-record operations declare the
    inputs the contract gives them (where the document declares none)."""
    document = copy.deepcopy(document)
    paths = document.get("paths", {})
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    publish = paths.get(PUBLISH, {}).get("post")
    if publish is not None and "requestBody" not in publish:
        body, components = _record_schemas()
        schemas.update(components)
        publish["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": body},
            "application/x-ndjson": {"schema": {"type": "string", "maxLength": 2000}},
        }}
    stream = paths.get(STREAM, {}).get("get")
    if stream is not None and not stream.get("parameters"):
        stream["parameters"] = copy.deepcopy(STREAM_PARAMETERS)
    test_logs = paths.get(TEST_LOGS, {}).get("post")
    if test_logs is not None and "requestBody" not in test_logs:
        test_logs["requestBody"] = {"required": False, "content": {"application/json": {
            "schema": {"type": "object", "additionalProperties": False, "properties": {
                "channel": {"type": "string", "pattern": FUZZ_CHANNEL},
                "message": {"type": "string", "maxLength": 200},
            }}}}}
    return document
