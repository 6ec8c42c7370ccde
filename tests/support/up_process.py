"""Running ``logstream up`` in tests: a real process tree, watched through /proc.

No process it started may be left behind; that is checked by pid and start time, since ports
are not a reliable witness on a machine where other suites pick free ports too.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.support.nats_source import distinct_free_ports
from tests.support.waiting import WaitTimeout, wait_until_blocking

# Four Python services import litestar/faststream on 2 cores: ~5 s healthy, far more when busy.
BANNER_TIMEOUT_S = 90.0
# docs/reference/settings.md#processes-and-commands: Ctrl-C or SIGTERM stops every child within 10 s; 2 s more for a loaded machine
# to report it.
STOP_TIMEOUT_S = 12.0


class Up:
    """One ``python -m logstream up`` with its console kept in files."""

    def __init__(
        self,
        tmp_path: Path,
        *flags: str,
        ports: dict[str, int] | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.ports = ports or dict(
            zip(("nats", "ingest", "gateway", "proxy"), distinct_free_ports(4))
        )
        self.flags = list(flags)
        self.cwd = cwd or tmp_path
        self.env = {**os.environ, **(env or {})}
        self.out_path = tmp_path / f"up-{time.monotonic_ns()}.out"
        self.err_path = self.out_path.with_suffix(".err")
        self.process: subprocess.Popen | None = None
        self.children: dict[Pid, str] = {}  # -> command line, recorded while up runs

    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}"

    @property
    def running(self) -> subprocess.Popen:
        """The ``logstream up`` process ``start()`` made."""
        assert self.process is not None, "start() first"
        return self.process

    def start(self) -> Up:
        port_flags = [f"--{role}-port={port}" for role, port in self.ports.items()]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "logstream", "up", *port_flags, *self.flags],
                stdout=out,
                stderr=err,
                cwd=self.cwd,
                env=self.env,
            )
        return self

    @property
    def output(self) -> str:
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    def wait_banner(self) -> Up:
        """Until up prints its banner (every service it runs is ready); fails at once if up
        exits."""

        def printed() -> bool:
            assert self.running.poll() is None, f"up exited early:\n{self.output}"
            return "Ctrl-C to stop" in self.output

        try:
            wait_until_blocking(
                printed, "up's banner (Ctrl-C to stop)", timeout=BANNER_TIMEOUT_S, interval=0.1
            )
        except WaitTimeout as late:
            raise AssertionError(f"{late}\n{self.output}") from late
        self.children = children_of(self.running.pid)
        return self

    def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        try:
            return self.running.wait(timeout)
        except subprocess.TimeoutExpired:
            self.running.kill()
            pytest.fail(f"up did not exit within {timeout}s:\n{self.output}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.running.send_signal(signum)
        return self.wait_exit()

    def data_dir(self) -> Path:
        found = re.search(r"Data dir:\s+(\S+)", self.output)
        assert found is not None, f"no data dir in the banner:\n{self.output}"
        return Path(found.group(1))

    def kill_everything(self) -> None:
        """Test teardown backstop: whatever is still alive of this run."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for child in self.children:
            if alive(child):
                os.kill(child.pid, signal.SIGKILL)


class Pid(NamedTuple):
    """A process id with its start time: pids are reused, (pid, start) is not."""

    pid: int
    start: int


def _stat(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat from the field after the command name (state, ppid, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def children_of(parent: int) -> dict[Pid, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        stat = _stat(entry.name) if entry.name.isdigit() else None
        if stat is None or int(stat[1]) != parent:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        found[Pid(int(entry.name), int(stat[19]))] = cmdline.strip()
    return found


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes().replace(
                b"\0", b" "
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def alive(process: Pid) -> bool:
    stat = _stat(process.pid)
    return stat is not None and int(stat[19]) == process.start and stat[0] != "Z"


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def assert_nothing_left(up: Up, timeout: float = STOP_TIMEOUT_S) -> None:
    """Every process up started has exited, or does within ``timeout``. (They are not this
    process's children, so there is no exit to wait on: /proc is asked.)"""

    def left() -> dict[int, str]:
        return {child.pid: cmd for child, cmd in up.children.items() if alive(child)}

    try:
        wait_until_blocking(
            lambda: not left(), "every process up started to exit", timeout=timeout, interval=0.1
        )
    except WaitTimeout as late:
        raise AssertionError(f"{late}; processes left behind: {left()}") from late
