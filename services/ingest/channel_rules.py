"""Channel mapping rules: the channel of a record that arrives without one (OTLP, Loki).

A shipper knows its own attributes or labels, not Logstream's channels. One TOML file
(``LOGSTREAM_CHANNEL_RULES``, the ingest setting ``channel_rules``) maps them:

    [[rules]]
    channel = "logs:etl:{workspace_id}:{workflow_id}"
    when = { "service.namespace" = "etl" }

    [[rules]]
    channel = "logs:faas:{k8s.namespace.name}:{faas.name}"

A record's attributes are, for OTLP, its resource's and its own (its own win); for Loki, its
stream's labels and the entry's structured metadata. Rules are tried in order and the first
that matches gives the channel: every ``when`` attribute has exactly that value, and every
``{name}`` in the template names an attribute whose value is a channel segment (letters,
digits, ``_`` and ``-``, at most 64). A rule that names a missing attribute, or one whose value
is not a segment (``a:b`` would reach into the next segment), does not match. An explicit channel
(the attribute ``logstream.channel``, the label ``channel``) always wins over the rules. The
mapped channel then goes through every check a published one does, grants included.

A file that does not load, or a rule whose template could never make a channel, stops ingest
at start naming the rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from logstream.shared.channels import parse_channel, valid_segment
from logstream.shared.errors import InvalidChannel, SettingsError
from logstream.shared.settings import decode_toml_file

__all__ = ["ChannelRule", "ChannelRules", "load_channel_rules"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")


class _RuleEntry(msgspec.Struct, forbid_unknown_fields=True):
    channel: str
    when: dict[str, str] = {}


class _RuleFile(msgspec.Struct, forbid_unknown_fields=True):
    rules: list[_RuleEntry] = []


class ChannelRule:
    __slots__ = ("names", "template", "when")

    def __init__(self, template: str, when: Mapping[str, str]) -> None:
        self.template = template
        self.when = dict(when)
        self.names = _PLACEHOLDER.findall(template)

    def channel(self, attributes: Mapping[str, Any]) -> str | None:
        for name, wanted in self.when.items():
            if name not in attributes or str(attributes[name]) != wanted:
                return None
        values = {}
        for name in self.names:
            value = attributes.get(name)
            if not isinstance(value, str | int) or isinstance(value, bool):
                return None
            text = str(value)
            if not valid_segment(text):
                return None
            values[name] = text
        return _PLACEHOLDER.sub(lambda found: values[found[1]], self.template)


class ChannelRules:
    """The rules of one file, in order (no file: no rules, nothing is mapped)."""

    def __init__(self, rules: list[ChannelRule], source: str = "") -> None:
        self.rules, self.source = rules, source

    def __len__(self) -> int:
        return len(self.rules)

    def channel(self, attributes: Mapping[str, Any]) -> str | None:
        """The first matching rule's channel, or None."""
        for rule in self.rules:
            channel = rule.channel(attributes)
            if channel is not None:
                return channel
        return None


def _bad(source: str, why: str) -> SettingsError:
    return SettingsError(
        f"invalid setting channel_rules (LOGSTREAM_CHANNEL_RULES): {source}: {why}"
    )


def _check_template(template: str, services: frozenset[str]) -> None:
    """A template must make a channel of the grammar once its placeholders are segments."""
    sample = _PLACEHOLDER.sub("x", template)
    if "{" in sample or "}" in sample:
        raise ValueError(f"template {template!r} has a brace that is not a {{name}} placeholder")
    try:
        parse_channel(sample, services)
    except InvalidChannel as exc:
        raise ValueError(f"template {template!r} cannot make a channel: {exc.message}") from None


def parse_channel_rules(text: str, source: str, services: frozenset[str]) -> ChannelRules:
    entries = decode_toml_file(text, _RuleFile, lambda why: _bad(source, why)).rules
    rules = []
    for index, entry in enumerate(entries):
        try:
            _check_template(entry.channel, services)
        except ValueError as exc:
            raise _bad(source, f"rules[{index}]: {exc}") from None
        rules.append(ChannelRule(entry.channel, entry.when))
    return ChannelRules(rules, source)


def load_channel_rules(path: str, services: frozenset[str]) -> ChannelRules:
    """The rules of ``path``; none for an empty path. ``SettingsError`` naming the problem."""
    if not path:
        return ChannelRules([])
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise _bad(path, f"cannot read it: {exc.strerror or exc}") from None
    return parse_channel_rules(text, path, services)
