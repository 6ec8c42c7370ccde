"""The proxy's OpenAPI document: its product routes, the route table and the dev login.

Each product route reads its query through the route table (``logstream.services.proxy.routes``), so
Litestar sees no parameter: ``stream_operation(route)`` makes the route's ``operation_class``,
which declares the route's own parameters (one channel segment each) and what is passed
through to the gateway (the gateway's stream parameters but ``channels``). The answers are the
gateway's, relayed, plus the proxy's own 400 (a bad route parameter) and 502 (no gateway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIResponse,
    Operation,
    Parameter,
)

from logstream.services.proxy.routes import Route
from logstream.shared.api_doc import (
    RETRY_AFTER,
    VERSION,
    ErrorBody,
    add_response_headers,
    json_schema,
)
from logstream.shared.identities import DEV_USERS
from logstream.shared.stream_doc import (
    CHANNELS,
    CHANNELS_PARAMETERS,
    HISTORY_PARAMETERS,
    SECURITY_SCHEMES,
    STREAM_PARAMETERS,
    document_stream_answers,
)
from logstream.shared.stream_doc import (
    CHANNELS_RESPONSES as GATEWAY_CHANNELS_RESPONSES,
)
from logstream.shared.stream_doc import (
    HISTORY_RESPONSES as GATEWAY_HISTORY_RESPONSES,
)
from logstream.shared.stream_doc import (
    STREAM_RESPONSES as GATEWAY_STREAM_RESPONSES,
)

__all__ = [
    "CHANNELS_RESPONSES",
    "DEV_TOKEN_RESPONSES",
    "HISTORY_RESPONSES",
    "ROUTES_RESPONSES",
    "STREAM_RESPONSES",
    "ChannelsOperation",
    "DevTokenOperation",
    "GatewayStreamOperation",
    "HistoryOperation",
    "openapi_config",
    "stream_operation",
]

_SEGMENT = "^[A-Za-z0-9_-]{1,64}$"
# What the proxy forwards besides the route's own parameters: the gateway's stream parameters
# but `channels` (the route makes it) and the X- headers (the proxy sets them itself).
PASSED_THROUGH = [
    parameter
    for parameter in STREAM_PARAMETERS
    if parameter is not CHANNELS and not parameter.name.startswith("X-")
]


class RouteDescription(msgspec.Struct):
    name: str
    label: str
    path: str
    channel: str
    params: list[str]


class RouteTableBody(msgspec.Struct):
    """The configured product routes, in order: what the Logs page and `logstream tail` read."""

    routes: list[RouteDescription]


class DevToken(msgspec.Struct):
    """A dev user's token; the same token is set as the ``logstream_session`` cookie."""

    token: str
    user_id: str
    workspaces: list[str]
    roles: list[str]
    expires_in: int


def _error(text: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=text, generate_examples=False)


STREAM_RESPONSES = {
    **GATEWAY_STREAM_RESPONSES,
    200: ResponseSpec(
        data_container=str,
        media_type="text/event-stream",
        generate_examples=False,
        description="The gateway's stream, relayed as it comes. "
        + GATEWAY_STREAM_RESPONSES[200].description,
    ),
    400: _error(
        "a route parameter is missing, repeated or not a channel segment, or the "
        "gateway refused a parameter; details name it"
    ),
    502: _error("no gateway is reachable; see Retry-After"),
}
_NO_GATEWAY = {
    502: _error("no gateway is reachable; see Retry-After"),
    504: _error("the gateway did not answer in time; see Retry-After"),
}
CHANNELS_RESPONSES = {**GATEWAY_CHANNELS_RESPONSES, **_NO_GATEWAY}
HISTORY_RESPONSES = {**GATEWAY_HISTORY_RESPONSES, **_NO_GATEWAY}
ROUTES_RESPONSES = {
    200: ResponseSpec(
        data_container=RouteTableBody, generate_examples=False, description="The route table"
    )
}
DEV_TOKEN_RESPONSES = {
    200: ResponseSpec(
        data_container=DevToken,
        generate_examples=False,
        description="A token for the dev user; also set as the session cookie",
    ),
    400: _error("the user parameter is missing"),
    404: _error("no such dev user"),
}


def _route_parameter(route: Route, name: str) -> Parameter:
    return Parameter(
        name=name,
        param_in="query",
        required=True,
        schema=json_schema({"type": "string", "pattern": _SEGMENT}),
        description=f"Fills `{{{name}}}` in the channel `{route.template}`: 1-64 "
        "of A-Z a-z 0-9 _ -. Required, given once: there are no "
        "default ids.",
    )


def stream_operation(route: Route) -> type[Operation]:
    """The ``operation_class`` of ``route``'s handler."""
    parameters = [_route_parameter(route, name) for name in route.params] + PASSED_THROUGH

    @dataclass
    class RouteStreamOperation(Operation):
        def __post_init__(self) -> None:
            self.parameters = list(parameters)
            document_stream_answers(self.responses)
            _retry_after_on_refusals(self.responses)

    return RouteStreamOperation


def _retry_after_on_refusals(responses: dict[str, Any] | None) -> None:
    """The proxy's own refusals (no gateway reachable, or none answering in time) carry
    ``Retry-After``, where they are documented."""
    for status in ("502", "504"):
        answer = (responses or {}).get(status)
        if isinstance(answer, OpenAPIResponse):  # Litestar's own, never a Reference
            answer.headers = {"Retry-After": RETRY_AFTER}


@dataclass
class GatewayStreamOperation(Operation):
    """``GET /api/logs/stream``: the gateway's own stream parameters, passed through."""

    def __post_init__(self) -> None:
        self.parameters = [p for p in STREAM_PARAMETERS if not p.name.startswith("X-")]
        document_stream_answers(self.responses)
        _retry_after_on_refusals(self.responses)


@dataclass
class ChannelsOperation(Operation):
    """``GET /api/logs/channels``, passed through to a gateway."""

    def __post_init__(self) -> None:
        self.parameters = list(CHANNELS_PARAMETERS)
        add_response_headers(self.responses)
        _retry_after_on_refusals(self.responses)


@dataclass
class HistoryOperation(Operation):
    """``GET /api/logs/history``, passed through to a gateway."""

    def __post_init__(self) -> None:
        self.parameters = list(HISTORY_PARAMETERS)
        add_response_headers(self.responses)
        _retry_after_on_refusals(self.responses)


@dataclass
class DevTokenOperation(Operation):
    """``GET /dev/token``: ``user`` is required and names one of the dev users."""

    def __post_init__(self) -> None:
        self.parameters = [
            Parameter(
                name="user",
                param_in="query",
                required=True,
                schema=json_schema({"type": "string", "enum": sorted(DEV_USERS)}),
                description="A built-in dev user: "
                + ", ".join(
                    f"{user} ({', '.join(spaces)})" for user, spaces in sorted(DEV_USERS.items())
                ),
            )
        ]
        answer = (self.responses or {}).get("200")
        if isinstance(answer, OpenAPIResponse):  # Litestar's own, never a Reference
            answer.headers = {
                "Set-Cookie": OpenAPIHeader(
                    schema=json_schema({"type": "string"}),
                    required=True,
                    description="logstream_session=<token>; HttpOnly; SameSite=Lax; Path=/",
                )
            }


def openapi_config(dev: bool) -> OpenAPIConfig:
    schemes: dict[str, Any] = {
        name: scheme for name, scheme in SECURITY_SCHEMES.items() if name != "adminBearer"
    }
    return OpenAPIConfig(
        title="Logstream proxy",
        version=VERSION,
        description="The product routes: each one streams one channel from a gateway; and "
        "the gateway's own read paths (a stream of several channels, the channel list, "
        "history pages), passed through."
        + (" Dev mode: `GET /dev/token` logs a dev user in." if dev else ""),
        components=Components(security_schemes=schemes),
    )
