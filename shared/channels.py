"""The channel grammar (docs/reference/channels.md): parse, format, and map to NATS subjects.

This module is the only place that splits a channel string or builds a ``logs.>`` subject.
Everything user-supplied reaches NATS through ``to_subject`` after ``parse_channel`` or
``parse_pattern`` accepted it, so no ``.``, ``*``, ``>``, space or control byte slips through.

- ``Channel``: a concrete channel, ``logs:<service>:<workspace>[:<resource>]``.
- ``ChannelPattern``: what a stream request names; any segment may be ``*`` (one segment).
- ``ChannelGrant``: what a service token may publish to; a prefix whose segments may be ``*``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from logstream.shared.errors import InvalidChannel

__all__ = [
    "DEFAULT_SERVICES",
    "PREFIX",
    "SUBJECT_PREFIX",
    "WILDCARD",
    "Channel",
    "ChannelGrant",
    "ChannelPattern",
    "channel_of_subject",
    "from_subject",
    "parse_channel",
    "parse_grant",
    "parse_pattern",
    "parse_prefix",
    "prefix_filters",
    "to_subject",
    "valid_segment",
]

PREFIX = "logs"
SUBJECT_PREFIX = "logs."
WILDCARD = "*"
# The services a channel may name unless configured otherwise (docs/reference/channels.md).
DEFAULT_SERVICES = frozenset({"etl", "faas", "analytics", "platform"})
# One segment: ASCII letters, digits, '_' and '-', 1 to 64 of them. No '.', '*', '>' or spaces,
# so a segment can never change the shape of the NATS subject it lands in.
_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
_NAMES = ("service", "workspace", "resource")


def valid_segment(text: str) -> bool:
    return _SEGMENT.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Channel:
    service: str
    workspace: str
    resource: str | None = None

    @property
    def segments(self) -> tuple[str, ...]:
        if self.resource is None:
            return (self.service, self.workspace)
        return (self.service, self.workspace, self.resource)

    def __str__(self) -> str:
        return ":".join((PREFIX, *self.segments))


@dataclass(frozen=True, slots=True)
class ChannelPattern:
    """A stream request's channel: each segment literal or ``*``; 2 or 3 segments after ``logs``."""

    segments: tuple[str, ...]

    @property
    def service(self) -> str:
        return self.segments[0]

    @property
    def workspace(self) -> str:
        return self.segments[1]

    @property
    def is_exact(self) -> bool:
        return WILDCARD not in self.segments

    def matches(self, channel: Channel) -> bool:
        other = channel.segments
        return len(other) == len(self.segments) and all(
            mine == WILDCARD or mine == theirs for mine, theirs in zip(self.segments, other)
        )

    def __str__(self) -> str:
        return ":".join((PREFIX, *self.segments))


@dataclass(frozen=True, slots=True)
class ChannelGrant:
    """A permission: a channel prefix (1 to 3 segments after ``logs``), ``*`` matching one segment."""

    segments: tuple[str, ...]

    def covers(self, channel: Channel) -> bool:
        theirs = channel.segments
        return len(self.segments) <= len(theirs) and all(
            mine == WILDCARD or mine == other for mine, other in zip(self.segments, theirs)
        )

    def __str__(self) -> str:
        return ":".join((PREFIX, *self.segments))


def _split(text: object, what: str) -> list[str]:
    if not isinstance(text, str):
        raise InvalidChannel(f"{what} must be a string")
    parts = text.split(":")
    if parts[0] != PREFIX:
        raise InvalidChannel(f"{what} {_show(text)} must start with 'logs:'")
    return parts[1:]


def _check_segments(
    text: str,
    parts: list[str],
    services: Iterable[str],
    *,
    wildcards: bool,
    what: str,
) -> None:
    for name, part in zip(_NAMES, parts):
        if wildcards and part == WILDCARD:
            continue
        if not valid_segment(part):
            raise InvalidChannel(
                f"{what} {_show(text)}: {name} segment {_show(part)} must be 1-64 characters "
                "of A-Z, a-z, 0-9, '_' or '-'" + (" (or '*')" if wildcards else "")
            )
        if name == "service" and part not in services:
            allowed = ", ".join(sorted(services))
            raise InvalidChannel(
                f"{what} {_show(text)}: unknown service {_show(part)} (one of: {allowed})"
            )


def _channel_parts(text: object, services: Iterable[str], *, wildcards: bool) -> list[str]:
    parts = _split(text, "channel")
    if len(parts) not in (2, 3):
        raise InvalidChannel(
            f"channel {_show(text)} must be logs:<service>:<workspace> "
            "or logs:<service>:<workspace>:<resource>"
        )
    _check_segments(str(text), parts, frozenset(services), wildcards=wildcards, what="channel")
    return parts


def parse_channel(text: object, services: Iterable[str] = DEFAULT_SERVICES) -> Channel:
    """Accept exactly ``logs:<service>:<workspace>[:<resource>]``; raise ``InvalidChannel`` else."""
    return Channel(*_channel_parts(text, services, wildcards=False))


def parse_pattern(text: object, services: Iterable[str] = DEFAULT_SERVICES) -> ChannelPattern:
    """A channel as named in a stream request, where any segment may be ``*``."""
    return ChannelPattern(tuple(_channel_parts(text, services, wildcards=True)))


def parse_grant(text: object, services: Iterable[str] = DEFAULT_SERVICES) -> ChannelGrant:
    """A grant such as ``logs:etl`` or ``logs:*:workspace123``."""
    parts = _split(text, "grant")
    if not 1 <= len(parts) <= 3:
        raise InvalidChannel(f"grant {_show(text)} must have 1 to 3 segments after 'logs:'")
    _check_segments(str(text), parts, frozenset(services), wildcards=True, what="grant")
    return ChannelGrant(tuple(parts))


def parse_prefix(text: object, services: Iterable[str] = DEFAULT_SERVICES) -> tuple[str, ...]:
    """A channel prefix such as ``logs:etl`` or ``logs:etl:workspace123``: 0 to 3 literal
    segments after ``logs`` (no ``*``), each by the channel grammar."""
    if text == PREFIX:
        return ()
    parts = _split(text, "prefix")
    if len(parts) > 3:
        raise InvalidChannel(
            f"prefix {_show(text)} must be logs[:<service>[:<workspace>[:<resource>]]]"
        )
    _check_segments(str(text), parts, frozenset(services), wildcards=False, what="prefix")
    return tuple(parts)


def prefix_filters(segments: tuple[str, ...]) -> list[str]:
    """The subject filters of every channel under a parsed prefix, its own channel included
    (``logs.etl.ws1.>`` does not match ``logs.etl.ws1``, so a workspace prefix needs both)."""
    subject = ".".join((PREFIX, *segments))
    if len(segments) >= 3:
        return [subject]
    if len(segments) == 2:
        return [subject, subject + ".>"]
    return [subject + ".>"]


def to_subject(channel: Channel | ChannelPattern) -> str:
    """``logs:etl:ws1:wf1`` -> ``logs.etl.ws1.wf1``; a pattern's ``*`` stays a NATS ``*``."""
    return ".".join((PREFIX, *channel.segments))


def from_subject(subject: str, services: Iterable[str] = DEFAULT_SERVICES) -> Channel:
    """The inverse of ``to_subject`` for concrete channels; rejects anything it could not make."""
    # A ':' would pass as a segment separator below, yet ``to_subject`` never writes one.
    if not isinstance(subject, str) or not subject.startswith(SUBJECT_PREFIX) or ":" in subject:
        raise InvalidChannel(f"subject {_show(subject)} is not a log subject")
    return parse_channel(PREFIX + ":" + subject[len(SUBJECT_PREFIX) :].replace(".", ":"), services)


def channel_of_subject(subject: str) -> str:
    """The channel string of a subject that came out of our own stream (hot path, no checks).

    Only for subjects read back from the LOGS stream, which ``to_subject`` alone writes to.
    """
    return PREFIX + ":" + subject[len(SUBJECT_PREFIX) :].replace(".", ":")


def _show(text: object) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."
