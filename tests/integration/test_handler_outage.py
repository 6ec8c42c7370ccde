"""The logging handler in a real application process, while its ingest goes away and comes
back: the application never notices, the outage is one line on its stderr, and every record
logged is stored exactly once in the end (docs/clients.md)."""

from __future__ import annotations

import asyncio
import sys
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
    """The application process. Its heartbeats (stdout) and its stderr are read as they come;
    each line wakes whoever waits for something in them, so nothing here polls."""

    def __init__(self, process: asyncio.subprocess.Process, stop_file: Path) -> None:
        self.process, self.stop_file = process, stop_file
        self.beats = 0
        self.last = ""
        self.errors = ""
        self.ended = False  # stdout closed: the app has exited
        self.changed = asyncio.Condition()
        assert process.stdout is not None and process.stderr is not None  # both piped
        self.readers = [
            asyncio.create_task(self._read(process.stdout, self._heard)),
            asyncio.create_task(self._read(process.stderr, self._complained)),
        ]

    @classmethod
    async def start(cls, tmp_path: Path, ingest_url: str, channel: str) -> App:
        script, stop_file = tmp_path / "app.py", tmp_path / "stop"
        script.write_text(APP.replace("TICK_S", repr(TICK_S)))
        process = await asyncio.create_subprocess_exec(
            *[sys.executable, str(script), ingest_url, channel, str(stop_file)],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process, stop_file)

    def _heard(self, line: str) -> None:
        self.last = line.strip()
        self.beats += self.last.startswith("beat ")

    def _complained(self, line: str) -> None:
        self.errors += line

    async def _read(self, pipe: asyncio.StreamReader, take) -> None:
        async for line in pipe:
            take(line.decode(errors="replace"))
            async with self.changed:
                self.changed.notify_all()
        async with self.changed:
            self.ended = self.ended or pipe is self.process.stdout
            self.changed.notify_all()

    async def wait_for(self, what: str, done) -> None:
        try:
            async with asyncio.timeout(WAIT_S), self.changed:
                await self.changed.wait_for(lambda: done() or self.ended)
        except TimeoutError:
            raise AssertionError(f"no {what} within {WAIT_S}s; stderr:\n{self.errors}") from None
        if not done():
            raise AssertionError(f"the app ended while waiting for {what}:\n{self.errors}")

    async def wait_beats(self, more: int) -> None:
        target = self.beats + more
        await self.wait_for(f"{more} more heartbeats", lambda: self.beats >= target)

    async def stop(self) -> str:
        """Ask the app to finish; its last stdout line once it has exited."""
        self.stop_file.touch()
        async with asyncio.timeout(WAIT_S):
            await self.process.wait()
            await asyncio.gather(*self.readers)
        return self.last

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        async with asyncio.timeout(WAIT_S):
            await self.process.wait()
            await asyncio.gather(*self.readers)


async def test_handler_rides_out_an_ingest_outage_reporting_it_once_and_losing_nothing(
    nats_server, log_dir, nc, tmp_path, unique_id
):
    ingest = ServiceProcess("ingest", nats_url=nats_server.url, log_dir=log_dir)
    await asyncio.to_thread(ingest.start)
    channel = f"logs:etl:workspace123:{unique_id}"
    app = await App.start(tmp_path, ingest.url, channel)
    try:
        await app.wait_beats(10)
        await asyncio.to_thread(ingest.stop)
        await app.wait_for("outage report", lambda: OUTAGE_LINE in app.errors)
        await app.wait_beats(25)  # logging goes on while ingest is away: the app never blocks
        ingest = ServiceProcess(
            "ingest", nats_url=nats_server.url, log_dir=log_dir, port=ingest.port
        )
        await asyncio.to_thread(ingest.start)
        await app.wait_for("recovery report", lambda: RECOVERY_LINE in app.errors)
        await app.wait_beats(10)
        summary = await app.stop()
    finally:
        await app.kill()
        await asyncio.to_thread(ingest.stop)
    assert app.process.returncode == 0, app.errors
    assert summary.startswith("done logged=") and summary.endswith("dropped=0 lost=0"), summary
    logged = int(summary.split()[1].removeprefix("logged="))
    assert app.beats == logged
    errors = app.errors
    assert errors.count(OUTAGE_LINE) == 1, errors
    assert errors.count(RECOVERY_LINE) == 1, errors
    assert "Traceback" not in errors, errors
    records = await stored(nc.jetstream(), channel.replace(":", "."))
    indexes = [record["fields"]["index"] for _, _, record in records]
    assert indexes == list(range(logged))
