"""logstream.shared.durations: the ``30s`` / ``10m`` / ``2h`` / ``7d`` forms of settings and ``since``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from logstream.shared.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("45", 45.0),
        ("0.5", 0.5),
        ("0s", 0.0),
        (" 2m ", 120.0),
    ],
)
def test_durations_read_as_people_write_them(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "s",
        "ten minutes",
        "-5s",
        "+5s",
        "5 s",
        "5sec",
        "5S",
        "1h30m",
        "1e3",
        ".5s",
        "5.s",
        "٣s",
        "5y",
        "forever",
        "5s\x00",
        "nan",
        "inf",
    ],
)
def test_junk_is_rejected_with_a_message_that_shows_the_expected_form(text):
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert repr(text[:40]) in str(caught.value)
    assert "30s, 10m, 2h or 7d" in str(caught.value)


@pytest.mark.parametrize("text", ["9" * 400 + "d", "1000000000d"])
def test_a_duration_beyond_what_a_timedelta_holds_is_rejected(text):
    with pytest.raises(ValueError, match="too long a duration"):
        parse_duration(text)


def test_the_longest_accepted_duration_still_converts_to_a_timedelta():
    assert timedelta(seconds=parse_duration("999999999d")).days == 999999999
