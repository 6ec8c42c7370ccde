"""The examples run as a reader would run them, against the real stack: documentation that
cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Two Python processes start (the example and its tail): a few seconds on a busy machine.
RUN_WITHIN_S = 60


def test_publish_and_tail_prints_what_it_published(stack):
    run = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "publish_and_tail.py"),
            stack.ingest.url,
            stack.gateway.url,
        ],
        capture_output=True,
        text=True,
        timeout=RUN_WITHIN_S,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "INFO  [etl.extract] extract started" in lines[0]
    assert "INFO  [etl.extract] extract done rows=1200" in lines[1]
    assert lines[2].endswith("ERROR [etl.load] load failed table=orders")
    assert lines[3] == "    Traceback (most recent call last):"
    assert lines[-1] == "    KeyError: 'orders'"


def run_example(
    name: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=RUN_WITHIN_S,
        env={**os.environ, **(env or {})},
    )
    assert run.returncode == 0, run.stderr
    return run


def read_back(stack, channel: str, count: int) -> list[dict]:
    """The channel's last ``count`` records, as ``logstream tail --json`` prints them."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "logstream",
            "tail",
            channel,
            "--url",
            stack.gateway.url,
            "--tail",
            str(count),
            "--count",
            str(count),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=RUN_WITHIN_S,
    )
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_logging_handler_example_stores_levels_extras_and_the_traceback(stack, unique_id):
    channel = f"logs:etl:workspace123:{unique_id}"
    run = run_example("logging_handler.py", channel, stack.ingest.url)
    assert run.stdout.strip() == f"logged 3 records to {channel}"
    info, warning, error = read_back(stack, channel, 3)
    assert {record["source"] for record in (info, warning, error)} == {"etl.orders"}
    assert (info["level"], info["message"]) == ("info", "loaded 1200 rows")
    assert info["fields"] == {"table": "orders", "rows": 1200}
    assert (warning["level"], warning["fields"]["duration_ms"]) == ("warn", 2300)
    assert (error["level"], error["message"]) == ("error", "load failed")
    assert error["fields"]["table"] == "orders"
    assert error["fields"]["exception"] == {"type": "KeyError", "message": "'customer_id'"}
    assert error["fields"]["stack"].startswith("Traceback (most recent call last):")
    assert error["fields"]["stack"].endswith("KeyError: 'customer_id'")
    assert info["publisher"] == "l5-etl-token"


def test_async_publisher_example_stores_every_record_once_in_order(stack, unique_id):
    channel, count = f"logs:etl:workspace123:{unique_id}", 40
    run = run_example("async_publisher.py", str(count), channel, stack.ingest.url)
    assert run.stdout.strip() == f"published {count} records to {channel}"
    records = read_back(stack, channel, count)
    assert [record["fields"]["step"] for record in records] == list(range(count))
    assert len({record["id"] for record in records}) == count
    seqs = [record["seq"] for record in records]
    assert seqs == sorted(seqs)


def test_tail_example_resumes_after_a_drop_without_gap_or_duplicate(stack, unique_id):
    channel, count = f"logs:etl:workspace123:{unique_id}", 6
    with httpx.Client(base_url=stack.ingest.url) as client:
        answer = client.post(
            "/api/logs/publish",
            headers={"Authorization": "Bearer l5-etl-token"},
            json=[{"channel": channel, "message": f"line {index}"} for index in range(count)],
        )
    assert answer.status_code == 202, answer.text
    seqs = answer.json()["seqs"]
    run = run_example(
        "tail.py",
        channel,
        "--url",
        stack.gateway.url,
        "--tail",
        str(count),
        "--count",
        str(count),
        "--drop-after",
        "3",
        "--token",
        stack.user_token(),
    )
    assert run.stdout.splitlines() == [f"{seq} info line {index}" for index, seq in enumerate(seqs)]
    assert f"dropping the connection after #{seqs[2]}" in run.stderr
