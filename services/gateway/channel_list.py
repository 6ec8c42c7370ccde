"""``GET /api/logs/channels``: the channels under a prefix that hold records, newest first
(docs/reference/stream.md#channels).

Nothing is scanned: JetStream keeps per-subject state, so the records of each subject under the
prefix come from one stream-info request, and each subject's newest record (its seq, when it
arrived, its level) from batched direct gets, one per ``MULTI_LAST_MAX`` subjects. The cost
grows with the number of channels under the prefix, never with the records in the stream.

Only channels the caller may read are listed: a prefix naming a workspace the user lacks is a
403, and a prefix above the workspace (``logs:etl``) lists only the user's own workspaces.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from litestar.connection import ASGIConnection

from logstream.services.gateway.source import LogSource
from logstream.services.gateway.stream_request import parse_limit
from logstream.shared.channels import (
    ChannelPattern,
    from_subject,
    parse_prefix,
    prefix_filters,
)
from logstream.shared.errors import Forbidden, InvalidChannel, InvalidRequest
from logstream.shared.stream_doc import DEFAULT_CHANNELS_LIMIT, MAX_CHANNELS_LIMIT
from logstream.shared.user_tokens import UserIdentity

__all__ = [
    "MAX_RANKED_CHANNELS",
    "ChannelsRequest",
    "list_channels",
    "parse_channels_request",
]

# Ranking by activity needs every matching channel's newest record; past this many channels
# under one prefix the answer would cost more than a list is worth, so the caller narrows it.
MAX_RANKED_CHANNELS = 10_000
# A prefix above the workspace is asked about per workspace of the user (two filters each):
# a user of many workspaces names one instead.
MAX_PREFIX_FILTERS = 128


@dataclass(frozen=True, slots=True)
class ChannelsRequest:
    prefix: tuple[str, ...]
    limit: int


class _LastSeen(msgspec.Struct):
    level: str = "info"
    received_at: str | None = None


_LAST_SEEN = msgspec.json.Decoder(_LastSeen)


def parse_channels_request(connection: ASGIConnection, *, services) -> ChannelsRequest:
    text = connection.query_params.get("prefix")
    if not text:
        raise InvalidRequest(
            "prefix is required: ?prefix=logs:<service>[:<workspace>[:<resource>]]",
            details=[{"parameter": "prefix", "problem": "missing"}],
        )
    try:
        prefix = parse_prefix(text, services)
    except InvalidChannel as exc:
        raise InvalidRequest(
            exc.message, details=[{"parameter": "prefix", "problem": exc.message}]
        ) from None
    limit = parse_limit(
        connection.query_params.get("limit"),
        default=DEFAULT_CHANNELS_LIMIT,
        maximum=MAX_CHANNELS_LIMIT,
    )
    return ChannelsRequest(prefix, limit)


def _authorise(user: UserIdentity, prefix: tuple[str, ...]) -> None:
    if len(prefix) >= 2 and not user.may_read(ChannelPattern((prefix[0], prefix[1]))):
        channel = ":".join(("logs", *prefix))
        raise Forbidden(
            f"user {user.user_id!r} may not read {channel}: it is outside the user's workspaces",
            details=[{"channel": channel}],
            rule="workspace",
        )


def _filters(user: UserIdentity, prefix: tuple[str, ...], services) -> list[str]:
    """What to ask the broker about: the prefix, or, above the workspace for a user of some
    workspaces, each of the user's workspaces under it (other workspaces' channels are not
    even counted)."""
    if len(prefix) >= 2 or user.reads_every_workspace:
        return prefix_filters(prefix)
    names = prefix[:1] or tuple(sorted(services))
    filters = [
        subject_filter
        for service in names
        for workspace in sorted(user.workspaces)
        for subject_filter in prefix_filters((service, workspace))
    ]
    if len(filters) > MAX_PREFIX_FILTERS:
        raise InvalidRequest(
            f"prefix {':'.join(('logs', *prefix))} spans {len(filters) // 2} service "
            "workspaces of this user; name a service and a workspace",
            details=[{"parameter": "prefix", "problem": "too broad"}],
        )
    return filters


async def list_channels(
    source: LogSource, user: UserIdentity, request: ChannelsRequest, *, services
) -> list[dict]:
    """The readable channels under the prefix with records, most recently active first."""
    _authorise(user, request.prefix)
    counts: dict[str, int] = {}
    for subject_filter in _filters(user, request.prefix, services):
        found, total = await source.subject_counts(subject_filter)
        if total > len(found) or len(counts) + total > MAX_RANKED_CHANNELS:
            raise InvalidRequest(
                f"more than {MAX_RANKED_CHANNELS:,} channels lie under "
                f"{':'.join(('logs', *request.prefix))}; name a workspace or a channel",
                details=[{"parameter": "prefix", "problem": "too many channels"}],
                rule="channel_cap",
            )
        counts.update(found)
    readable: dict[str, tuple[str, int]] = {}
    for subject, records in counts.items():
        try:
            channel = from_subject(subject, services)
        except InvalidChannel:
            continue  # a subject no channel of this configuration names (a service removed)
        if user.may_read(ChannelPattern(channel.segments)):
            readable[subject] = (str(channel), records)
    newest = await source.last_per_subject(sorted(readable))
    newest.sort(key=lambda last: last.seq, reverse=True)
    listed = []
    for last in newest[: request.limit]:
        name, records = readable[last.subject]
        try:
            seen = _LAST_SEEN.decode(last.data)
        except msgspec.DecodeError:
            seen = _LastSeen()
        listed.append(
            {
                "channel": name,
                "records": records,
                "last_seq": last.seq,
                "last_at": seen.received_at,
                "last_level": seen.level,
            }
        )
    return listed
