"""Where a draining relay may end: ``logstream.services.proxy.relay.complete_frames``."""

from __future__ import annotations

import pytest

from logstream.services.proxy.relay import FRAME_END, complete_frames

FRAME = b"id: 1\nevent: log\ndata: {}\n\n"


def test_data_that_ends_with_a_frame_is_complete_in_full():
    assert complete_frames(FRAME_END, FRAME + FRAME) == 2 * len(FRAME)


def test_a_trailing_partial_frame_is_cut_off():
    assert complete_frames(FRAME_END, FRAME + b"id: 2\nda") == len(FRAME)


def test_nothing_new_is_complete_when_the_stream_is_already_at_a_boundary():
    assert complete_frames(b"}\n\n"[-2:], b"id: 2\nda") == 0
    assert complete_frames(FRAME_END, b"") == 0


def test_mid_frame_with_no_boundary_in_sight_has_no_complete_prefix():
    assert complete_frames(b"{}", b"more data") == -1
    assert complete_frames(b"a\n", b"") == -1


@pytest.mark.parametrize("data, expected", [(b"\nid: 2\nda", 1), (b"\n", 1), (b"x\n\n", 3)])
def test_a_boundary_may_straddle_what_was_sent_and_what_comes(data, expected):
    assert complete_frames(b"}\n", data) == expected
