"""The examples run as a reader would run them, against the real stack: documentation that
cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Two Python processes start (the example and its tail): a few seconds on a busy machine.
RUN_WITHIN_S = 60


def test_publish_and_tail_prints_what_it_published(stack):
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "publish_and_tail.py"), stack.ingest.url,
         stack.gateway.url], capture_output=True, text=True, timeout=RUN_WITHIN_S)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "INFO  [etl.extract] extract started" in lines[0]
    assert "INFO  [etl.extract] extract done rows=1200" in lines[1]
    assert lines[2].endswith("ERROR [etl.load] load failed table=orders")
    assert lines[3] == "    Traceback (most recent call last):"
    assert lines[-1] == "    KeyError: 'orders'"
