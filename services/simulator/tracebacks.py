"""Realistic Python failures for simulated error records: an exception and the traceback text.

Each fault is what the real thing prints (psycopg2, pandas, pyarrow, a FAAS handler), with
frames in the application and in site-packages, so the Logs page shows what an operator would
actually have to read. Everything is drawn from the caller's ``random.Random`` so a seed
reproduces the same stack.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Fault", "analytics_fault", "etl_fault", "faas_fault"]

_SITE = "/usr/local/lib/python3.11/site-packages"


@dataclass(frozen=True, slots=True)
class Fault:
    """An exception as a log record carries it: its type, its message and the full traceback."""

    type: str
    message: str
    stack: str

    def as_fields(self) -> dict[str, Any]:
        return {"exception": {"type": self.type, "message": self.message}, "stack": self.stack}


Frame = tuple[str, str, str]  # (file, function, source line)


def _render(rng: random.Random, frames: list[Frame], type_: str, message: str) -> Fault:
    lines = ["Traceback (most recent call last):"]
    for path, function, code in frames:
        lines.append(f'  File "{path}", line {rng.randint(20, 980)}, in {function}')
        lines.append(f"    {code}")
    lines.append(f"{type_}: {message}")
    return Fault(type_, message.splitlines()[0], "\n".join(lines))


def _runner_frames(step: str) -> list[Frame]:
    return [
        ("/app/etl/runner.py", "run_step", "result = await step.execute(context)"),
        (f"/app/etl/steps/{step}.py", "execute", "return await self._execute(context)"),
    ]


def _unique_violation(rng: random.Random, ctx: dict[str, str]) -> Fault:
    table = ctx.get("target", "analytics.fact_orders")
    key = table.rsplit(".", 1)[-1].removeprefix("fact_").removeprefix("dim_").rstrip("s") + "_id"
    frames = [
        *_runner_frames("load"),
        ("/app/etl/steps/load.py", "write_batch", "execute_values(cursor, statement, rows)"),
        (f"{_SITE}/psycopg2/extras.py", "execute_values", "cur.execute(b''.join(parts))"),
    ]
    message = (
        f'duplicate key value violates unique constraint "{table.rsplit(".", 1)[-1]}_pkey"\n'
        f"DETAIL:  Key ({key})=({rng.randint(10_000, 999_999)}) already exists."
    )
    return _render(rng, frames, "psycopg2.errors.UniqueViolation", message)


def _connection_timeout(rng: random.Random, ctx: dict[str, str]) -> Fault:
    host = ctx.get("host", "orders-db.internal")
    frames = [
        *_runner_frames("extract"),
        ("/app/etl/sources/postgres.py", "connect", "return psycopg2.connect(self.dsn, **opts)"),
        (
            f"{_SITE}/psycopg2/__init__.py",
            "connect",
            "conn = _connect(dsn, connection_factory=connection_factory, **kwasync)",
        ),
    ]
    address = f"10.{rng.randint(0, 31)}.{rng.randint(0, 255)}.{rng.randint(2, 250)}"
    message = (
        f'connection to server at "{host}" ({address}), port 5432 failed: Connection timed out\n'
        "\tIs the server running on that host and accepting TCP/IP connections?"
    )
    return _render(rng, frames, "psycopg2.OperationalError", message)


def _missing_column(rng: random.Random, ctx: dict[str, str]) -> Fault:
    column = rng.choice(["customer_id", "order_total", "region_code", "sku", "event_ts"])
    frames = [
        *_runner_frames("transform"),
        (
            "/app/etl/transforms/normalize.py",
            "apply",
            f'frame["{column}"] = frame["{column}"].astype("string").str.strip()',
        ),
        (f"{_SITE}/pandas/core/frame.py", "__getitem__", "indexer = self.columns.get_loc(key)"),
        (f"{_SITE}/pandas/core/indexes/base.py", "get_loc", "raise KeyError(key) from err"),
    ]
    return _render(rng, frames, "KeyError", repr(column))


def _bad_literal(rng: random.Random, ctx: dict[str, str]) -> Fault:
    value = rng.choice(["N/A", "", "12,5", "unknown", "1.0e"])
    frames = [
        *_runner_frames("transform"),
        ("/app/etl/transforms/cast.py", "apply", "return [self.cast(row) for row in rows]"),
        ("/app/etl/transforms/cast.py", "cast", 'row["quantity"] = int(row["quantity"])'),
    ]
    return _render(rng, frames, "ValueError", f"invalid literal for int() with base 10: {value!r}")


def _missing_signature(rng: random.Random, ctx: dict[str, str]) -> Fault:
    frames = [
        ("/var/runtime/bootstrap.py", "handle_event", "response = handler(event, context)"),
        ("/var/task/handler.py", "handle", 'signature = event["headers"]["stripe-signature"]'),
    ]
    return _render(rng, frames, "KeyError", "'stripe-signature'")


def _bad_image(rng: random.Random, ctx: dict[str, str]) -> Fault:
    name = f"uploads/{rng.randint(1000, 9999)}/IMG_{rng.randint(1000, 9999)}.heic"
    frames = [
        ("/var/runtime/bootstrap.py", "handle_event", "response = handler(event, context)"),
        ("/var/task/handler.py", "handle", "image = Image.open(io.BytesIO(body))"),
        (f"{_SITE}/PIL/Image.py", "open", "raise UnidentifiedImageError(msg)"),
    ]
    return _render(
        rng,
        frames,
        "PIL.UnidentifiedImageError",
        f"cannot identify image file <_io.BytesIO object> ({name})",
    )


def _bad_json(rng: random.Random, ctx: dict[str, str]) -> Fault:
    frames = [
        ("/var/runtime/bootstrap.py", "handle_event", "response = handler(event, context)"),
        ("/var/task/handler.py", "handle", 'payload = json.loads(event["body"])'),
        (
            "/usr/local/lib/python3.11/json/__init__.py",
            "loads",
            "return _default_decoder.decode(s)",
        ),
        (
            "/usr/local/lib/python3.11/json/decoder.py",
            "raw_decode",
            'raise JSONDecodeError("Expecting value", s, err.value) from None',
        ),
    ]
    column = rng.randint(1, 80)
    return _render(
        rng,
        frames,
        "json.decoder.JSONDecodeError",
        f"Expecting value: line 1 column {column} (char {column - 1})",
    )


def _arrow_memory(rng: random.Random, ctx: dict[str, str]) -> Fault:
    frames = [
        ("/app/analytics/jobs/executor.py", "run_stage", "table = stage.materialize(batches)"),
        (
            "/app/analytics/jobs/aggregate.py",
            "materialize",
            "return pa.Table.from_batches(batches).group_by(keys).aggregate(aggs)",
        ),
        (
            f"{_SITE}/pyarrow/table.pxi",
            "pyarrow.lib.TableGroupBy.aggregate",
            "return self._table._aggregate(...)",
        ),
        (
            f"{_SITE}/pyarrow/error.pxi",
            "pyarrow.lib.check_status",
            "raise ArrowMemoryError(message)",
        ),
    ]
    size = rng.randint(64, 900)
    return _render(
        rng, frames, "pyarrow.lib.ArrowMemoryError", f"malloc of size {size * 1_048_576} failed"
    )


def _cancelled_query(rng: random.Random, ctx: dict[str, str]) -> Fault:
    frames = [
        ("/app/analytics/jobs/executor.py", "run_stage", "rows = await self.warehouse.fetch(sql)"),
        ("/app/analytics/warehouse.py", "fetch", "return await cursor.fetchall()"),
        (
            f"{_SITE}/asyncpg/connection.py",
            "fetch",
            "return await self._execute(query, args, 0, timeout)",
        ),
    ]
    return _render(
        rng,
        frames,
        "asyncpg.exceptions.QueryCanceledError",
        "canceling statement due to statement timeout",
    )


_ETL: dict[str, tuple[Callable[[random.Random, dict[str, str]], Fault], ...]] = {
    "extract": (_connection_timeout,),
    "transform": (_missing_column, _bad_literal),
    "load": (_unique_violation,),
}
_FAAS = (_missing_signature, _bad_image, _bad_json)
_ANALYTICS = (_arrow_memory, _cancelled_query)


def etl_fault(rng: random.Random, step: str, **context: str) -> Fault:
    """A failure of an ETL ``extract``, ``transform`` or ``load`` step."""
    return rng.choice(_ETL[step])(rng, context)


def faas_fault(rng: random.Random, **context: str) -> Fault:
    return rng.choice(_FAAS)(rng, context)


def analytics_fault(rng: random.Random, **context: str) -> Fault:
    return rng.choice(_ANALYTICS)(rng, context)
