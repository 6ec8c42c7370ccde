"""The gateway's OpenAPI document: the stream's inputs and answers, stats, the dev test route.

The stream handler reads its query and headers through ``parse_stream_request`` and the guards,
so Litestar sees no parameter to document. ``StreamOperation`` (its ``operation_class``)
declares them, with the rules ``stream_request`` enforces; ``STREAM_RESPONSES`` the answers.
The stream's parameters, limits and answers are ``logstream.shared.stream_doc``'s, which the proxy
documents too. The channel grammar depends on the configured services, so it is the component
schema ``ChannelList``, added by ``complete_document`` from the settings.
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
    Operation,
    RequestBody,
)

from logstream.services.gateway.test_route import SEED_CHANNEL, _TestBody
from logstream.shared.api_doc import (
    SCHEMAS,
    VERSION,
    add_response_headers,
    channel_regex,
    json_schema,
    level_schema,
)
from logstream.shared.stream_doc import (
    CHANNELS_PARAMETERS,
    CHANNELS_RESPONSES,
    HISTORY_PARAMETERS,
    HISTORY_RESPONSES,
    SECURITY_SCHEMES,
    STREAM_PARAMETERS,
    channel_schemas,
    document_stream_answers,
    error_responses,
)

__all__ = [
    "CHANNELS_RESPONSES",
    "HISTORY_RESPONSES",
    "STATS_RESPONSES",
    "TEST_RECORD_RESPONSES",
    "ChannelsOperation",
    "HistoryOperation",
    "StreamOperation",
    "TestRecordOperation",
    "openapi_config",
    "stream_schemas",
]

_SEGMENT = "[A-Za-z0-9_-]{1,64}"


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


STATS_RESPONSES = {
    200: ResponseSpec(
        data_container=GatewayStats, description="This gateway's counters", generate_examples=False
    ),
    **error_responses(
        {401: "no admin credential (outside dev mode)", 403: "a user token without the admin role"}
    ),
}
TEST_RECORD_RESPONSES = {
    202: ResponseSpec(
        data_container=TestRecordAccepted,
        generate_examples=False,
        description="Ingest stored the test record",
    ),
    **error_responses(
        {
            400: "the body is not a test record, or its channel is not valid",
            429: "the dev service token is over its publish rate; see Retry-After",
            503: "ingest did not answer on NATS; see Retry-After",
        }
    ),
}


@dataclass
class StreamOperation(Operation):
    """``GET /api/logs/stream``, plus the query and headers its handler reads by itself."""

    def __post_init__(self) -> None:
        self.parameters = list(STREAM_PARAMETERS)
        document_stream_answers(self.responses)


@dataclass
class ChannelsOperation(Operation):
    """``GET /api/logs/channels``, plus the query its handler reads by itself."""

    def __post_init__(self) -> None:
        self.parameters = list(CHANNELS_PARAMETERS)
        add_response_headers(self.responses)


@dataclass
class HistoryOperation(Operation):
    """``GET /api/logs/history``, plus the query its handler reads by itself."""

    def __post_init__(self) -> None:
        self.parameters = list(HISTORY_PARAMETERS)
        add_response_headers(self.responses)


def _test_record_schema(services: Iterable[str]) -> dict[str, Any]:
    """The body ``POST /test/logs`` decodes (``test_route._TestBody``), as a schema."""
    (_,), components = msgspec.json.schema_components([_TestBody])
    schema = components[_TestBody.__name__]
    schema["title"] = "TestRecordRequest"
    schema["description"] = (
        "All optional: the seed channel and a generated message by "
        "default; the rules of POST /api/logs/publish apply."
    )
    schema["properties"]["channel"].update(pattern=channel_regex(services))
    schema["properties"]["level"].update(level_schema())
    return schema


@dataclass
class TestRecordOperation(Operation):
    """``POST /test/logs``, plus the optional body its handler reads by itself."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=False,
            content={
                "application/json": OpenAPIMediaType(
                    schema=json_schema({"$ref": SCHEMAS + "TestRecordRequest"}),
                    example={"channel": SEED_CHANNEL, "message": "hello"},
                )
            },
            description="Optional: the channel, message and level of the test record.",
        )
        # A refusal ingest sent back over NATS is relayed without its Retry-After.
        add_response_headers(self.responses, required=False)


def stream_schemas(services: Iterable[str], max_channels: int) -> dict[str, Any]:
    """The component schemas the operations refer to that depend on the settings."""
    return {
        **channel_schemas(services, max_channels),
        "TestRecordRequest": _test_record_schema(services),
    }


def openapi_config(dev: bool) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Logstream gateway",
        version=VERSION,
        description="Live and resumable log streams over Server-Sent Events."
        + (" Dev mode: `POST /test/logs` publishes a test record." if dev else ""),
        components=Components(security_schemes=SECURITY_SCHEMES),
    )
