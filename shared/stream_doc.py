"""The stream's public surface, as documented: its query and headers, their limits, its
security schemes and its answers. The gateway enforces these (``stream_request``) and serves
them in its OpenAPI document; the proxy passes the same query through and documents it from
here too, so the two documents cannot drift and neither service imports the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIHeader,
    Parameter,
    Reference,
    SecurityRequirement,
    SecurityScheme,
)

from logstream.shared.api_doc import (
    SCHEMAS,
    ErrorBody,
    add_response_headers,
    json_schema,
    level_schema,
)
from logstream.shared.where import MAX_WHERE_CHARS

__all__ = [
    "CHANNELS",
    "CHANNELS_PARAMETERS",
    "CHANNELS_RESPONSES",
    "DEFAULT_CHANNELS_LIMIT",
    "DEFAULT_HISTORY_LIMIT",
    "DEFAULT_MAX_CHANNELS",
    "HISTORY_PARAMETERS",
    "HISTORY_RESPONSES",
    "MAX_CHANNELS_LIMIT",
    "MAX_CHANNELS_SETTING",
    "MAX_CHANNEL_CHARS",
    "MAX_CURSOR_DIGITS",
    "MAX_HISTORY_LIMIT",
    "MAX_QUERY_CHARS",
    "MAX_TAIL",
    "SECURITY_SCHEMES",
    "STREAM_PARAMETERS",
    "STREAM_RESPONSES",
    "STREAM_SECURITY",
    "channel_schemas",
    "document_stream_answers",
    "error_responses",
]

_SEGMENT = "[A-Za-z0-9_-]{1,64}"
# The gateway's max_channels setting: its default, and the most it may allow on one stream.
DEFAULT_MAX_CHANNELS = 20
MAX_CHANNELS_SETTING = 1000
# History on connect is for catching up a screen, not for bulk export.
MAX_TAIL = 10_000
# A substring filter longer than this is not a search a person typed.
MAX_QUERY_CHARS = 256
# The longest channel the grammar allows: "logs" and three 64-character segments, with colons.
MAX_CHANNEL_CHARS = len("logs") + 3 * (1 + 64)
# docs/reference/stream.md#history: a page of a log view, not an export.
DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000
# docs/reference/stream.md#channels: a sidebar, not an export.
DEFAULT_CHANNELS_LIMIT = 100
MAX_CHANNELS_LIMIT = 1000
# A stream cursor is a JetStream sequence, an unsigned 64-bit integer: at most 20 digits.
MAX_CURSOR_DIGITS = 20

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


def _query(name: str, schema: dict[str, Any], description: str, **more: Any) -> Parameter:
    return Parameter(
        name=name, param_in="query", schema=json_schema(schema), description=description, **more
    )


def _header(name: str, schema: dict[str, Any], description: str) -> Parameter:
    return Parameter(
        name=name, param_in="header", schema=json_schema(schema), description=description
    )


CHANNELS = _query(
    "channels",
    {"$ref": SCHEMAS + "StreamChannels"},
    "The channels to stream: a comma list, or the parameter repeated (at most max_channels "
    "channels in all, 20 by default). A channel names exactly that channel; `*` stands for "
    "one whole segment, only where every channel it could match lies in the user's "
    "workspaces.",
    required=True,
    style="form",
    explode=True,
)
WHERE = _query(
    "where",
    {"type": "string", "maxLength": MAX_WHERE_CHARS},
    "Only records this expression accepts: comparisons on level, source, message, channel "
    "and fields.<name> with =, !=, ~, ^=, <, <=, >, >=, in (...), combined with and, or, not "
    "and parentheses (docs/reference/where.md). A malformed one is a 400 naming the position.",
)
ACCESS_TOKEN = _query(
    "access_token",
    {"type": "string"},
    "The user token in the URL: accepted in dev mode only (setting query_token); in "
    "production it is refused with 401, since URLs end up in access logs.",
)
LEVEL = _query("level", level_schema(), "Only records of this level and above.")
QUERY = _query(
    "q",
    {"type": "string", "maxLength": MAX_QUERY_CHARS},
    "Only records whose message contains this text (case-insensitive).",
)
HISTORY_PARAMETERS = [
    CHANNELS,
    _query(
        "before",
        {"type": "integer", "minimum": 1, "maximum": 2**64 - 1},
        "Records before this seq (the `next_before` of the previous page); absent: up to the "
        "newest record.",
    ),
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_LIMIT},
        f"Records per page (default {DEFAULT_HISTORY_LIMIT}).",
    ),
    LEVEL,
    QUERY,
    WHERE,
    ACCESS_TOKEN,
]
CHANNELS_PARAMETERS = [
    _query(
        "prefix",
        {"type": "string", "pattern": r"^logs(:[A-Za-z0-9_-]{1,64}){0,3}$"},
        "The channels under this prefix: logs:<service>, logs:<service>:<workspace> (the "
        "workspace's own channel and those below it) or a whole channel. Above the workspace, "
        "only the caller's workspaces are listed.",
        required=True,
    ),
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_CHANNELS_LIMIT},
        f"Channels listed at most (default {DEFAULT_CHANNELS_LIMIT}), the most recently "
        "active ones.",
    ),
    ACCESS_TOKEN,
]
STREAM_PARAMETERS = [
    CHANNELS,
    _query(
        "last_event_id",
        {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
        "Resume after this record seq (the `Last-Event-ID` header wins when both are given).",
    ),
    _query(
        "tail",
        {"type": "integer", "minimum": 0, "maximum": MAX_TAIL},
        "Replay the last N records of the requested channels first.",
    ),
    _query(
        "since",
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s|m|h|d)?$"},
            ]
        },
        "Replay records since this time: RFC 3339 with an offset, or a duration back from "
        "now such as 30s, 10m, 2h.",
    ),
    LEVEL,
    QUERY,
    WHERE,
    ACCESS_TOKEN,
    _header(
        "Last-Event-ID",
        {"type": "string", "pattern": f"^[0-9]{{1,{MAX_CURSOR_DIGITS}}}$"},
        "Resume after this record seq: what an EventSource sends when it reconnects.",
    ),
    _header("X-User-Id", {"type": "string"}, "Recorded in the gateway's log, never trusted."),
    _header("X-Workspace-Id", {"type": "string"}, "Recorded in the gateway's log, never trusted."),
]
SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "userBearer": SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="JWT",
        description="A user token: `sub` is the user, `workspaces` the workspaces it may read "
        "(dev mode: `GET /dev/token?user=user123` on the proxy).",
    ),
    "sessionCookie": SecurityScheme(
        type="apiKey",
        name="logstream_session",
        security_scheme_in="cookie",
        description="The same user token, in the cookie the proxy's dev login sets.",
    ),
    "adminBearer": SecurityScheme(
        type="http",
        scheme="bearer",
        description="The admin token, or a user token with the admin role (not needed in dev "
        "mode).",
    ),
}
STREAM_SECURITY: list[SecurityRequirement] = [{"userBearer": []}, {"sessionCookie": []}]


def error_responses(texts: dict[int, str]) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(data_container=ErrorBody, description=text, generate_examples=False)
        for status, text in texts.items()
    }


STREAM_RESPONSES = {
    200: ResponseSpec(
        data_container=str,
        media_type="text/event-stream",
        description=_EVENTS,
        generate_examples=False,
    ),
    **error_responses(
        {
            400: "bad channels, or a bad since, tail, level, q or last_event_id; details name "
            "each bad channel",
            401: "no credential, or one that does not verify (expired, forged, not Bearer); "
            "or the product's backend (auth callout) said 401, with its message",
            403: "a channel outside the user's workspaces; details list them",
            429: "the user is over their connection cap; see Retry-After",
            431: "request headers over 32 KiB or more than 100 of them",
            503: "the broker is unavailable, or the product's backend did not answer the auth "
            "callout usably (auth_unavailable); see Retry-After",
        }
    ),
}
_LISTING_ERRORS = {
    401: "no credential, or one that does not verify (expired, forged, not Bearer); "
    "or the product's backend (auth callout) said 401, with its message",
    403: "outside the user's workspaces; details name the channel",
    503: "the broker is unavailable, or the product's backend did not answer the auth "
    "callout usably (auth_unavailable); see Retry-After",
}


class ListedChannel(msgspec.Struct):
    """A channel that holds records."""

    channel: str
    records: int  # records of the channel still in the stream
    last_seq: int  # its newest record's seq
    last_at: str | None  # when ingest received that record (RFC 3339, UTC)
    last_level: str  # that record's level


class ChannelListing(msgspec.Struct):
    channels: list[ListedChannel]  # most recently active first


class HistoryPageBody(msgspec.Struct):
    records: list[dict[str, Any]]  # delivered records (as in the stream's log events), ascending
    next_before: int | None  # pass as before for the page before this one; null: nothing older


CHANNELS_RESPONSES = {
    200: ResponseSpec(
        data_container=ChannelListing,
        description="The readable channels with records under the prefix, most recently "
        "active first",
        generate_examples=False,
    ),
    **error_responses(
        {400: "a bad prefix or limit, or a prefix with too many channels", **_LISTING_ERRORS}
    ),
}
HISTORY_RESPONSES = {
    200: ResponseSpec(
        data_container=HistoryPageBody,
        description="The newest matching records before `before`, in ascending seq",
        generate_examples=False,
    ),
    **error_responses(
        {
            400: "bad channels, before, limit, level, q or where (which names the position)",
            **_LISTING_ERRORS,
        }
    ),
}
_STREAM_HEADERS = {
    "Cache-Control": OpenAPIHeader(
        schema=json_schema({"type": "string", "const": "no-cache"}),
        required=True,
        description="Never cached.",
    ),
    "X-Accel-Buffering": OpenAPIHeader(
        schema=json_schema({"type": "string", "const": "no"}),
        required=True,
        description="No proxy buffering.",
    ),
}


def channel_schemas(services: Iterable[str], max_channels: int) -> dict[str, Any]:
    """The component schemas of the ``channels`` parameter, which depend on the settings."""
    names = "|".join(sorted(services))
    one = rf"logs:({names}|\*):({_SEGMENT}|\*)(:({_SEGMENT}|\*))?"
    channel_list = {
        "type": "string",
        "pattern": f"^{one}(,{one})*$",
        "description": "One channel, or a comma list: logs:<service>:<workspace>"
        "[:<resource>], any segment may be `*`.",
    }
    channels = {
        "type": "array",
        "minItems": 1,
        "maxItems": max_channels,
        "items": {"$ref": SCHEMAS + "ChannelList"},
    }
    return {"ChannelList": channel_list, "StreamChannels": channels}


def document_stream_answers(responses: dict[str, Any] | None) -> None:
    """The headers of a stream's answers: SSE on 200, Retry-After, WWW-Authenticate."""
    add_response_headers(responses)
    if responses and "200" in responses:
        responses["200"].headers = dict(_STREAM_HEADERS)
