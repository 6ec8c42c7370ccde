"""Real service processes for integration and end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.nats_source import free_port
from tests.support.waiting import WaitTimeout, wait_until_blocking

# A service imports litestar, faststream and nats-py; on a busy 2-core machine that takes a few
# seconds. 30 s is for the worst case, a healthy start is ~1-2 s.
START_TIMEOUT_S = 30.0


class ServiceProcess:
    """``python -m logstream <service> --port P ...`` with its stderr kept in a file."""

    def __init__(
        self,
        service: str,
        *,
        nats_url: str,
        log_dir: Path,
        dev: bool = True,
        port: int | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.service = service
        self.port = port or free_port()
        self.nats_url = nats_url
        self.log_path = Path(log_dir) / f"{service}-{self.port}.log"
        self.args = list(args or [])
        self.dev = dev
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_entries(self) -> list[dict]:
        """The JSON lines of its log so far, parsed (a traceback's lines and others skipped)."""
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def audit_lines(self, rule: str | None = None) -> list[dict]:
        """Its audit log's lines so far (``logstream.audit``), those of ``rule`` if given."""
        return [
            entry
            for entry in self.log_entries()
            if entry.get("logger") == "logstream.audit" and rule in (None, entry.get("rule"))
        ]

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "logstream",
            self.service,
            "--port",
            str(self.port),
            "--nats-url",
            self.nats_url,
            *self.args,
        ]
        return cmd + (["--dev"] if self.dev else [])

    def start(self, *, wait: bool = True) -> ServiceProcess:
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=self._log, env=self.env
        )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until ``/health`` answers 200: the process serves."""
        self._wait_for("/health", "healthy", timeout)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until ``/ready`` answers 200: what the service depends on answers too."""
        self._wait_for("/ready", "ready", timeout)

    def _wait_for(self, path: str, what: str, timeout: float) -> None:
        process = self.process
        assert process is not None, "start() the service first"

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{self.service} exited with {process.returncode}:\n" + self.log()
                )
            return httpx.get(self.url + path, timeout=1).status_code == 200

        try:
            wait_until_blocking(
                answers,
                f"{self.service} to be {what} ({path} answering 200)",
                timeout=timeout,
                retry_on=httpx.HTTPError,
            )
        except WaitTimeout as late:
            raise RuntimeError(f"{late}\n{self.log()}") from late

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def responds_with(url: str, status: int, timeout: float = 5.0) -> bool:
    """Whether a GET of ``url`` answers ``status``; for ``await wait_until(lambda: ...)`` in
    async tests (it does not block the event loop)."""
    async with httpx.AsyncClient(timeout=timeout) as client:
        return (await client.get(url)).status_code == status
