"""LogstreamHandler: how a logging.LogRecord becomes a Logstream record, and that emit never raises.

A recording double stands in for the publisher where only the record matters; a real
LogPublisher over an in-memory ingest checks flush and close. What a real stream delivers is
in tests/integration/test_clients.py.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime

import pytest

from logstream import LogPublisher, LogstreamHandler
from logstream.handler import level_of, shorten
from logstream.publisher import PublishQueueFull
from logstream.sender import _SENDER
from logstream.shared.ingest_client import Reply
from logstream.shared.records import (
    MAX_FIELDS_BYTES,
    MAX_MESSAGE_BYTES,
    decode_batch,
    validate_records,
)
from tests.unit.test_log_publisher import ScriptedIngest

CHANNEL = "logs:etl:workspace123:workflow456"


class RecordingPublisher:
    """Keeps what publish() was given; can be told to raise."""

    def __init__(self, raises: Exception | None = None) -> None:
        self.records: list[dict] = []
        self.raises = raises
        self.flushed = self.closed = 0

    def publish(self, channel, message, level="info", **keywords) -> str:
        if self.raises is not None:
            raise self.raises
        self.records.append({"channel": channel, "message": message, "level": level, **keywords})
        return "id"

    def flush(self, timeout=None) -> None:
        self.flushed += 1

    def close(self, timeout=None) -> None:
        self.closed += 1


@pytest.fixture
def published():
    """A logger wired to a handler on a recording publisher; yields (logger, records)."""
    recorder = RecordingPublisher()
    handler = LogstreamHandler(CHANNEL, publisher=recorder)
    logger = logging.getLogger(f"etl.test.{id(recorder)}")
    logger.propagate = False
    logger.setLevel(1)
    logger.addHandler(handler)
    yield logger, recorder.records
    logger.removeHandler(handler)


def as_stored(record: dict) -> None:
    """The record passes every check ingest makes (so a real publish would be accepted)."""
    body = {
        "channel": record["channel"],
        "message": record["message"],
        "level": record["level"],
        "source": record["source"],
        "timestamp": record["timestamp"],
        "fields": record["fields"] or None,
    }
    validate_records(decode_batch(json.dumps(body).encode(), "application/json"), publisher="test")


@pytest.mark.parametrize(
    ("levelno", "level"),
    [
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warn"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "fatal"),
        (5, "trace"),
        (0, "trace"),
        (15, "debug"),
        (25, "info"),
        (35, "warn"),
        (45, "error"),
        (60, "fatal"),
    ],
)
def test_logging_levels_map_to_the_contracts_levels(levelno, level):
    assert level_of(levelno) == level


def test_a_record_carries_the_message_with_its_arguments_the_logger_and_its_time(published):
    logger, records = published
    logger.warning("loaded %d rows into %s", 1200, "orders")
    [record] = records
    assert record["channel"] == CHANNEL and record["level"] == "warn"
    assert record["message"] == "loaded 1200 rows into orders"
    assert record["source"] == logger.name
    stamped = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    assert abs(stamped.timestamp() - datetime.now().timestamp()) < 60
    assert record["fields"] == {}
    as_stored(record)


def test_extra_values_become_fields_and_odd_ones_their_repr(published):
    logger, records = published

    class Job:
        def __repr__(self) -> str:
            return "<Job 7>"

    logger.info(
        "done",
        extra={
            "rows": 3,
            "ok": True,
            "ratio": 0.5,
            "table": None,
            "tags": ("a", "b"),
            "job": Job(),
            "nested": {1: {"x": Job()}},
        },
    )
    fields = records[0]["fields"]
    assert fields == {
        "rows": 3,
        "ok": True,
        "ratio": 0.5,
        "table": None,
        "tags": ["a", "b"],
        "job": "<Job 7>",
        "nested": {"1": {"x": "<Job 7>"}},
    }
    for standard in ("msg", "args", "levelname", "pathname", "lineno", "thread", "created"):
        assert standard not in fields
    as_stored(records[0])


def test_an_exception_brings_its_type_message_and_formatted_traceback(published):
    logger, records = published
    try:
        {}["missing"]
    except KeyError:
        logger.exception("lookup failed", extra={"table": "orders"})
    [record] = records
    assert record["level"] == "error" and record["message"] == "lookup failed"
    fields = record["fields"]
    assert fields["exception"] == {"type": "KeyError", "message": "'missing'"}
    assert fields["stack"].startswith("Traceback (most recent call last):")
    assert "test_an_exception_brings" in fields["stack"]
    assert fields["stack"].endswith("KeyError: 'missing'") and fields["table"] == "orders"
    as_stored(record)


def test_stack_info_is_kept_apart_from_the_traceback(published):
    logger, records = published
    logger.info("where am I", stack_info=True)
    assert records[0]["fields"]["stack_info"].startswith("Stack (most recent call last):")
    assert "stack" not in records[0]["fields"]


def test_an_oversized_traceback_and_message_are_shortened_to_fit_the_contract(published):
    logger, records = published

    def down(n: int) -> None:  # two functions in turn: Python cannot fold repeated frames
        if n == 0:
            raise RuntimeError("bottom of a very deep stack")
        again(n - 1)

    def again(n: int) -> None:
        down(n)

    try:
        down(300)
    except RuntimeError:
        logger.exception("é" * (MAX_MESSAGE_BYTES // 2 + 10), extra={"blob": "z" * 20000})
    record = records[0]
    stack = record["fields"]["stack"]
    assert len(json.dumps(record["fields"]).encode()) <= MAX_FIELDS_BYTES
    assert stack.startswith("Traceback") and stack.endswith("bottom of a very deep stack")
    assert "characters cut" in stack
    assert len(record["message"].encode()) <= MAX_MESSAGE_BYTES
    as_stored(record)


def test_shorten_keeps_short_text_and_marks_the_cut():
    assert shorten("short", 100) == "short"
    cut = shorten("a" * 50 + "b" * 1000, 200)
    assert len(cut.encode()) <= 200 and cut.startswith("a") and cut.endswith("b")
    assert "characters cut" in cut


def test_emit_never_raises_a_publish_problem_goes_to_handle_error(capsys):
    handler = LogstreamHandler(CHANNEL, publisher=RecordingPublisher(ValueError("bad record")))
    logger = logging.getLogger("etl.test.emit-error")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.error("boom")
    finally:
        logger.removeHandler(handler)
    assert "bad record" in capsys.readouterr().err


def test_a_full_queue_drops_records_counts_them_and_reports_once(capsys):
    recorder = RecordingPublisher(PublishQueueFull("queue full"))
    handler = LogstreamHandler(CHANNEL, publisher=recorder)
    record = logging.LogRecord("etl", logging.INFO, __file__, 1, "m", (), None)
    for _ in range(5):
        handler.handle(record)
    assert handler.dropped == 5
    assert capsys.readouterr().err.count("queue full") == 1
    recorder.raises = None
    handler.handle(record)
    recorder.raises = PublishQueueFull("queue full again")
    handler.handle(record)
    assert capsys.readouterr().err.count("queue full again") == 1


class DroppingPublisher(RecordingPublisher):
    """A publisher whose queue is full under the drop_oldest policy: each publish drops one."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0
        self.full = True

    def publish(self, channel, message, level="info", **keywords) -> str:
        self.dropped += self.full
        return super().publish(channel, message, level, **keywords)


def test_oldest_records_dropped_by_the_publisher_are_counted_and_reported_once(capsys):
    dropping = DroppingPublisher()
    handler = LogstreamHandler(CHANNEL, publisher=dropping)
    record = logging.LogRecord("etl", logging.INFO, __file__, 1, "m", (), None)
    for _ in range(5):
        handler.handle(record)  # never raises, never waits
    assert handler.dropped == 5 and len(dropping.records) == 5  # the new ones are kept
    assert capsys.readouterr().err.count("the oldest records are being dropped") == 1
    dropping.full = False
    handler.handle(record)
    dropping.full = True
    handler.handle(record)
    assert capsys.readouterr().err.count("the oldest records are being dropped") == 1


def test_records_logged_on_a_publishers_thread_are_not_published():
    recorder = RecordingPublisher()
    handler = LogstreamHandler(CHANNEL, publisher=recorder)
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "HTTP Request: POST", (), None)

    def as_sender() -> None:
        _SENDER.active = True
        handler.handle(record)

    thread = threading.Thread(target=as_sender)
    thread.start()
    thread.join(10)
    handler.handle(record)
    assert len(recorder.records) == 1


def test_a_bad_channel_or_a_missing_token_is_refused_when_the_handler_is_built():
    with pytest.raises(ValueError, match="must start with 'logs:'"):
        LogstreamHandler("etl:ws1", token="l5-etl-token")
    with pytest.raises(ValueError, match="token is required"):
        LogstreamHandler(CHANNEL)


def test_close_flushes_and_closes_its_own_publisher_but_only_flushes_a_shared_one():
    shared = RecordingPublisher()
    handler = LogstreamHandler(CHANNEL, publisher=shared)
    handler.close()
    assert shared.flushed == 1 and shared.closed == 0

    ingest = ScriptedIngest()
    own = LogstreamHandler(CHANNEL, token="l5-etl-token")
    own.publisher = LogPublisher(token="l5-etl-token", transport=ingest)
    own.handle(logging.LogRecord("etl", logging.INFO, __file__, 1, "stored", (), None))
    own.close()
    assert ingest.messages == ["stored"] and ingest.closed


def test_flush_reports_a_refusal_on_stderr_instead_of_raising(capsys):
    ingest = ScriptedIngest(Reply(403, {"error": "forbidden", "message": "not yours"}))
    publisher = LogPublisher(token="l5-etl-token", transport=ingest)
    handler = LogstreamHandler(CHANNEL, publisher=publisher)
    handler.handle(logging.LogRecord("etl", logging.INFO, __file__, 1, "m", (), None))
    handler.flush()
    assert "403 forbidden: not yours" in capsys.readouterr().err
    publisher.close()  # the failure was reported once, by the flush
