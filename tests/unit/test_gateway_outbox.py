"""A connection's outbox: bytes-bounded, floor-aware, one chunk per take."""

from logstream.services.gateway.outbox import Outbox


def test_frames_are_taken_together_as_one_chunk():
    box = Outbox(1000)
    box.push(1, b"a")
    box.push(2, b"b")
    assert box.take() == b"ab"
    assert box.size == 0 and not box.ready.is_set()


def test_frames_at_or_before_the_floor_are_dropped():
    box = Outbox(1000)
    box.push(1, b"a")
    box.push(5, b"b")
    box.set_floor(1)
    assert not box.push(1, b"again")
    assert box.take() == b"b"


def test_a_push_past_the_limit_overflows_and_keeps_what_was_queued():
    box = Outbox(10)
    assert box.push(1, b"12345")
    assert not box.push(2, b"123456")
    assert box.overflowed and box.ready.is_set()
    assert box.take() == b"12345"
    assert not box.push(3, b"1")
