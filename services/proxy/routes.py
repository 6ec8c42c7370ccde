"""The proxy's route table (docs/reference/stream.md#proxy-routes): which URL path streams which channel.

The table is configuration, a TOML file of ``[[routes]]`` entries::

    [[routes]]
    path = "/api/dapadmin/l5-etl/sse/logs/stream"
    channel = "logs:etl:{workspace_id}:{workflow_id}"
    label = "ETL"            # optional: how the Logs page names it
    name = "etl"             # optional: a stable key (default: the channel's service)

Each ``{name}`` in a channel template is a required query parameter that fills exactly one
channel segment. There are no default IDs: a missing or malformed parameter is an
``InvalidRequest`` that names it. A table that cannot work (missing keys, a bad template, a path
used twice) raises ``SettingsError`` naming ``routes_file``, so the proxy refuses to start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from logstream.shared.channels import (
    DEFAULT_SERVICES,
    PREFIX,
    Channel,
    parse_channel,
    valid_segment,
)
from logstream.shared.errors import InvalidChannel, InvalidRequest, SettingsError
from logstream.shared.settings import decode_toml_file, env_name

__all__ = ["PACKAGED_ROUTES", "RESERVED_PATHS", "Route", "RouteTable", "load_routes"]

# The Datashop routes shipped with the package; used when no routes_file is configured.
PACKAGED_ROUTES = "routes.toml"
# Paths the proxy serves itself; a configured route may not shadow them.
RESERVED_PATHS = frozenset(
    {
        "/",
        "/health",
        "/ready",
        "/metrics",
        "/dev/token",
        "/api/logs/routes",
        # the gateway's own read paths, which the proxy passes through
        "/api/logs/stream",
        "/api/logs/channels",
        "/api/logs/history",
    }
)
_RESERVED_PREFIXES = ("/static/", "/schema")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", re.ASCII)
# A URL path of plain segments: no query, fragment, placeholders or dot segments.
_PATH = re.compile(r"(/[A-Za-z0-9_.~-]+)+", re.ASCII)
# Fills each parameter while a template is checked, so the grammar of the rest is tested.
_PROBE_SEGMENT = "x"


class _RouteEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    path: Annotated[str, Meta(min_length=1)]
    channel: Annotated[str, Meta(min_length=1)]
    name: str | None = None
    label: str | None = None


class _RouteFile(msgspec.Struct, forbid_unknown_fields=True):
    routes: list[_RouteEntry]


@dataclass(frozen=True, slots=True)
class Route:
    """One configured path and the channel template it streams."""

    path: str
    template: str
    params: tuple[str, ...]
    name: str
    label: str
    services: frozenset[str] = DEFAULT_SERVICES

    def channel_for(self, query: Mapping[str, Sequence[str]]) -> Channel:
        """The channel named by ``query`` (parameter -> the values given for it)."""
        values = {name: _one_value(name, query.get(name)) for name in self.params}
        # The template was checked at load; parse_channel still guards the built channel.
        return parse_channel(_PARAM.sub(lambda m: values[m.group(1)], self.template), self.services)

    def describe(self) -> dict[str, object]:
        """What the Logs page needs to build a form for this route."""
        return {
            "name": self.name,
            "label": self.label,
            "path": self.path,
            "channel": self.template,
            "params": list(self.params),
        }


def _one_value(name: str, given: Sequence[str] | None) -> str:
    if not given or given == [""]:
        raise InvalidRequest(
            f"query parameter {name!r} is required",
            details=[{"parameter": name, "problem": "missing"}],
        )
    if len(given) > 1:
        raise InvalidRequest(
            f"query parameter {name!r} is given more than once",
            details=[{"parameter": name, "problem": "repeated"}],
        )
    value = given[0]
    if not valid_segment(value):
        shown = repr(value) if len(value) <= 70 else repr(value[:67] + "...")
        raise InvalidRequest(
            f"query parameter {name!r} ({shown}) must be 1-64 characters of A-Z, a-z, 0-9, "
            "'_' or '-'",
            details=[{"parameter": name, "problem": "invalid"}],
        )
    return value


class RouteTable:
    """The configured routes, in file order."""

    def __init__(self, routes: Iterable[Route], source: str) -> None:
        self.routes = tuple(routes)
        self.source = source

    def __iter__(self):
        return iter(self.routes)

    def __len__(self) -> int:
        return len(self.routes)

    def by_path(self, path: str) -> Route | None:
        return next((route for route in self.routes if route.path == path), None)


def load_routes(routes_file: str = "", services: Iterable[str] = DEFAULT_SERVICES) -> RouteTable:
    """Read ``routes_file`` (or the packaged table when empty); raise ``SettingsError`` if bad."""
    services = frozenset(services)
    if routes_file:
        source = str(routes_file)
        try:
            text = Path(routes_file).read_text()
        except OSError as exc:
            raise _bad(source, f"cannot read it: {exc.strerror or exc}") from None
    else:
        source = f"packaged {PACKAGED_ROUTES}"
        text = resources.files(__package__).joinpath(PACKAGED_ROUTES).read_text()
    return parse_routes(text, source, services)


def parse_routes(text: str, source: str, services: Iterable[str] = DEFAULT_SERVICES) -> RouteTable:
    services = frozenset(services)
    entries = decode_toml_file(text, _RouteFile, lambda why: _bad(source, why)).routes
    if not entries:
        raise _bad(source, "it has no [[routes]]")
    routes: list[Route] = []
    for index, entry in enumerate(entries):
        where = f"routes[{index}] ({entry.path})"
        try:
            route = _build_route(entry, services)
        except ValueError as exc:
            raise _bad(source, f"{where}: {exc}") from None
        if any(other.path == route.path for other in routes):
            raise _bad(source, f"{where}: path {route.path!r} appears more than once")
        if any(other.name == route.name for other in routes):
            raise _bad(
                source,
                f"{where}: name {route.name!r} appears more than once "
                "(give each route its own `name`)",
            )
        routes.append(route)
    return RouteTable(routes, source)


def _build_route(entry: _RouteEntry, services: frozenset[str]) -> Route:
    _check_path(entry.path)
    params = _check_template(entry.channel, services)
    name = entry.name or entry.channel.split(":")[1]
    if not valid_segment(name):
        raise ValueError(f"name {name!r} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
    return Route(
        path=entry.path,
        template=entry.channel,
        params=params,
        name=name,
        label=entry.label or name,
        services=services,
    )


def _check_path(path: str) -> None:
    if not _PATH.fullmatch(path) or any(part in (".", "..") for part in path.split("/")):
        raise ValueError(
            "path must be an absolute URL path such as /api/dapadmin/etl/sse/logs/stream "
            "(letters, digits, '-', '_', '.', '~' between slashes)"
        )
    if path in RESERVED_PATHS or path.startswith(_RESERVED_PREFIXES):
        raise ValueError(f"path {path!r} is reserved for the proxy itself")


def _check_template(template: str, services: frozenset[str]) -> tuple[str, ...]:
    """The template's parameters, in order; each must fill one whole segment."""
    segments = template.split(":")
    params: list[str] = []
    for segment in segments[1:]:
        match = _PARAM.fullmatch(segment)
        if match:
            params.append(match.group(1))
        elif "{" in segment or "}" in segment:
            raise ValueError(
                f"channel template {template!r}: segment {segment!r} must be "
                "either literal or exactly one {parameter}"
            )
    if len(set(params)) != len(params):
        raise ValueError(f"channel template {template!r} names a parameter twice")
    if segments[0] != PREFIX or (len(segments) > 1 and _PARAM.fullmatch(segments[1])):
        raise ValueError(
            f"channel template {template!r} must start with 'logs:<service>:' "
            "(the service is fixed by the route)"
        )
    probe = _PARAM.sub(_PROBE_SEGMENT, template)
    try:
        parse_channel(probe, services)
    except InvalidChannel as exc:
        raise ValueError(
            f"channel template {template!r} does not make a channel: {exc.message}"
        ) from None
    return tuple(params)


def _bad(source: str, problem: str) -> SettingsError:
    return SettingsError(
        f"invalid setting routes_file ({env_name('routes_file')}): {source}: {problem}"
    )
