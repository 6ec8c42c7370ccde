"""The gateway's OpenAPI document: the stream's inputs and answers, stats, the dev test route.

The stream handler reads its query and headers through ``parse_stream_request`` and the guards,
so Litestar sees no parameter to document. ``StreamOperation`` (its ``operation_class``)
declares them, with the rules ``stream_request`` enforces; ``STREAM_RESPONSES`` the answers.
``STREAM_PARAMETERS`` minus ``channels`` is also what the proxy passes through
(``services.proxy.api_doc``). The channel grammar depends on the configured services, so it is
the component schema ``ChannelList``, added by ``complete_document`` from the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    Operation,
    Parameter,
    RequestBody,
    SecurityScheme,
)

from logstream import __version__
from services.gateway.stream_request import MAX_CURSOR_DIGITS, MAX_QUERY_CHARS, MAX_TAIL
from services.gateway.test_route import SEED_CHANNEL, _TestBody
from shared.api_doc import (
    SCHEMAS,
    ErrorBody,
    add_response_headers,
    channel_regex,
    level_schema,
)

__all__ = [
    "CHANNELS",
    "SECURITY_SCHEMES",
    "STATS_RESPONSES",
    "STREAM_PARAMETERS",
    "STREAM_RESPONSES",
    "STREAM_SECURITY",
    "TEST_RECORD_RESPONSES",
    "StreamOperation",
    "TestRecordOperation",
    "document_stream_answers",
    "openapi_config",
    "stream_schemas",
]

_SEGMENT = "[A-Za-z0-9_-]{1,64}"
_EVENTS = """\
Server-Sent Events (`text/event-stream`), in this order:

- `retry: <ms>` and `event: connected` (data: `connection_id`, `user_id`, `channels`,
  `cursor`), whose `id:` is the cursor the stream starts after;
- `event: gap` (data: `{"from": a, "to": b}`) first when part of a resumed range has aged out;
- `event: log` per record, `id: <seq>`, data: the delivered record (the published record with
  `seq`, `received_at` and `publisher`), in increasing `seq`: replay (`Last-Event-ID`,
  `since`, `tail`) before live records, all after the level/q filters;
- a comment line `: hb` at least every 15 s (configurable) while nothing else is sent.

It ends with `event: overflow` (the client fell behind: reconnect with `Last-Event-ID`),
`event: auth-expired` (reconnect with a fresh token and the same cursor), or a `retry:` hint
when the gateway shuts down."""


class BrokerRequests(msgspec.Struct):
    """What the gateway asked the broker for since it started."""

    subscribes: int  # subscriptions to a new channel or wildcard
    settles: int  # stream-info requests that fixed new subscriptions' starting points
    catch_ups: int  # reads from the stream after live records may have been missed
    repairs: int  # records found missing on their subject's sequence chain, read back


class GatewayStats(msgspec.Struct):
    """What ``GET /admin/logs/stats`` reports about this gateway instance."""

    connections: int
    direct_connections: int  # caught up: the hub writes their records straight to the socket
    users: int
    channels: dict[str, int]
    delivered_total: int
    read_total: int
    last_seq: int
    buffered: int
    interests: int  # subject patterns this gateway subscribes to on the broker
    broker: BrokerRequests
    uptime_s: float


class TestRecordAccepted(msgspec.Struct):
    """Ingest's answer: the record is stored, with its stream sequence."""

    accepted: int
    seqs: list[int]


def _query(name: str, schema: dict[str, Any], description: str, **more: Any) -> Parameter:
    return Parameter(name=name, param_in="query", schema=schema,
                     description=description, **more)


def _header(name: str, schema: dict[str, Any], description: str) -> Parameter:
    return Parameter(name=name, param_in="header", schema=schema,
                     description=description)


CHANNELS = _query(
    "channels", {"$ref": SCHEMAS + "StreamChannels"},
    "The channels to stream: a comma list, or the parameter repeated (at most max_channels "
    "channels in all, 20 by default). A channel names exactly that channel; `*` stands for "
    "one whole segment, only where every channel it could match lies in the user's "
    "workspaces.",
    required=True, style="form", explode=True)
STREAM_PARAMETERS = [
    CHANNELS,
    _query("last_event_id", {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
           "Resume after this record seq (the `Last-Event-ID` header wins when both are "
           "given)."),
    _query("tail", {"type": "integer", "minimum": 0, "maximum": MAX_TAIL},
           "Replay the last N records of the requested channels first."),
    _query("since", {"anyOf": [{"type": "string", "format": "date-time"}, {
        "type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s|m|h|d)?$"}]},
           "Replay records since this time: RFC 3339 with an offset, or a duration back from "
           "now such as 30s, 10m, 2h."),
    _query("level", level_schema(), "Only records of this level and above."),
    _query("q", {"type": "string", "maxLength": MAX_QUERY_CHARS},
           "Only records whose message contains this text (case-insensitive)."),
    _query("access_token", {"type": "string"},
           "The user token in the URL: accepted in dev mode only (setting query_token); in "
           "production it is refused with 401, since URLs end up in access logs."),
    _header("Last-Event-ID", {"type": "string", "pattern": f"^[0-9]{{1,{MAX_CURSOR_DIGITS}}}$"},
            "Resume after this record seq: what an EventSource sends when it reconnects."),
    _header("X-User-Id", {"type": "string"}, "Recorded in the gateway's log, never trusted."),
    _header("X-Workspace-Id", {"type": "string"}, "Recorded in the gateway's log, never "
            "trusted."),
]
SECURITY_SCHEMES = {
    "userBearer": SecurityScheme(
        type="http", scheme="bearer", bearer_format="JWT",
        description="A user token: `sub` is the user, `workspaces` the workspaces it may read "
                    "(dev mode: `GET /dev/token?user=user123` on the proxy)."),
    "sessionCookie": SecurityScheme(
        type="apiKey", name="logstream_session", security_scheme_in="cookie",
        description="The same user token, in the cookie the proxy's dev login sets."),
    "adminBearer": SecurityScheme(
        type="http", scheme="bearer",
        description="The admin token, or a user token with the admin role (not needed in dev "
                    "mode)."),
}
STREAM_SECURITY = [{"userBearer": []}, {"sessionCookie": []}]


def _errors(texts: dict[int, str]) -> dict[int, ResponseSpec]:
    return {status: ResponseSpec(data_container=ErrorBody, description=text,
                                 generate_examples=False) for status, text in texts.items()}


STREAM_RESPONSES = {
    200: ResponseSpec(data_container=str, media_type="text/event-stream",
                      description=_EVENTS, generate_examples=False),
    **_errors({
        400: "bad channels, or a bad since, tail, level, q or last_event_id; details name "
             "each bad channel",
        401: "no credential, or one that does not verify (expired, forged, not Bearer)",
        403: "a channel outside the user's workspaces; details list them",
        429: "the user is over their connection cap; see Retry-After",
        431: "request headers over 32 KiB or more than 100 of them",
        503: "the broker is unavailable; see Retry-After",
    }),
}
STATS_RESPONSES = {
    200: ResponseSpec(data_container=GatewayStats, description="This gateway's counters",
                      generate_examples=False),
    **_errors({401: "no admin credential (outside dev mode)",
               403: "a user token without the admin role"}),
}
TEST_RECORD_RESPONSES = {
    202: ResponseSpec(data_container=TestRecordAccepted, generate_examples=False,
                      description="Ingest stored the test record"),
    **_errors({400: "the body is not a test record, or its channel is not valid",
               429: "the dev service token is over its publish rate; see Retry-After",
               503: "ingest did not answer on NATS; see Retry-After"}),
}
_STREAM_HEADERS = {
    "Cache-Control": OpenAPIHeader(schema={"type": "string", "const": "no-cache"},
                                   required=True, description="Never cached."),
    "X-Accel-Buffering": OpenAPIHeader(schema={"type": "string", "const": "no"},
                                       required=True, description="No proxy buffering."),
}


@dataclass
class StreamOperation(Operation):
    """``GET /api/logs/stream``, plus the query and headers its handler reads by itself."""

    def __post_init__(self) -> None:
        self.parameters = list(STREAM_PARAMETERS)
        document_stream_answers(self.responses)


def document_stream_answers(responses: dict[str, Any] | None) -> None:
    """The headers of a stream's answers: SSE on 200, Retry-After, WWW-Authenticate."""
    add_response_headers(responses)
    if responses and "200" in responses:
        responses["200"].headers = dict(_STREAM_HEADERS)


def _test_record_schema(services: Iterable[str]) -> dict[str, Any]:
    """The body ``POST /test/logs`` decodes (``test_route._TestBody``), as a schema."""
    (_,), components = msgspec.json.schema_components([_TestBody])
    schema = components[_TestBody.__name__]
    schema["title"] = "TestRecordRequest"
    schema["description"] = ("All optional: the seed channel and a generated message by "
                             "default; the rules of POST /api/logs/publish apply.")
    schema["properties"]["channel"].update(pattern=channel_regex(services))
    schema["properties"]["level"].update(level_schema())
    return schema


@dataclass
class TestRecordOperation(Operation):
    """``POST /test/logs``, plus the optional body its handler reads by itself."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(required=False, content={
            "application/json": OpenAPIMediaType(
                schema={"$ref": SCHEMAS + "TestRecordRequest"},
                example={"channel": SEED_CHANNEL, "message": "hello"})},
            description="Optional: the channel, message and level of the test record.")
        # A refusal ingest sent back over NATS is relayed without its Retry-After.
        add_response_headers(self.responses, required=False)


def stream_schemas(services: Iterable[str], max_channels: int) -> dict[str, Any]:
    """The component schemas the operations refer to that depend on the settings."""
    names = "|".join(sorted(services))
    one = rf"logs:({names}|\*):({_SEGMENT}|\*)(:({_SEGMENT}|\*))?"
    channel_list = {"type": "string", "pattern": f"^{one}(,{one})*$",
                    "description": "One channel, or a comma list: logs:<service>:<workspace>"
                                   "[:<resource>], any segment may be `*`."}
    channels = {"type": "array", "minItems": 1, "maxItems": max_channels,
                "items": {"$ref": SCHEMAS + "ChannelList"}}
    return {"ChannelList": channel_list, "StreamChannels": channels,
            "TestRecordRequest": _test_record_schema(services)}


def openapi_config(dev: bool) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Logstream gateway", version=__version__,
        description="Live and resumable log streams over Server-Sent Events."
        + (" Dev mode: `POST /test/logs` publishes a test record." if dev else ""),
        components=Components(security_schemes=SECURITY_SCHEMES))
