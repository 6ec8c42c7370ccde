"""ETL workflow runs on ``logs:etl:<workspace>:<workflow>``, one after another.

A run is: started (run id, trigger, steps), one extract per source table (rows, bytes, the
query), transforms (rows in/out, dropped and invalid rows), loads (target table, rows written),
then a success with totals and duration, or an error with a Python traceback and a failed run.
Along the way: slow queries, connection retries and schema drift as warnings.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from logstream.services.simulator.catalog import Emit, LogEvent, WorkflowSpec, emitter, short_id
from logstream.services.simulator.tracebacks import etl_fault

__all__ = ["ETL_FAILURE_RATE", "etl_runs"]

# About one run in eight fails: often enough that a demo shows a red run within a minute.
ETL_FAILURE_RATE = 0.12
# An extract slower than this is reported, as a warehouse team's alerting would.
SLOW_QUERY_MS = 7000


def etl_runs(rng: random.Random, spec: WorkflowSpec) -> Iterator[LogEvent]:
    """One workflow's runs, endlessly."""
    emit = emitter(spec.channel)
    while True:
        yield from _run(rng, spec, emit)


def _run(rng: random.Random, spec: WorkflowSpec, emit: Emit) -> Iterator[LogEvent]:
    run = short_id(rng, "run")
    steps = (
        [("extract", t) for t in spec.tables]
        + [("transform", t) for t in spec.transforms]
        + [("load", t) for t in spec.targets]
    )
    failing = rng.randrange(len(steps)) if rng.random() < ETL_FAILURE_RATE else None
    trigger = rng.choice(("schedule", "schedule", "schedule", "manual", "upstream"))
    yield emit(
        "info",
        "etl.scheduler",
        f"Run {run} started for workflow {spec.name} (trigger: {trigger}, {len(steps)} steps)",
        run_id=run,
        workflow=spec.name,
        workspace=spec.workspace,
        trigger=trigger,
        steps=[f"{kind}:{name}" for kind, name in steps],
    )
    totals = {"rows_read": 0, "rows_written": 0, "rows_dropped": 0, "duration_ms": 0}
    rows = 0
    for index, (kind, name) in enumerate(steps):
        duration = rng.randint(300, 9000)
        totals["duration_ms"] += duration
        if index == failing:
            yield from _failure(rng, spec, emit, run, kind, name, totals)
            return
        if kind == "extract":
            rows = rng.randint(800, 250_000)
            totals["rows_read"] += rows
            yield from _extract(rng, spec, emit, run, name, rows, duration)
        elif kind == "transform":
            rows, removed = yield from _transform(rng, emit, run, name, rows, duration)
            totals["rows_dropped"] += removed
        else:
            totals["rows_written"] += rows
            yield emit(
                "info",
                "etl.load",
                f"Loaded {rows:,} rows into {name} ({spec.load_mode}) in {duration / 1000:.1f} s",
                run_id=run,
                step="load",
                target=name,
                rows_written=rows,
                mode=spec.load_mode,
                duration_ms=duration,
            )
    yield emit(
        "info",
        "etl.scheduler",
        f"Run {run} succeeded in {totals['duration_ms'] / 1000:.1f} s: "
        f"{totals['rows_read']:,} rows read, {totals['rows_written']:,} written, "
        f"{totals['rows_dropped']:,} dropped",
        run_id=run,
        status="succeeded",
        **totals,
    )


def _extract(
    rng: random.Random,
    spec: WorkflowSpec,
    emit: Emit,
    run: str,
    table: str,
    rows: int,
    duration: int,
) -> Iterator[LogEvent]:
    source = f"{spec.source_system}.{table}"
    yield emit(
        "debug",
        "etl.extract",
        f"Extract query on {spec.source_host}: SELECT * FROM {table} WHERE updated_at > :watermark",
        run_id=run,
        step="extract",
        table=source,
        host=spec.source_host,
    )
    if rng.random() < 0.08:
        attempt = rng.randint(2, 3)
        yield emit(
            "warn",
            "etl.extract",
            f"Connection to {spec.source_host} reset while reading {source}; "
            f"retrying (attempt {attempt} of 5)",
            run_id=run,
            step="extract",
            table=source,
            attempt=attempt,
            max_attempts=5,
            backoff_ms=250 * 2 ** (attempt - 1),
        )
    if duration > SLOW_QUERY_MS:
        yield emit(
            "warn",
            "etl.extract",
            f"Slow query on {source}: {duration / 1000:.1f} s "
            f"(threshold {SLOW_QUERY_MS / 1000:.1f} s)",
            run_id=run,
            step="extract",
            table=source,
            duration_ms=duration,
            threshold_ms=SLOW_QUERY_MS,
        )
    if rng.random() < 0.06:
        column = rng.choice(("discount_code", "channel", "loyalty_tier", "tax_region"))
        yield emit(
            "warn",
            "etl.extract",
            f"Schema drift in {source}: new column '{column}' (varchar) is not in the "
            "target mapping and will be ignored",
            run_id=run,
            step="extract",
            table=source,
            drift="column_added",
            column=column,
            column_type="varchar",
        )
    yield emit(
        "info",
        "etl.extract",
        f"Extracted {rows:,} rows from {source} in {duration / 1000:.1f} s",
        run_id=run,
        step="extract",
        source_system=spec.source_system,
        table=source,
        rows=rows,
        bytes=rows * rng.randint(90, 600),
        duration_ms=duration,
    )


def _transform(rng: random.Random, emit: Emit, run: str, name: str, rows: int, duration: int):
    dropped = int(rows * rng.uniform(0, 0.02))
    invalid = int(rows * rng.uniform(0, 0.004))
    out = rows - dropped - invalid
    if invalid > 200:
        yield emit(
            "warn",
            "etl.transform",
            f"Transform {name}: {invalid:,} rows failed validation and went to quarantine.{name}",
            run_id=run,
            step="transform",
            name=name,
            invalid_rows=invalid,
            quarantine=f"quarantine.{name}",
        )
    yield emit(
        "info",
        "etl.transform",
        f"Transform {name} finished in {duration / 1000:.1f} s: {out:,} rows out, "
        f"{dropped:,} dropped, {invalid:,} invalid",
        run_id=run,
        step="transform",
        name=name,
        rows_in=rows,
        rows_out=out,
        dropped_rows=dropped,
        invalid_rows=invalid,
        duration_ms=duration,
    )
    return out, dropped + invalid


def _failure(
    rng: random.Random,
    spec: WorkflowSpec,
    emit: Emit,
    run: str,
    kind: str,
    name: str,
    totals: dict[str, int],
) -> Iterator[LogEvent]:
    fault = etl_fault(rng, kind, target=name, host=spec.source_host)
    subject = {"extract": "table", "transform": "name", "load": "target"}[kind]
    yield emit(
        "error",
        f"etl.{kind}",
        f"Step {kind}:{name} failed: {fault.type}: {fault.message}",
        run_id=run,
        step=kind,
        **{subject: name},
        **fault.as_fields(),
    )
    yield emit(
        "error",
        "etl.scheduler",
        f"Run {run} failed after {totals['duration_ms'] / 1000:.1f} s at step {kind}:{name}",
        run_id=run,
        status="failed",
        failed_step=f"{kind}:{name}",
        error_type=fault.type,
        **totals,
    )
