"""logstream.shared.channels against docs/reference/channels.md: the grammar, subjects, patterns and grants."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from logstream.shared.channels import (
    DEFAULT_SERVICES,
    Channel,
    channel_of_subject,
    from_subject,
    parse_channel,
    parse_grant,
    parse_pattern,
    to_subject,
)
from logstream.shared.errors import InvalidChannel

# The grammar written out again from docs/reference/channels.md, independently of logstream.shared.channels.
_CONTRACT_SEGMENT = "[A-Za-z0-9_-]{1,64}"
_CONTRACT_GRAMMAR = re.compile(
    rf"logs:(?:etl|faas|analytics|platform):{_CONTRACT_SEGMENT}(?::{_CONTRACT_SEGMENT})?"
)
_SUBJECT_BYTES = re.compile(r"[A-Za-z0-9_.-]+")
# No per-example deadline: a busy 2-core machine must not turn a slow example into a failure.
property_test = settings(deadline=None, max_examples=200)

VALID_CHARS = string.ascii_letters + string.digits + "_-"
# Everything that has broken a subject or a parser somewhere: NATS tokens and wildcards,
# whitespace and control bytes, non-ASCII letters and digits, our own separator.
TRICKY_CHARS = VALID_CHARS + ".*> \t\n\r\x00\x7f:éİǅ٣１\u2028/\\"

valid_segments = st.text(alphabet=VALID_CHARS, min_size=1, max_size=64)
services = st.sampled_from(sorted(DEFAULT_SERVICES))
any_segment = st.one_of(
    valid_segments,
    st.text(alphabet=TRICKY_CHARS, max_size=66),
    st.text(alphabet=VALID_CHARS, min_size=63, max_size=66),
    st.sampled_from(["", "*", ">", "ETL", "etl ", "logs", "é", "٣", "a.b", "a b"]),
    services,
)
prefixes = st.sampled_from(["logs", "logs", "logs", "Logs", "LOGS", "log", "logs ", " logs", ""])
structured_text = st.builds(
    lambda prefix, parts: ":".join([prefix, *parts]),
    prefixes,
    st.lists(any_segment, min_size=0, max_size=5),
)
# Mostly valid, with one part sometimes off: the strings right at the grammar's edge.
near_valid_text = st.builds(
    lambda service, parts: ":".join(["logs", service, *parts]),
    services,
    st.lists(st.one_of(valid_segments, valid_segments, any_segment), min_size=1, max_size=3),
)
valid_channels = st.builds(Channel, services, valid_segments, st.one_of(st.none(), valid_segments))


@property_test
@given(st.one_of(structured_text, near_valid_text, st.text(), st.text(alphabet=TRICKY_CHARS)))
@example("logs:etl:ws1")
@example("logs:etl:ws1:wf-1_A")
@example("logs:etl:ws1\n")
@example("logs:etl:" + "a" * 65)
@example("logs:etl:" + "a" * 64)
@example("logs:etl:ws.1")
@example("logs:etl:ws1:a:b")
@example("logs:etl")
def test_parse_channel_accepts_exactly_the_contract_grammar(text):
    if _CONTRACT_GRAMMAR.fullmatch(text):
        channel = parse_channel(text)
        assert str(channel) == text
        subject = to_subject(channel)
        assert _SUBJECT_BYTES.fullmatch(subject) and len(subject.split(".")) in (3, 4)
    else:
        with pytest.raises(InvalidChannel):
            parse_channel(text)


@pytest.mark.parametrize("value", [None, 42, b"logs:etl:ws1", ["logs", "etl", "ws1"]])
def test_a_channel_that_is_not_a_string_is_invalid(value):
    with pytest.raises(InvalidChannel, match="must be a string"):
        parse_channel(value)


@property_test
@given(valid_channels)
def test_every_accepted_channel_maps_to_a_safe_subject_of_three_or_four_tokens(channel):
    subject = to_subject(parse_channel(str(channel)))
    assert _SUBJECT_BYTES.fullmatch(subject)
    tokens = subject.split(".")
    assert len(tokens) in (3, 4) and tokens[0] == "logs"


@property_test
@given(valid_channels)
def test_from_subject_inverts_to_subject(channel):
    assert from_subject(to_subject(channel)) == channel
    assert channel_of_subject(to_subject(channel)) == str(channel)


@property_test
@given(
    st.builds(
        lambda service, parts: ".".join(["logs", service, *parts]),
        services,
        st.lists(valid_segments, min_size=1, max_size=2),
    )
)
def test_to_subject_inverts_from_subject(subject):
    assert to_subject(from_subject(subject)) == subject


dotted_text = structured_text.map(lambda text: text.replace(":", "."))


@property_test
@given(st.one_of(st.text(alphabet=TRICKY_CHARS), dotted_text))
@example("logs.etl:ws1")
@example("logs.etl.ws1:wf1")
@example("logs.etl.*")
@example("logs.etl.>")
def test_from_subject_rejects_what_to_subject_could_not_have_made(subject):
    try:
        channel = from_subject(subject)
    except InvalidChannel:
        return
    assert to_subject(channel) == subject


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("log:etl:ws1", "must start with 'logs:'"),
        ("LOGS:etl:ws1", "must start with 'logs:'"),
        ("logs:nope:ws1", "unknown service 'nope'"),
        ("logs:ETL:ws1", "unknown service 'ETL'"),
        ("logs:et.l:ws1", "service segment 'et.l'"),
        ("logs:etl:ws.1", "workspace segment 'ws.1'"),
        ("logs:etl:", "workspace segment ''"),
        ("logs:etl:" + "w" * 65, "workspace segment"),
        ("logs:etl:ws1:wf 1", "resource segment 'wf 1'"),
        ("logs:etl:ws1:wf>", "resource segment 'wf>'"),
        ("logs:etl:ws1:é", "resource segment 'é'"),
        ("logs:etl", "logs:<service>:<workspace>"),
        ("logs:etl:ws1:wf1:x", "logs:<service>:<workspace>:<resource>"),
    ],
)
def test_an_invalid_channel_error_names_the_bad_part(text, named):
    with pytest.raises(InvalidChannel) as caught:
        parse_channel(text)
    assert named in caught.value.message


def test_configured_services_replace_the_default_set():
    assert parse_channel("logs:billing:ws1", services={"billing"}) == Channel("billing", "ws1")
    with pytest.raises(InvalidChannel, match="unknown service 'etl' \\(one of: billing\\)"):
        parse_channel("logs:etl:ws1", services={"billing"})


@pytest.mark.parametrize(
    "text", ["logs:etl:ws1:*", "logs:etl:*", "logs:*:ws1", "logs:*:*:*", "logs:faas:ws1:fn1"]
)
def test_a_pattern_may_use_a_star_for_any_whole_segment(text):
    pattern = parse_pattern(text)
    assert str(pattern) == text
    assert pattern.is_exact == ("*" not in text)
    assert to_subject(pattern) == text.replace(":", ".")


@pytest.mark.parametrize(
    "text",
    ["logs:etl:ws*", "logs:etl:ws1:>", "logs:etl:**", "logs:nope:*", "logs:*", "logs:*:*:*:*"],
)
def test_a_pattern_rejects_partial_wildcards_unknown_services_and_bad_shapes(text):
    with pytest.raises(InvalidChannel):
        parse_pattern(text)


def test_an_exact_pattern_does_not_match_the_channels_below_it():
    pattern = parse_pattern("logs:analytics:ws1")
    assert pattern.matches(parse_channel("logs:analytics:ws1"))
    assert not pattern.matches(parse_channel("logs:analytics:ws1:x"))
    assert not pattern.matches(parse_channel("logs:analytics:ws2"))


@property_test
@given(valid_segments)
def test_a_resource_wildcard_matches_every_resource_of_that_workspace(resource):
    pattern = parse_pattern("logs:etl:ws1:*")
    assert pattern.matches(Channel("etl", "ws1", resource))
    assert not pattern.matches(Channel("etl", "ws1"))
    assert not pattern.matches(Channel("etl", "ws2", resource))
    assert not pattern.matches(Channel("faas", "ws1", resource))


@property_test
@given(valid_channels)
def test_the_grant_of_a_service_covers_every_channel_of_that_service_and_no_other(channel):
    grant = parse_grant("logs:etl")
    assert grant.covers(channel) == (channel.service == "etl")


@property_test
@given(services, st.one_of(st.none(), valid_segments))
def test_a_workspace_grant_covers_every_service_of_that_workspace(service, resource):
    grant = parse_grant("logs:*:workspace123")
    assert grant.covers(Channel(service, "workspace123", resource))
    assert not grant.covers(Channel(service, "workspace1234", resource))
    assert not grant.covers(Channel(service, "workspace12", resource))


def test_a_full_channel_grant_covers_that_channel_alone():
    grant = parse_grant("logs:etl:ws1:wf1")
    assert grant.covers(Channel("etl", "ws1", "wf1"))
    assert not grant.covers(Channel("etl", "ws1", "wf2"))
    assert not grant.covers(Channel("etl", "ws1"))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("logs:etl:ws1:wf1:x", "1 to 3 segments"),
        ("logs:etl:ws1:wf1:x:y", "1 to 3 segments"),
        ("logs", "1 to 3 segments"),
        ("logs:", "service segment ''"),
        ("logs:nope", "unknown service 'nope'"),
        ("log:etl", "must start with 'logs:'"),
        ("logs:etl:ws.1", "workspace segment 'ws.1'"),
    ],
)
def test_a_bad_grant_is_rejected_naming_the_problem(text, named):
    with pytest.raises(InvalidChannel) as caught:
        parse_grant(text)
    assert named in caught.value.message
    assert caught.value.message.startswith("grant")


# Subjects: no byte of user input reaches NATS except through the grammar (docs/reference/channels.md and docs/reference/stream.md).

_SUBJECT_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SEGMENT_NAMES = ("service", "workspace", "resource")


def _segments_of(subject: str) -> list[str]:
    tokens = subject.split(".")
    assert tokens[0] == "logs" and len(tokens) in (3, 4), subject
    return tokens[1:]


@property_test
@given(st.one_of(structured_text, near_valid_text, st.text(), st.text(alphabet=TRICKY_CHARS)))
@example("logs:etl:ws1:*")
@example("logs:*:*:*")
@example("logs:etl:ws1:>")
@example("logs:etl:ws1:a*")
@example("logs:etl:ws1:\x00")
def test_any_pattern_that_parses_maps_to_a_subject_of_safe_segments_or_whole_stars(text):
    try:
        pattern = parse_pattern(text)
    except InvalidChannel:
        return
    subject = to_subject(pattern)
    assert ">" not in subject and " " not in subject
    assert not any(ord(char) < 0x20 or ord(char) == 0x7F for char in subject)
    for segment in _segments_of(subject):
        assert segment == "*" or _SUBJECT_SEGMENT.fullmatch(segment), subject


@property_test
@given(st.one_of(structured_text, near_valid_text, st.text(alphabet=TRICKY_CHARS)))
def test_any_channel_that_parses_maps_to_a_subject_without_a_wildcard(text):
    try:
        channel = parse_channel(text)
    except InvalidChannel:
        return
    segments = _segments_of(to_subject(channel))
    assert all(_SUBJECT_SEGMENT.fullmatch(segment) for segment in segments)


def _shown(part: str) -> str:
    """The part as an error message quotes it (``repr``, long ones cut short)."""
    shown = repr(part)
    return shown if len(shown) <= 80 else shown[:77]


# A segment that breaks the grammar and holds no ':' (else it would be two segments).
bad_segments = st.text(alphabet=TRICKY_CHARS.replace(":", ""), max_size=70).filter(
    lambda text: not _SUBJECT_SEGMENT.fullmatch(text)
)


@property_test
@given(services, valid_segments, valid_segments, st.integers(0, 2), bad_segments, st.booleans())
@example("etl", "ws1", "wf1", 1, "ws.1", True)
@example("etl", "ws1", "wf1", 2, "wf>", True)
@example("etl", "ws1", "wf1", 1, "a" * 65, False)
@example("etl", "ws1", "wf1", 0, "", False)
def test_a_channel_with_one_bad_segment_is_refused_naming_that_segment(
    service, workspace, resource, position, bad, with_resource
):
    parts = [service, workspace, resource] if with_resource else [service, workspace]
    position = min(position, len(parts) - 1)
    parts[position] = bad
    text = ":".join(["logs", *parts])
    with pytest.raises(InvalidChannel) as caught:
        parse_channel(text)
    message = caught.value.message
    assert f"{_SEGMENT_NAMES[position]} segment" in message, message
    assert _shown(bad) in message, message


@property_test
@given(valid_segments.filter(lambda name: name not in DEFAULT_SERVICES), valid_segments)
def test_a_channel_of_an_unknown_service_is_refused_naming_the_service(service, workspace):
    with pytest.raises(InvalidChannel) as caught:
        parse_channel(f"logs:{service}:{workspace}")
    assert f"unknown service {service!r}" in caught.value.message
