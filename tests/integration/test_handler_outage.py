"""The logging handler in a real application process, while its ingest goes away and comes
back: the application never notices, the outage is one line on its stderr, and every record
logged is stored exactly once in the end (docs/clients.md; issue 8)."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.jetstream import stored
from tests.support.processes import ServiceProcess

# The application: logs one record per tick through LogstreamHandler on the root logger, and
# prints a heartbeat after each log call returns, until the test creates the stop file.
APP = """
import logging, sys, time
from pathlib import Path
from logstream import LogstreamHandler

ingest_url, channel, stop_file = sys.argv[1], sys.argv[2], Path(sys.argv[3])
handler = LogstreamHandler(channel, token="l5-etl-token", url=ingest_url)
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("outage.app")
index = 0
while not stop_file.exists():
    log.info("record %d", index, extra={"index": index})
    print(f"beat {index}", flush=True)
    index += 1
    time.sleep(TICK_S)
handler.close()
print(f"done logged={index} dropped={handler.dropped} lost={handler.publisher.lost}", flush=True)
"""
# 50 records a second: a steady trickle, far below the handler's buffer (100,000 records) for
# any outage this test can produce, so nothing may be dropped.
TICK_S = 0.02
# Bounds for what the test waits on: service starts and retry backoffs on a busy machine.
WAIT_S = 45.0
OUTAGE_LINE = "is not answering"
RECOVERY_LINE = "answers again"


class App:
    """The application process, its heartbeats read on a thread, its stderr in a file."""

    def __init__(self, tmp_path: Path, ingest_url: str, channel: str) -> None:
        script = tmp_path / "app.py"
        script.write_text(APP.replace("TICK_S", repr(TICK_S)))
        self.stop_file, self.stderr_path = tmp_path / "stop", tmp_path / "app.err"
        self.lines: queue.Queue[str] = queue.Queue()
        self.beats = 0
        self.last = ""
        with open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(script), ingest_url, channel, str(self.stop_file)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def pump(self) -> None:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            self.last = line
            self.beats += line.startswith("beat ")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for(self, what: str, done) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            self.pump()
            if done():
                return
            if self.process.poll() is not None:
                self.pump()
                raise AssertionError(f"the app ended while waiting for {what}:\n{self.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {WAIT_S}s; stderr:\n{self.stderr()}")

    def wait_beats(self, more: int) -> None:
        target = self.beats + more
        self.wait_for(f"{more} more heartbeats", lambda: self.beats >= target)

    def stop(self) -> str:
        self.stop_file.touch()
        self.process.wait(WAIT_S)
        self.pump()
        return self.last


async def test_handler_rides_out_an_ingest_outage_reporting_it_once_and_losing_nothing(
    nats_server, log_dir, nc, tmp_path, unique_id
):
    ingest = ServiceProcess("ingest", nats_url=nats_server.url, log_dir=log_dir).start()
    channel = f"logs:etl:workspace123:{unique_id}"
    app = App(tmp_path, ingest.url, channel)
    try:
        app.wait_beats(10)
        ingest.stop()
        app.wait_for("outage report", lambda: OUTAGE_LINE in app.stderr())
        app.wait_beats(25)  # logging goes on while ingest is away: the app never blocks
        ingest = ServiceProcess(
            "ingest", nats_url=nats_server.url, log_dir=log_dir, port=ingest.port
        ).start()
        app.wait_for("recovery report", lambda: RECOVERY_LINE in app.stderr())
        app.wait_beats(10)
        summary = app.stop()
    finally:
        app.process.kill()
        ingest.stop()
    assert app.process.returncode == 0, app.stderr()
    assert summary.startswith("done logged=") and summary.endswith("dropped=0 lost=0"), summary
    logged = int(summary.split()[1].removeprefix("logged="))
    assert app.beats == logged
    errors = app.stderr()
    assert errors.count(OUTAGE_LINE) == 1, errors
    assert errors.count(RECOVERY_LINE) == 1, errors
    assert "Traceback" not in errors, errors
    records = await stored(nc.jetstream(), channel.replace(":", "."))
    indexes = [record["fields"]["index"] for _, _, record in records]
    assert indexes == list(range(logged))
