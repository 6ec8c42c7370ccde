"""services/ingest/loki.py: Loki's label sets and pushes as records (the real client and ingest
are driven in tests/integration/test_ingest_loki.py)."""

from __future__ import annotations

import json

import pytest

from logstream.services.ingest.loki import JSON, _labels, loki_records
from logstream.shared.errors import InvalidRequest


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("{}", {}),
        ('{a="x"}', {"a": "x"}),
        ('{ a = "x" , b="y z" }', {"a": "x", "b": "y z"}),
        (r'{q="say \"hi\"", n="a\\b"}', {"q": 'say "hi"', "n": "a\\b"}),
        ('{channel="logs:etl:ws:wf"}', {"channel": "logs:etl:ws:wf"}),
    ],
)
def test_a_label_set_is_read_as_loki_writes_it(text, labels):
    assert _labels(text) == labels


@pytest.mark.parametrize("text", ["", "a=x", "{a=x}", '{a="x" b="y"}', '{"a"="x"}', '{a="x"'])
def test_anything_else_is_a_400(text):
    with pytest.raises(InvalidRequest, match="not a"):
        _labels(text)


def _push(*values, stream=None) -> bytes:
    return json.dumps(
        {"streams": [{"stream": stream or {"channel": "logs:etl:w:r"}, "values": list(values)}]}
    ).encode()


def test_labels_become_level_source_and_fields():
    body = _push(
        ["5", "x"], stream={"channel": "logs:etl:w:r", "severity": "WARNING", "job": "j", "a": "1"}
    )
    (record,) = loki_records(body, JSON, 1 << 20)
    assert record["level"] == "warn" and record["source"] == "j" and record["fields"] == {"a": "1"}
    assert record["timestamp"] == "1970-01-01T00:00:00.000000005Z"


@pytest.mark.parametrize(
    "value", [["x", "line"], ["1", 2], ["1"], ["1", "l", "not metadata"], "flat"]
)
def test_a_value_that_is_not_a_time_and_a_line_is_a_400(value):
    with pytest.raises(InvalidRequest, match="values"):
        loki_records(_push(value), JSON, 1 << 20)


def test_a_push_with_no_entries_is_a_400():
    with pytest.raises(InvalidRequest, match="no entries"):
        loki_records(b'{"streams": []}', JSON, 1 << 20)
