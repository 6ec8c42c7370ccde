"""What every service's OpenAPI document shares: the error shape, the refusal headers, the
level and channel rules as JSON Schema, and the finishing touches Litestar cannot generate.

Litestar replaces a configured ``components.schemas`` with the schemas it generated itself, so
``complete_document`` adds a service's own component schemas to the built document once the app
exists, and documents the 503 of ``GET /ready`` (``logstream.shared.web``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, cast

import msgspec
from litestar import Litestar
from litestar.openapi.spec import OpenAPIHeader, OpenAPIMediaType, OpenAPIResponse, Schema

from logstream.shared.records import LEVELS
from logstream.shared.version import VERSION

__all__ = [
    "RETRY_AFTER",
    "SCHEMAS",
    "VERSION",
    "WWW_AUTHENTICATE",
    "ErrorBody",
    "add_response_headers",
    "channel_regex",
    "complete_document",
    "document_readiness",
    "json_schema",
    "level_schema",
]

SCHEMAS = "#/components/schemas/"


_SEGMENT = "[A-Za-z0-9_-]{1,64}"


def json_schema(schema: Mapping[str, Any]) -> Schema:
    """``schema``, a JSON Schema written as a dict, where a Litestar spec object takes a schema.

    Litestar writes such a dict into the document as it is (``BaseSchemaObject.to_schema``
    normalises dicts as well as its own spec objects), but annotates those fields as
    ``Schema | Reference`` only. The dict keeps the schema exactly as written here (its keys,
    their order, ``$ref``), so the cast only corrects that annotation.
    """
    return cast(Schema, schema)


class ErrorBody(msgspec.Struct):
    """Every refusal: a machine code, a sentence for a human, and details."""

    error: str
    message: str
    details: list[Any]


RETRY_AFTER = OpenAPIHeader(
    schema=json_schema({"type": "integer", "minimum": 0}),
    required=True,
    description="Seconds to wait before sending the same request again.",
)
WWW_AUTHENTICATE = OpenAPIHeader(
    schema=json_schema({"type": "string"}),
    required=True,
    description="`Bearer`: how to present the credential.",
)


def add_response_headers(responses: dict[str, Any] | None, *, required: bool = True) -> None:
    """``Retry-After`` on 429/503 and ``WWW-Authenticate`` on 401, where they are documented
    (``required=False`` where only some of those answers carry them)."""
    for status, name, header in (
        ("429", "Retry-After", RETRY_AFTER),
        ("503", "Retry-After", RETRY_AFTER),
        ("401", "WWW-Authenticate", WWW_AUTHENTICATE),
    ):
        if responses and status in responses:
            header = header if required else replace(header, required=False)
            responses[status].headers = {**(responses[status].headers or {}), name: header}


def level_schema() -> dict[str, Any]:
    """A level name as the services read it: case-insensitive, ``warning`` meaning ``warn``
    (an ECMA regular expression has no case-insensitive flag, hence the letter classes)."""
    names = "|".join("".join(f"[{c.upper()}{c}]" for c in name) for name in (*LEVELS, "warning"))
    return {
        "type": "string",
        "pattern": f"^({names})$",
        "examples": list(LEVELS),
        "description": f"One of {', '.join(LEVELS)}, in any case; `warning` means `warn`.",
    }


def channel_regex(services: Iterable[str]) -> str:
    """The channel grammar of docs/reference/channels.md as an ECMA regular expression."""
    names = "|".join(sorted(services))
    return f"^logs:({names}):{_SEGMENT}(:{_SEGMENT})?$"


def complete_document(app: Litestar, schemas: dict[str, Any]) -> None:
    """Add what Litestar cannot generate to the app's (built once, then served) document: the
    component ``schemas``, and the 503 of ``GET /ready``."""
    document = app.openapi_schema
    document.components.schemas = {**(document.components.schemas or {}), **schemas}
    document_readiness(document.paths)


def document_readiness(paths: dict[str, Any] | None) -> None:
    """``GET /ready`` (``logstream.shared.web``) answers 503, with the same body, while it is not ready."""
    item = (paths or {}).get("/ready")
    if item is None or item.get is None or item.get.responses is None:
        return
    body = {
        "type": "object",
        "required": ["ready", "service", "reason"],
        "properties": {
            "ready": {"type": "boolean"},
            "service": {"type": "string"},
            "reason": {"type": "string"},
            # ingest, gateway, proxy (logstream.shared.durability): what a 202 survives
            "durability": {"type": "string", "enum": ["fsync", "replicated", "lazy", "unknown"]},
            "broker_sync": {"type": ["string", "null"]},
            "stream_replicas": {"type": ["integer", "null"]},
            "durability_problem": {"type": "string"},
            # gateway: where its user-token keys come from, and whether they are fresh
            "user_keys": {"type": "object"},
        },
    }
    for status, text in (
        ("200", "Ready: what the service depends on answers."),
        ("503", "Not ready: a dependency does not answer, or the service is shutting down."),
    ):
        item.get.responses[status] = OpenAPIResponse(
            description=text,
            content={"application/json": OpenAPIMediaType(schema=json_schema(body))},
        )
