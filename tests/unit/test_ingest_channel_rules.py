"""services/ingest/channel_rules.py: which rule maps which attributes to which channel, and the
files that stop ingest at start (ingest applying them is in test_ingest_channel_rules_live)."""

from __future__ import annotations

import pytest

from logstream.services.ingest.channel_rules import load_channel_rules, parse_channel_rules
from logstream.shared.channels import DEFAULT_SERVICES
from logstream.shared.errors import SettingsError

SERVICES = frozenset(DEFAULT_SERVICES)
RULES = """
[[rules]]
channel = "logs:etl:{workspace_id}:{workflow_id}"
when = { "service.namespace" = "etl" }

[[rules]]
channel = "logs:faas:{k8s.namespace.name}:{faas.name}"

[[rules]]
channel = "logs:platform:{tenant}"
when = { job = "platform" }
"""


@pytest.fixture
def rules():
    return parse_channel_rules(RULES, "rules.toml", SERVICES)


@pytest.mark.parametrize(
    ("attributes", "channel"),
    [
        (
            {"service.namespace": "etl", "workspace_id": "ws1", "workflow_id": "wf1"},
            "logs:etl:ws1:wf1",
        ),
        # the first rule's condition fails: the second rule names attributes that are missing
        ({"service.namespace": "billing", "workspace_id": "ws1", "workflow_id": "wf1"}, None),
        ({"k8s.namespace.name": "team-a", "faas.name": "resize"}, "logs:faas:team-a:resize"),
        ({"job": "platform", "tenant": 42}, "logs:platform:42"),
        # a value that is not a segment would reach into the next one: no match
        ({"service.namespace": "etl", "workspace_id": "ws1:x", "workflow_id": "wf1"}, None),
        ({"k8s.namespace.name": "a" * 65, "faas.name": "f"}, None),
        ({"job": "platform", "tenant": True}, None),
        ({}, None),
    ],
)
def test_the_first_rule_that_matches_gives_the_channel(rules, attributes, channel):
    assert rules.channel(attributes) == channel


def test_no_file_means_no_rules():
    assert len(load_channel_rules("", SERVICES)) == 0


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("rules = 3", "rules"),
        ("[[rules]]\nchannel = 'logs:etl:{ws'", "brace"),
        ("[[rules]]\nchannel = 'logs:nope:{ws}'", "cannot make a channel"),
        ("[[rules]]\nchannel = 'logs:etl:{a}:{b}:{c}'", "cannot make a channel"),
        ("[[rules]]\nchannel = 'logs:etl:{ws}'\nwhen = { a = 1 }", "when"),
        ("[[rules]]\nchannel = 'logs:etl:{ws}'\nextra = true", "extra"),
        ("[[rules]\n", "not valid TOML"),
    ],
)
def test_a_rule_file_that_cannot_work_is_a_settings_error_naming_it(text, says):
    with pytest.raises(SettingsError) as refused:
        parse_channel_rules(text, "rules.toml", SERVICES)
    assert "channel_rules" in refused.value.message and "rules.toml" in refused.value.message
    assert says in refused.value.message


def test_a_missing_file_is_a_settings_error(tmp_path):
    with pytest.raises(SettingsError, match="cannot read it"):
        load_channel_rules(str(tmp_path / "absent.toml"), SERVICES)
