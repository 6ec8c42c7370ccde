"""The ingest's OpenAPI document: what ``POST /api/logs/publish`` takes and answers (docs/reference/ingest.md and docs/reference/stream.md#service-endpoints).

The publish handler reads its body raw (the pipeline checks size, type and records with msgspec),
so Litestar sees no ``data`` parameter and would document no input at all. ``PublishOperation``,
the handler's ``operation_class``, declares the two body formats and the headers of the answers;
the statuses and their bodies are ordinary ``ResponseSpec``s (``PUBLISH_RESPONSES``).

The record schema is msgspec's own JSON Schema of ``logstream.shared.records.PublishedRecord``, sharpened
where the type alone cannot say the rule (the channel grammar, the level names, the timestamp
range). It depends on the settings (configured services, batch limit), and Litestar replaces a
configured ``components.schemas`` with the schemas it generated itself, so ``complete_document``
adds the record schemas to the built document once the app exists.

The error shape, refusal headers and ``complete_document`` are ``logstream.shared.api_doc``'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    SecurityRequirement,
    SecurityScheme,
)

from logstream.shared.api_doc import (
    SCHEMAS,
    VERSION,
    ErrorBody,
    add_response_headers,
    channel_regex,
    json_schema,
    level_schema,
)
from logstream.shared.records import MAX_FIELDS_BYTES, MAX_FIELDS_DEPTH, PublishedRecord

__all__ = [
    "LOKI_RESPONSES",
    "OTLP_RESPONSES",
    "PUBLISH_RESPONSES",
    "PUBLISH_SECURITY",
    "LokiOperation",
    "OtlpOperation",
    "PublishOperation",
    "openapi_config",
    "record_schemas",
]

# The latest timestamp a record may carry, in epoch milliseconds: the end of year 9999.
MAX_EPOCH_MS = 253402300799999


_ERRORS = {
    400: "a record breaks the rules (details name the record index and field), or the body "
    "is not valid data of its Content-Encoding",
    401: "no service token, or one that does not verify",
    403: "the token may not publish to some channels; details list them; nothing was stored",
    413: "body over the size limit (decompressed, for a compressed body), or more records than "
    "the batch limit or the token's publish burst",
    415: "content type is neither application/json nor application/x-ndjson, or a "
    "Content-Encoding other than gzip, deflate, zstd or identity",
    429: "the token is over its publish rate (records/s); see Retry-After",
    431: "request headers over 32 KiB or more than 100 of them; nothing was read",
    503: "NATS/JetStream did not confirm; the records may or may not be stored (retry with the "
    "same ids); see Retry-After",
}
PUBLISH_RESPONSES = {
    status: ResponseSpec(data_container=ErrorBody, description=text, generate_examples=False)
    for status, text in _ERRORS.items()
}
SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "serviceBearer": SecurityScheme(
        type="http",
        scheme="bearer",
        description="A service token (an opaque secret from the token file; dev mode: "
        "l5-etl-token, faas-token, analytics-token, platform-token).",
    ),
    "serviceBasic": SecurityScheme(
        type="http",
        scheme="basic",
        description="The same service token as HTTP Basic's password (any user name): what "
        "Loki clients and Grafana agents send.",
    ),
    "serviceToken": SecurityScheme(
        type="apiKey",
        name="X-Service-Token",
        security_scheme_in="header",
        description="The same service token, in its own header.",
    ),
}
PUBLISH_SECURITY: list[SecurityRequirement] = [
    {"serviceBearer": []},
    {"serviceBasic": []},
    {"serviceToken": []},
]
_EXAMPLE_RECORD = {
    "channel": "logs:etl:workspace123:workflow456",
    "message": "step 3 done",
    "level": "info",
    "fields": {"rows": 1200},
    "id": "0b6f4c1e-2d7a-4d8e-9a51-2f7c3f9e1d11",
}
_PUBLISH_BODY = RequestBody(
    required=True,
    description="One record, or an array of records, as JSON; or NDJSON, one record per "
    "line. At most `max_batch_records` records (1,000 by default) and `max_body_bytes` "
    "bytes (1 MiB by default). All or nothing: if any record is invalid or not permitted, "
    "none is stored.",
    content={
        "application/json": OpenAPIMediaType(
            schema=json_schema(
                {
                    "oneOf": [
                        {"$ref": SCHEMAS + "PublishedRecord"},
                        {"$ref": SCHEMAS + "PublishBatch"},
                    ]
                }
            ),
            example=_EXAMPLE_RECORD,
        ),
        "application/x-ndjson": OpenAPIMediaType(
            schema=json_schema(
                {
                    "type": "string",
                    "description": "One PublishedRecord JSON object per line (blank lines "
                    "are skipped), at most `max_batch_records` lines.",
                }
            ),
            example=msgspec.json.encode(_EXAMPLE_RECORD).decode() + "\n",
        ),
    },
)


_CONTENT_ENCODING = Parameter(
    name="Content-Encoding",
    param_in="header",
    required=False,
    schema=json_schema(
        {"type": "string", "enum": ["gzip", "x-gzip", "deflate", "zstd", "identity"]}
    ),
    description="The body's compression. Every limit applies to the decompressed bytes.",
)


@dataclass
class PublishOperation(Operation):
    """``POST /api/logs/publish`` as Litestar builds it, plus the body it reads by itself and
    the headers its refusals carry."""

    def __post_init__(self) -> None:
        self.request_body = _PUBLISH_BODY
        self.parameters = [*(self.parameters or []), _CONTENT_ENCODING]
        add_response_headers(self.responses)


_BINARY = json_schema({"type": "string", "format": "binary"})
_OTLP_BODY = RequestBody(
    required=True,
    description="An OTLP ExportLogsServiceRequest: protobuf, or OTLP/JSON (trace and span ids "
    "in hex). Each log record names its channel in the attribute `logstream.channel`, on "
    "itself or its resource.",
    content={
        "application/x-protobuf": OpenAPIMediaType(schema=_BINARY),
        "application/json": OpenAPIMediaType(
            schema=json_schema(
                {"type": "object", "properties": {"resourceLogs": {"type": "array"}}}
            )
        ),
    },
)
_LOKI_BODY = RequestBody(
    required=True,
    description="A Loki push: snappy-compressed `logproto.PushRequest` protobuf, or JSON. Each "
    "stream names its channel in the label `channel`.",
    content={
        "application/x-protobuf": OpenAPIMediaType(schema=_BINARY),
        "application/json": OpenAPIMediaType(
            schema=json_schema(
                {
                    "type": "object",
                    "required": ["streams"],
                    "properties": {
                        "streams": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "stream": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string"},
                                    },
                                    "values": {
                                        "type": "array",
                                        "items": {"type": "array", "minItems": 2, "maxItems": 3},
                                    },
                                },
                            },
                        }
                    },
                }
            )
        ),
    },
)
OTLP_RESPONSES = {
    200: ResponseSpec(
        data_container=bytes,
        media_type="application/x-protobuf",
        description="Every record is stored: an empty ExportLogsServiceResponse (`{}` in "
        "OTLP/JSON)",
        generate_examples=False,
    ),
    **PUBLISH_RESPONSES,
}
LOKI_RESPONSES = dict(PUBLISH_RESPONSES)


@dataclass
class OtlpOperation(Operation):
    """``POST /v1/logs``: the body it reads by itself, the headers its refusals carry."""

    def __post_init__(self) -> None:
        self.request_body = _OTLP_BODY
        self.parameters = [*(self.parameters or []), _CONTENT_ENCODING]
        add_response_headers(self.responses)
        for status, answer in (self.responses or {}).items():
            if not isinstance(answer, OpenAPIResponse) or not answer.content:
                continue
            if status == "200":
                answer.content["application/json"] = OpenAPIMediaType(
                    schema=json_schema({"type": "object"})
                )
            else:  # a protobuf export's refusal is a google.rpc.Status (the OTLP/HTTP spec)
                answer.content["application/x-protobuf"] = OpenAPIMediaType(schema=_BINARY)


@dataclass
class LokiOperation(Operation):
    """``POST /loki/api/v1/push``: the body it reads by itself, the headers its refusals carry."""

    def __post_init__(self) -> None:
        self.request_body = _LOKI_BODY
        self.parameters = [*(self.parameters or []), _CONTENT_ENCODING]
        add_response_headers(self.responses)


def record_schemas(services: Iterable[str], max_batch_records: int) -> dict[str, Any]:
    """``PublishedRecord`` (msgspec's schema, with the rules its types cannot say) and
    ``PublishBatch``, as OpenAPI component schemas."""
    (_,), components = msgspec.json.schema_components(
        [PublishedRecord], ref_template=SCHEMAS + "{name}"
    )
    record = components["PublishedRecord"]
    record["description"] = (
        "A log record as a producer publishes it (docs/reference/records.md). Unknown keys are refused."
    )
    properties = record["properties"]
    properties["channel"] = {
        "type": "string",
        "pattern": channel_regex(services),
        "description": "logs:<service>:<workspace>[:<resource>]",
    }
    properties["message"]["description"] = "At most 64 KiB (UTF-8)."
    properties["level"] = {**level_schema(), "default": "info"}
    properties["timestamp"] = {
        "anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "integer", "minimum": 0, "maximum": MAX_EPOCH_MS},
            {"type": "null"},
        ],
        "description": "RFC 3339 with an offset, or epoch milliseconds; default: the time "
        "of receipt.",
    }
    properties["source"]["description"] = "Where the record comes from, e.g. a logger name."
    properties["fields"]["description"] = (
        f"Structured data: at most {MAX_FIELDS_BYTES} bytes "
        f"encoded, nested at most {MAX_FIELDS_DEPTH} deep."
    )
    properties["id"]["description"] = (
        "Idempotency key: the same id published again within "
        "the duplicate window (2 minutes) is stored once."
    )
    batch = {
        "type": "array",
        "items": {"$ref": SCHEMAS + "PublishedRecord"},
        "minItems": 1,
        "maxItems": max_batch_records,
        "description": "Records stored all or nothing.",
    }
    return {"PublishedRecord": record, "PublishBatch": batch}


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Logstream ingest",
        version=VERSION,
        description="Publish log records over HTTP. The same rules apply over NATS on subject "
        "`ingest.logs`: see the AsyncAPI document at `/schema/asyncapi.json`.",
        components=Components(security_schemes=SECURITY_SCHEMES),
    )
