"""The children of ``logstream up``: how they are started, stopped, and echoed.

Each child runs in its own process group, so a terminal's Ctrl-C reaches only ``up``, which
then stops them in order; on Linux each child is also told to die with ``up``
(``PR_SET_PDEATHSIG``), so none survives even if ``up`` itself is killed outright.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LOG_TAIL_LINES",
    "Child",
    "ConsoleEcho",
    "child_options",
    "notable",
    "stop_together",
]

PR_SET_PDEATHSIG = 1
# Enough of a failed child's log to show its traceback or the setting it refused.
LOG_TAIL_LINES = 25
# Console lines that are not JSON are shown only when they look like trouble (nats-server's
# [WRN] is left out: in dev mode it warns of the built-in plaintext passwords at every start).
_TROUBLE_MARKS = ("Traceback", "Error", "error", "[ERR]", "[FTL]", "logstream ")
# A cluster's nodes report each route they cannot reach yet (at start) or any more (a dead
# node, which `up` itself reports once): routine there, and a flood on the console.
_ROUTINE_MARKS = ("Error trying to connect to route",)
_NOTABLE_LEVELS = ("warning", "error", "critical", "fatal")


@functools.cache
def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def child_options() -> dict:
    """Popen options for every child: its own process group, and death with ``up``."""
    prctl, parent = _prctl(), os.getpid()

    def die_with_parent() -> None:  # runs in the child between fork and exec
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # `up` died before the line above took effect
            os._exit(1)

    return {"process_group": 0, "preexec_fn": die_with_parent if prctl else None}


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; True if it stopped on its own."""
        if self.process.poll() is not None:
            return True
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(max(timeout, 0.0))
            return True
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return False


def stop_together(children: list[Child], timeout: float) -> list[str]:
    """SIGTERM to all at once, SIGKILL to those still running after ``timeout``; the names of
    the killed. Each gets one SIGTERM: a second one tells uvicorn to skip its drain."""
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + max(timeout, 0.0)
    killed = []
    for child in children:
        try:
            child.process.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
            killed.append(child.name)
    return killed


class ConsoleEcho(threading.Thread):
    """Shows the children's warnings and errors on the console; full logs stay in the files."""

    def __init__(self, children: list[Child]) -> None:
        super().__init__(name="console-echo", daemon=True)
        self.children = children
        self.offsets: dict[str, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.25):
            self.echo_new_lines()
        self.echo_new_lines()

    def echo_new_lines(self) -> None:
        for child in self.children:
            try:
                with open(child.log_path, "rb") as log_file:
                    log_file.seek(self.offsets.get(child.name, 0))
                    chunk = log_file.read()
            except OSError:
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self.offsets[child.name] = self.offsets.get(child.name, 0) + len(complete)
            for line in complete.decode(errors="replace").splitlines():
                shown = notable(line)
                if shown:
                    print(f"  [{child.name}] {shown}", file=sys.stderr, flush=True)


def notable(line: str) -> str | None:
    """The console form of a log line worth showing there, or None."""
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if isinstance(entry, dict):
        level = str(entry.get("level", "")).lower()
        if level not in _NOTABLE_LEVELS:
            return None
        if entry.get("audit") == "denied":  # who was refused what, by which rule
            return f"{level}: denied {entry.get('who')} {entry.get('what')} ({entry.get('rule')})"
        return f"{level}: {entry.get('msg', '')}"
    if any(mark in line for mark in _ROUTINE_MARKS):
        return None
    return line if any(mark in line for mark in _TROUBLE_MARKS) else None
