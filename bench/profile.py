"""Where the gateway's CPU goes during fan-out: py-spy samples, summarised per function.

``py-spy record --format raw`` writes one line per distinct stack, ``frame;frame;... count``.
Self time is the innermost frame's; inclusive time counts a function once per stack it is in.
Only Python frames: time in C (uvloop, the kernel) is charged to the Python line calling it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.cases.fanout import BULK_COALESCE_S, FANOUT_SAMPLE_EVERY, open_streams
from bench.load import SubscriberPool
from bench.messages import bench_channel
from bench.window import Window, measure_window

__all__ = ["Profile", "find_py_spy", "profile_fanout"]

# Samples per second: enough for a table from a few seconds, cheap for the target.
SAMPLE_RATE_HZ = 200
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


@dataclass
class Profile:
    samples: int
    seconds: float
    self_time: Counter = field(default_factory=Counter)
    inclusive: Counter = field(default_factory=Counter)
    window: Window | None = None
    raw_path: str = ""

    @property
    def busy_share(self) -> float:
        """Share of wall time the sampled thread was on CPU (py-spy drops idle samples)."""
        return self.samples / (SAMPLE_RATE_HZ * self.seconds)


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _label(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['function']} ({path})"


def summarise(raw: str, seconds: float) -> Profile:
    profile = Profile(0, seconds)
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_label(frame) for frame in stack.split(";")]
        weight = int(count)
        profile.samples += weight
        profile.self_time[frames[-1]] += weight
        for name in set(frames):
            profile.inclusive[name] += weight
    return profile


async def profile_fanout(
    system,
    py_spy: str,
    subscribers: int,
    rate: float,
    seconds: float,
    client_processes: int,
    out: Path,
) -> Profile:
    """One fan-out window at ``rate`` on a fresh channel with py-spy on the first gateway."""
    pool = SubscriberPool(reactive=1, bulk=client_processes, coalesce_s=BULK_COALESCE_S)
    channel = bench_channel("profile-" + uuid.uuid4().hex[:8])
    publisher = None
    try:
        await open_streams(system, pool, channel, subscribers, FANOUT_SAMPLE_EVERY)
        publisher = await system.publisher(channel)
        pid = system.server_pids()["gateway"][0]
        spy = await asyncio.create_subprocess_exec(
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            str(SAMPLE_RATE_HZ),
            "--nonblocking",
            "--format",
            "raw",
            "-o",
            str(out),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        window = await measure_window(system, pool, publisher, rate, seconds, subscribers, 0)
        _, errors = await spy.communicate()
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {errors.decode()[-500:]}")
    finally:
        if publisher is not None:
            await publisher.close()
        await asyncio.to_thread(pool.shutdown)
    profile = summarise(out.read_text(), seconds)
    profile.window, profile.raw_path = window, str(out)
    return profile
