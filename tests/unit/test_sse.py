"""logstream.shared.sse: the one Server-Sent Events frame encoder."""

from __future__ import annotations

from logstream.shared.sse import HEARTBEAT, SSE_HEADERS, sse_frame


def _lines(frame: bytes) -> list[bytes]:
    assert frame.endswith(b"\n\n"), "a frame ends with a blank line"
    body = frame[:-2]
    assert b"\n\n" not in body, "a frame holds no blank line inside it"
    return body.split(b"\n")


def test_each_field_is_written_on_its_own_line_in_a_fixed_order():
    frame = sse_frame(data='{"seq":7}', event="log", id=7, retry=2000, comment="hello")
    assert _lines(frame) == [
        b": hello",
        b"retry: 2000",
        b"id: 7",
        b"event: log",
        b'data: {"seq":7}',
    ]


def test_a_data_only_frame_is_one_data_line():
    assert sse_frame(data="x") == b"data: x\n\n"


def test_bytes_and_text_data_give_the_same_frame():
    assert sse_frame(data="é ok") == sse_frame(data="é ok".encode())


def test_an_empty_data_field_is_still_sent():
    assert sse_frame(data="", event="ping") == b"event: ping\ndata: \n\n"


def test_a_string_id_is_written_as_given():
    assert sse_frame(id="42-abc") == b"id: 42-abc\n\n"


def test_retry_is_written_as_whole_milliseconds():
    assert sse_frame(retry=1500.7) == b"retry: 1500\n\n"


def test_a_line_break_in_an_id_cannot_inject_another_field():
    frame = sse_frame(id="1\nevent: admin", data="x")
    lines = _lines(frame)
    assert lines == [b"id: 1event: admin", b"data: x"]
    assert not any(line.startswith(b"event:") for line in lines)


def test_cr_lf_and_nul_are_stripped_from_id_and_event():
    frame = sse_frame(id="1\r\n\x002", event="lo\rg\n\x00")
    assert _lines(frame) == [b"id: 12", b"event: log"]


def test_an_event_name_cannot_inject_data():
    assert _lines(sse_frame(event="log\r\ndata: forged")) == [b"event: logdata: forged"]


def test_multi_line_data_becomes_one_data_line_per_line():
    frame = sse_frame(data="one\ntwo\r\nthree\rfour")
    assert _lines(frame) == [b"data: one", b"data: two", b"data: three", b"data: four"]


def test_a_trailing_newline_in_data_is_kept_as_an_empty_data_line():
    assert _lines(sse_frame(data="end\n")) == [b"data: end", b"data: "]


def test_nul_bytes_are_dropped_from_data():
    assert sse_frame(data=b"a\x00b") == b"data: ab\n\n"


def test_a_comment_frame_is_a_colon_line():
    assert sse_frame(comment="hb") == b": hb\n\n"
    assert sse_frame(comment="") == b": \n\n"


def test_a_multi_line_comment_stays_a_comment_on_every_line():
    assert _lines(sse_frame(comment="a\nevent: x\rb")) == [b": a", b": event: x", b": b"]


def test_the_heartbeat_is_a_comment_frame():
    assert HEARTBEAT == sse_frame(comment="hb")


def test_stream_headers_turn_off_caching_and_proxy_buffering():
    assert SSE_HEADERS["Cache-Control"] == "no-cache"
    assert SSE_HEADERS["X-Accel-Buffering"] == "no"
