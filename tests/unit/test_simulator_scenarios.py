"""The simulator's traffic: reproducible, valid by ingest's rules, shaped like the real thing."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import msgspec
import pytest

from logstream.services.simulator.catalog import DEFAULT_CATALOG, SEED_CHANNEL
from logstream.services.simulator.etl_runs import etl_runs
from logstream.services.simulator.scenarios import Traffic
from logstream.services.simulator.workloads import analytics_jobs, faas_invocations, platform_events
from logstream.shared.channels import parse_channel
from logstream.shared.records import decode_batch, validate_records

_ENCODE = msgspec.json.Encoder()


def _signature(events):
    return [(str(e.channel), e.level, e.message, e.source, e.fields) for e in events]


def test_the_same_seed_gives_the_same_traffic():
    assert _signature(Traffic(42).take(2000)) == _signature(Traffic(42).take(2000))


def test_different_seeds_give_different_traffic():
    assert _signature(Traffic(1).take(200)) != _signature(Traffic(2).take(200))


def test_traffic_without_a_seed_differs_from_run_to_run():
    first, second = Traffic(), Traffic()
    assert first.seed != second.seed or _signature(first.take(50)) != _signature(second.take(50))


def test_every_generated_record_passes_ingest_validation():
    events = Traffic(7).take(5000)
    for start in range(0, len(events), 1000):
        chunk = events[start : start + 1000]
        records = [e.to_record(f"run-{start + i}", 1767225600000) for i, e in enumerate(chunk)]
        body = b"[" + b",".join(_ENCODE.encode(r) for r in records) + b"]"
        valid = validate_records(decode_batch(body, "application/json"), publisher="test")
        assert len(valid) == len(chunk)


def test_a_record_stamped_with_an_rfc3339_timestamp_is_valid_too():
    event = next(Traffic(3))
    body = _ENCODE.encode(event.to_record("one", "2026-01-31T12:00:00.123Z"))
    (valid,) = validate_records(decode_batch(body, "application/json"), publisher="test")
    assert valid.record.timestamp == "2026-01-31T12:00:00.123Z"


def test_every_channel_in_the_catalog_satisfies_the_grammar():
    channels = Traffic(0).channels
    assert len(channels) >= 12
    for channel in channels:
        assert parse_channel(str(channel)) == channel


def test_traffic_always_opens_on_the_seed_channel():
    for seed in (0, 1, 99, None):
        assert next(Traffic(seed)).channel == SEED_CHANNEL
    assert str(SEED_CHANNEL) == "logs:etl:workspace123:workflow456"


def test_a_burst_spreads_over_several_channels_and_services():
    events = Traffic(5).take(300)
    channels = Counter(str(e.channel) for e in events)
    assert "logs:etl:workspace123:workflow456" in channels
    assert len(channels) >= 8
    assert {e.service for e in events} == {"etl", "faas", "analytics", "platform"}
    assert max(channels.values()) < 300 // 2


def test_a_service_filter_keeps_only_that_services_traffic():
    events = Traffic(5, services={"faas"}).take(200)
    assert {e.service for e in events} == {"faas"}
    with pytest.raises(ValueError):
        Traffic(5, services={"billing"})


def _etl_runs(count: int, seed: int = 11):
    spec = DEFAULT_CATALOG.workflows[0]
    runs, current = [], None
    for event in etl_runs(random.Random(seed), spec):
        if event.message.startswith("Run ") and " started " in event.message:
            current = [event]
            runs.append(current)
        else:
            assert current is not None, "the first event starts a run"
            current.append(event)
        if len(runs) > count:
            return runs[:count]
    raise AssertionError("unreachable")


def test_an_etl_run_starts_extracts_transforms_loads_then_finishes_or_fails():
    runs = _etl_runs(200)
    outcomes = Counter()
    for run in runs:
        run_id = run[0].fields["run_id"]
        assert all(e.fields["run_id"] == run_id for e in run)
        assert str(run[0].channel) == "logs:etl:workspace123:workflow456"
        steps = [e.fields["step"] for e in run if e.level != "error" and "step" in e.fields]
        order = {"extract": 0, "transform": 1, "load": 2}
        assert steps == sorted(steps, key=order.__getitem__)
        final = run[-1]
        outcomes[final.fields["status"]] += 1
        if final.fields["status"] == "succeeded":
            assert final.level == "info" and {"extract", "transform", "load"} <= set(steps)
            assert final.fields["rows_written"] > 0 and final.fields["duration_ms"] > 0
        else:
            assert final.level == "error" and "failed_step" in final.fields
    assert outcomes["succeeded"] > outcomes["failed"] > 0


def test_etl_steps_carry_their_tables_rows_and_durations():
    events = [e for run in _etl_runs(50) for e in run]
    extracts = [e for e in events if e.source == "etl.extract" and "rows" in e.fields]
    loads = [e for e in events if e.source == "etl.load" and e.level == "info"]
    transforms = [e for e in events if e.source == "etl.transform" and "rows_out" in e.fields]
    assert all(e.fields["table"] and e.fields["duration_ms"] > 0 for e in extracts)
    assert all(e.fields["target"] and e.fields["rows_written"] >= 0 for e in loads)
    assert all({"dropped_rows", "invalid_rows"} <= set(e.fields) for e in transforms)
    warnings = {e.message.split(" ")[0] for e in events if e.level == "warn"}
    assert {"Slow", "Schema"} <= warnings


def _assert_python_traceback(event):
    stack, exception = event.fields["stack"], event.fields["exception"]
    assert stack.startswith('Traceback (most recent call last):\n  File "')
    assert f"\n{exception['type']}: " in stack
    assert exception["message"] and exception["message"] in event.message


def test_failed_etl_steps_carry_a_python_stack_trace():
    errors = [e for run in _etl_runs(200) for e in run if e.level == "error" and "step" in e.fields]
    assert errors
    for event in errors:
        _assert_python_traceback(event)


def test_errors_with_exceptions_carry_stack_traces_in_every_service():
    events = Traffic(8).take(20000)
    with_stacks = [e for e in events if "exception" in e.fields]
    assert {e.service for e in with_stacks} >= {"etl", "faas", "analytics"}
    for event in with_stacks:
        assert event.level == "error"
        _assert_python_traceback(event)


def test_faas_invocations_report_cold_starts_billing_timeouts_and_throttles():
    spec = DEFAULT_CATALOG.functions[1]
    events = [e for _, e in zip(range(4000), faas_invocations(random.Random(3), spec))]
    assert all(str(e.channel) == "logs:faas:workspace123:stripe-webhook" for e in events)
    assert all(e.fields.get("request_id") for e in events)
    cold = [e for e in events if e.fields.get("cold_start") and "init_duration_ms" in e.fields]
    reports = [e for e in events if e.message.startswith("REPORT ")]
    assert cold and reports
    for report in reports:
        assert report.fields["billed_ms"] >= report.fields["duration_ms"]
        assert report.fields["memory_used_mb"] <= report.fields["memory_limit_mb"]
    assert any(e.level == "error" and "timed out" in e.message for e in events)
    assert any(e.level == "warn" and "throttled" in e.message for e in events)


def test_analytics_jobs_progress_from_start_to_completion():
    spec = DEFAULT_CATALOG.analytics[0]
    events = [e for _, e in zip(range(2000), analytics_jobs(random.Random(4), spec))]
    by_job = defaultdict(list)
    for event in events:
        by_job[event.fields["job_id"]].append(event)
    finished = [job for job in by_job.values() if job[-1].fields.get("status") == "completed"]
    assert finished
    for job in finished:
        progress = [e.fields["progress_pct"] for e in job if "progress_pct" in e.fields]
        assert progress == sorted(progress) and all(0 < p < 100 for p in progress)
        assert "started" in job[0].message and job[-1].fields["bytes_processed"] > 0
    assert any(e.source == "analytics.planner" for e in events)


def test_platform_events_cover_deployments_scaling_quotas_auth_and_maintenance():
    events = [e for _, e in zip(range(500), platform_events(random.Random(6), "workspace123"))]
    sources = {e.source for e in events}
    assert sources == {
        "platform.deployer",
        "platform.autoscaler",
        "platform.quota",
        "platform.auth",
        "platform.maintenance",
    }
    assert all(str(e.channel) == "logs:platform:workspace123" for e in events)
    assert all(e.level == "warn" for e in events if e.source in {"platform.quota", "platform.auth"})
