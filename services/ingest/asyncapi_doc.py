"""The ingest's AsyncAPI document: publishing over NATS on ``ingest.logs`` (docs/reference/ingest.md#nats).

FastStream builds the skeleton from the consumer's own broker (no connection needed): the
server, the ``ingest.logs`` channel with its queue group, the ``receive`` operation, and the
``ingest.rejected`` channel its publisher sends to. The handler reads each message raw (the
pipeline decodes it with msgspec, as for HTTP), so FastStream cannot see the payload; this
module adds it (the record schema the OpenAPI document uses), the headers a producer sends,
the reply a request gets, and the report ``ingest.rejected`` carries.

Served by ingest as ``GET /schema/asyncapi.json`` and ``GET /schema/asyncapi.yaml``.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import msgspec
from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI
from litestar import MediaType, Response, get

from logstream.services.ingest.api_doc import SCHEMAS, record_schemas
from logstream.services.ingest.nats_ingest import QUEUE_GROUP
from logstream.services.ingest.settings import Settings
from logstream.shared.api_doc import VERSION
from logstream.shared.nats_names import INGEST_SUBJECT, REJECTED_SUBJECT

__all__ = [
    "ASYNCAPI_PATH",
    "IngestAccepted",
    "IngestRefusal",
    "RejectionReport",
    "asyncapi_document",
    "asyncapi_routes",
]

ASYNCAPI_PATH = "/schema/asyncapi"
# Statuses an ``ingest.logs`` request can be answered with (those of HTTP, plus 500 for a bug).
REFUSAL_STATUSES = [400, 401, 403, 413, 415, 429, 500, 503]
_REPLY_CHANNEL = f"{INGEST_SUBJECT}.reply"
_MESSAGES = "#/components/messages/"


class IngestAccepted(msgspec.Struct):
    """The reply when every record is stored: the HTTP 202 body plus its status."""

    accepted: int
    seqs: list[int]
    status: Literal[202]


class IngestRefusal(msgspec.Struct):
    """The reply to a refused message: the HTTP error body plus its status."""

    error: str
    message: str
    details: list[Any]
    status: int


class RejectionReport(msgspec.Struct, forbid_unknown_fields=True):
    """What ``ingest.rejected`` receives for a refused message that had no reply subject."""

    status: int
    error: str
    message: str
    details: list[Any]
    subject: str
    payload: str
    payload_truncated: bool
    payload_bytes: int


def _schemas(settings: Settings) -> dict[str, Any]:
    (_, _, _), structs = msgspec.json.schema_components(
        [IngestAccepted, IngestRefusal, RejectionReport], ref_template=SCHEMAS + "{name}"
    )
    structs["IngestRefusal"]["properties"]["status"]["enum"] = REFUSAL_STATUSES
    structs["RejectionReport"]["properties"]["payload"]["description"] = (
        "The start of the refused message's body (headers are never copied: they hold the "
        "credential)"
    )
    return {
        **record_schemas(settings.service_names, settings.max_batch_records),
        **structs,
        "IngestPayload": {
            "oneOf": [{"$ref": SCHEMAS + "PublishedRecord"}, {"$ref": SCHEMAS + "PublishBatch"}]
        },
        "IngestHeaders": {
            "type": "object",
            "required": ["Authorization"],
            "properties": {
                "Authorization": {
                    "type": "string",
                    "pattern": "^Bearer .+$",
                    "description": "`Bearer <service token>`, as over HTTP",
                },
                "Content-Type": {
                    "type": "string",
                    "default": "application/json",
                    "enum": ["application/json", "application/x-ndjson"],
                    "description": "application/x-ndjson: one record per line",
                },
            },
        },
        "IngestReply": {
            "oneOf": [{"$ref": SCHEMAS + "IngestAccepted"}, {"$ref": SCHEMAS + "IngestRefusal"}]
        },
        "IngestReplyHeaders": {
            "type": "object",
            "properties": {
                "Retry-After": {
                    "type": "string",
                    "pattern": "^[0-9]+$",
                    "description": "on 429 and 503: seconds to wait before sending it again",
                }
            },
        },
    }


def _messages(max_records: int) -> dict[str, Any]:
    return {
        f"{INGEST_SUBJECT}:Records": {
            "name": "Records",
            "title": "Log records to store",
            "summary": f"One record or an array of up to {max_records:,} (JSON), or NDJSON lines.",
            "contentType": "application/json",
            "headers": {"$ref": SCHEMAS + "IngestHeaders"},
            "payload": {"$ref": SCHEMAS + "IngestPayload"},
        },
        f"{INGEST_SUBJECT}:Reply": {
            "name": "Reply",
            "title": "The answer to a request",
            "summary": "The HTTP response body plus `status`: 202 once JetStream stored every "
            "record, else the refusal (nothing stored).",
            "contentType": "application/json",
            "headers": {"$ref": SCHEMAS + "IngestReplyHeaders"},
            "payload": {"$ref": SCHEMAS + "IngestReply"},
        },
        f"{REJECTED_SUBJECT}:Report": {
            "name": "Report",
            "title": "A refused message nobody was waiting for",
            "contentType": "application/json",
            "payload": {"$ref": SCHEMAS + "RejectionReport"},
        },
    }


def _address(document: dict[str, Any], address: str) -> tuple[str, dict[str, Any]]:
    """The key and the channel FastStream made for ``address``."""
    return next(
        (key, channel)
        for key, channel in document["channels"].items()
        if channel.get("address") == address
    )


def _fill(document: dict[str, Any], settings: Settings) -> None:
    components = document.setdefault("components", {})
    components["schemas"] = _schemas(settings)
    components["messages"] = _messages(settings.max_batch_records)
    for scheme in components.get("securitySchemes", {}).values():
        scheme["description"] = (
            f"Producers log in as a NATS user allowed to publish to "
            f"{INGEST_SUBJECT} and receive replies, and nothing else"
            + (" (dev mode: user `producer`)." if settings.dev else ".")
        )
    ingest_key, ingest = _address(document, INGEST_SUBJECT)
    ingest["messages"] = {"Records": {"$ref": _MESSAGES + f"{INGEST_SUBJECT}:Records"}}
    rejected_key, rejected = _address(document, REJECTED_SUBJECT)
    rejected["messages"] = {"Report": {"$ref": _MESSAGES + f"{REJECTED_SUBJECT}:Report"}}
    document["channels"][_REPLY_CHANNEL] = {
        "address": None,
        "description": "The request's own reply subject (an inbox the producer chose): there "
        "is an answer only when the message had a reply subject.",
        "messages": {"Reply": {"$ref": _MESSAGES + f"{INGEST_SUBJECT}:Reply"}},
    }
    for operation in document["operations"].values():
        channel = operation["channel"]["$ref"]
        if channel == f"#/channels/{ingest_key}":
            operation["messages"] = [{"$ref": f"{channel}/messages/Records"}]
            operation["bindings"] = {"nats": {"queue": QUEUE_GROUP, "bindingVersion": "0.1.0"}}
            operation["reply"] = {
                "channel": {"$ref": f"#/channels/{_REPLY_CHANNEL}"},
                "messages": [{"$ref": f"#/channels/{_REPLY_CHANNEL}/messages/Reply"}],
            }
        elif channel == f"#/channels/{rejected_key}":
            operation["messages"] = [{"$ref": f"{channel}/messages/Report"}]


def asyncapi_document(broker: NatsBroker, settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``broker``'s ingest subscriber and publisher."""
    document = (
        AsyncAPI(
            broker,
            title="Logstream ingest over NATS",
            version=VERSION,
            description=f"Publish log records on NATS subject `{INGEST_SUBJECT}` with the same "
            "rules as `POST /api/logs/publish` (see `/schema/openapi.json`). Ingest instances "
            "share the subject in one queue group; a request (a message with a reply subject) is "
            "answered once JetStream stored every record or the message was refused; a refused "
            f"message without a reply subject is reported on `{REJECTED_SUBJECT}`.",
            schema_version="3.0.0",
        )
        .to_specification()
        .to_jsonable()
    )
    _fill(document, settings)
    return document


def asyncapi_routes(broker: NatsBroker, settings: Settings) -> list:
    """``GET /schema/asyncapi.json`` and ``.yaml``: the document, built once, at start (the
    YAML at its first request: few ever ask, and it takes longer to write)."""
    document = asyncapi_document(broker, settings)
    as_json = msgspec.json.encode(document)

    @get(f"{ASYNCAPI_PATH}.json", sync_to_thread=False, include_in_schema=False)
    def asyncapi_json() -> Response:
        return Response(as_json, media_type=MediaType.JSON)

    @functools.cache
    def as_yaml() -> str:
        import yaml  # PyYAML: a dependency of Litestar (its openapi.yaml)

        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)

    @get(f"{ASYNCAPI_PATH}.yaml", sync_to_thread=False, include_in_schema=False)
    def asyncapi_yaml() -> Response:
        return Response(as_yaml(), media_type="application/yaml")

    return [asyncapi_json, asyncapi_yaml]
