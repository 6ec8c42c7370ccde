"""What a stream request asks for, checked at the edge (docs/reference/stream.md): channels, cursor, filters.

Every problem is an ``InvalidRequest`` (400) naming the parameter, raised before the stream
opens; authorisation of the channels against the user is separate (``authorise``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from litestar.connection import ASGIConnection

from logstream.shared.channels import ChannelPattern, parse_pattern
from logstream.shared.durations import parse_duration
from logstream.shared.errors import Forbidden, InvalidChannel, InvalidRequest
from logstream.shared.records import LEVELS, level_rank, parse_rfc3339
from logstream.shared.stream_doc import (
    DEFAULT_HISTORY_LIMIT,
    MAX_CHANNEL_CHARS,
    MAX_CURSOR_DIGITS,
    MAX_HISTORY_LIMIT,
    MAX_QUERY_CHARS,
    MAX_TAIL,
)
from logstream.shared.user_tokens import UserIdentity
from logstream.shared.where import Where, parse_where

__all__ = [
    "HistoryRequest",
    "StreamRequest",
    "authorise",
    "parse_history_request",
    "parse_limit",
    "parse_stream_request",
]


@dataclass(frozen=True, slots=True)
class StreamRequest:
    patterns: tuple[ChannelPattern, ...]
    last_event_id: int | None = None
    since: datetime | None = None
    tail: int | None = None
    min_level: int = 0
    query: str | None = None
    where: Where | None = None


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    patterns: tuple[ChannelPattern, ...]
    before: int | None
    limit: int
    min_level: int = 0
    query: str | None = None
    where: Where | None = None


def _channels(connection: ASGIConnection, services, max_channels: int):
    values = connection.query_params.getall("channels", [])
    # Bounded before splitting: a flood of commas or repeats is refused, not parsed.
    if len(values) > max_channels or sum(map(len, values)) > max_channels * (MAX_CHANNEL_CHARS + 1):
        raise InvalidRequest(
            f"too many or too long channels parameters; at most {max_channels} "
            f"channels of at most {MAX_CHANNEL_CHARS} characters",
            rule="channel_cap",
        )
    names = [
        name for name in (part.strip() for value in values for part in value.split(",")) if name
    ]
    if not names:
        raise InvalidRequest("channels is required: ?channels=logs:<service>:<workspace>[:<id>]")
    if len(names) > max_channels:
        raise InvalidRequest(
            f"{len(names)} channels requested; at most {max_channels}", rule="channel_cap"
        )
    patterns, details = [], []
    for name in dict.fromkeys(names):
        try:
            patterns.append(parse_pattern(name, services))
        except InvalidChannel as exc:
            details.append({"channel": name[:MAX_CHANNEL_CHARS], "message": exc.message})
    if details:
        raise InvalidChannel(details[0]["message"], details=details)
    return tuple(patterns)


def _digits(value: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '²' and other scripts' digits."""
    return value.isascii() and value.isdigit()


def _cursor(connection: ASGIConnection) -> int | None:
    value = connection.headers.get("last-event-id") or connection.query_params.get("last_event_id")
    if value is None or value == "":
        return None
    if not _digits(value) or len(value) > MAX_CURSOR_DIGITS or int(value) >= 2**64:
        raise InvalidRequest(
            f"last_event_id {value[:40]!r} must be a record seq (an integer from 0 to 2^64-1)"
        )
    return int(value)


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(value))
    except (ValueError, OverflowError):
        pass
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise InvalidRequest(
            f"since {value[:40]!r} must be RFC 3339 with an offset (2026-01-31T12:00:00Z) "
            "or a duration like 30s, 10m, 2h"
        ) from None


def _tail(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not _digits(value) or len(value) > len(str(MAX_TAIL)) or int(value) > MAX_TAIL:
        raise InvalidRequest(f"tail {value[:40]!r} must be an integer from 0 to {MAX_TAIL}")
    return int(value)


def _level(value: str | None) -> int:
    if not value:
        return 0
    level = "warn" if value.lower() == "warning" else value.lower()
    if level not in LEVELS:
        raise InvalidRequest(f"level {value[:40]!r} must be one of {', '.join(LEVELS)}")
    return level_rank(level)


def _query(connection: ASGIConnection) -> str | None:
    query = connection.query_params.get("q") or None
    if query is not None and len(query) > MAX_QUERY_CHARS:
        raise InvalidRequest(f"q is longer than {MAX_QUERY_CHARS} characters")
    return query


def _where(connection: ASGIConnection) -> Where | None:
    text = connection.query_params.get("where")
    return parse_where(text) if text and text.strip() else None


def _seq(name: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not _digits(value) or len(value) > MAX_CURSOR_DIGITS or not 1 <= int(value) < 2**64:
        raise InvalidRequest(
            f"{name} {value[:40]!r} must be a record seq (an integer from 1 to 2^64-1)",
            details=[{"parameter": name, "problem": "not a seq"}],
        )
    return int(value)


def parse_limit(value: str | None, *, default: int, maximum: int) -> int:
    """A ``limit`` parameter (history pages, the channel list): 1 to ``maximum``."""
    if value is None or value == "":
        return default
    if not _digits(value) or len(value) > len(str(maximum)) or not 1 <= int(value) <= maximum:
        raise InvalidRequest(
            f"limit {value[:40]!r} must be an integer from 1 to {maximum}",
            details=[{"parameter": "limit", "problem": "out of range"}],
        )
    return int(value)


def parse_stream_request(connection: ASGIConnection, *, services, max_channels: int):
    return StreamRequest(
        patterns=_channels(connection, services, max_channels),
        last_event_id=_cursor(connection),
        since=_since(connection.query_params.get("since")),
        tail=_tail(connection.query_params.get("tail")),
        min_level=_level(connection.query_params.get("level")),
        query=_query(connection),
        where=_where(connection),
    )


def parse_history_request(
    connection: ASGIConnection, *, services, max_channels: int
) -> HistoryRequest:
    return HistoryRequest(
        patterns=_channels(connection, services, max_channels),
        before=_seq("before", connection.query_params.get("before")),
        limit=parse_limit(
            connection.query_params.get("limit"),
            default=DEFAULT_HISTORY_LIMIT,
            maximum=MAX_HISTORY_LIMIT,
        ),
        min_level=_level(connection.query_params.get("level")),
        query=_query(connection),
        where=_where(connection),
    )


def authorise(user: UserIdentity, request: StreamRequest | HistoryRequest) -> None:
    refused = [str(p) for p in request.patterns if not user.may_read(p)]
    if refused:
        raise Forbidden(
            f"user {user.user_id!r} may not read {', '.join(refused)}: each channel, and every "
            "channel a '*' in it could match, must lie in the user's workspaces",
            details=[{"channel": channel} for channel in refused],
            rule="workspace",
        )
