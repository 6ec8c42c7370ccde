"""The adapters' start checks (logstream.shared.uvicorn_adapter, logstream.shared.nats_internals)
and what a fast path that cannot attach does: a warning, a 0 in /metrics, the ordinary path.

The checks run against the installed libraries, so a version outside the range these hooks were
tested with fails here first; each check is also shown to notice a library that changed."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from logstream.shared import fast_paths, nats_internals, uvicorn_adapter
from logstream.shared.errors import SettingsError


@pytest.fixture(autouse=True)
def fresh_states(monkeypatch):
    monkeypatch.setattr(fast_paths, "_STATES", {})


def test_the_installed_uvicorn_has_everything_the_http_protocol_hooks():
    assert uvicorn_adapter.check() == []


def test_a_uvicorn_that_frames_body_messages_otherwise_turns_the_fast_path_off(monkeypatch):
    class Reframing(uvicorn_adapter.RequestResponseCycle):
        async def send(self, message):
            if message["type"] == "http.response.body" and message.get("body"):
                self.transport.write(message["body"])  # not uvicorn's chunk framing
                return
            await super().send(message)

    monkeypatch.setattr(uvicorn_adapter, "RequestResponseCycle", Reframing)
    missing = uvicorn_adapter.check()
    assert missing and "framed as b'probe'" in missing[0]


def test_a_uvicorn_whose_cycle_lacks_an_attribute_is_named(monkeypatch):
    monkeypatch.setattr(uvicorn_adapter, "_CYCLE_ATTRIBUTES", ("scope", "no_such_attribute"))
    assert uvicorn_adapter.check() == ["RequestResponseCycle.no_such_attribute"]


def test_the_installed_nats_py_has_everything_ingest_and_the_gateway_hook():
    assert nats_internals.check_client() == []
    assert nats_internals.check_subscription() == []


def test_a_nats_py_without_what_a_hook_uses_is_named(monkeypatch):
    monkeypatch.setattr(nats_internals, "_CLIENT_ATTRIBUTES", ("_no_such_method",))
    assert nats_internals.check_client() == ["nats.aio.client.Client._no_such_method"]


def _metrics() -> str:
    registry = CollectorRegistry()
    registry.register(fast_paths.FastPathCollector())
    return generate_latest(registry).decode()


def test_each_path_is_in_the_metrics_on_or_off_and_an_off_one_is_logged_once(caplog):
    caplog.set_level(logging.WARNING, logger="logstream.fast_paths")
    assert fast_paths.record("uvicorn_connection", []) is True
    assert fast_paths.record("ack_parser", ["Parser.buf"]) is False
    assert fast_paths.record("ack_parser", ["Parser.buf"]) is False
    text = _metrics()
    assert 'logstream_fast_path{path="uvicorn_connection"} 1.0' in text
    assert 'logstream_fast_path{path="ack_parser"} 0.0' in text
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["fast path ack_parser is off, the ordinary path is used: Parser.buf"]


def test_a_required_hook_that_is_missing_stops_the_service_naming_the_library():
    with pytest.raises(SettingsError, match=r"nats-py lacks what live_inbox uses \(x\)"):
        fast_paths.require("live_inbox", ["x"], "nats-py")
    assert fast_paths.states() == {"live_inbox": False}
