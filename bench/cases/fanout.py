"""Case 1: fan-out. Streams on one channel, the publish rate ramped until the system fails.

A step fails on any loss (a message not delivered to every stream within the drain time, or a
stream cut with ``overflow``), a p99 over ``P99_LIMIT_MS``, or a publisher that could not send
what was offered. A step that failed on p99 alone is measured once more and the second result
counts: at low rates a p99 is nearly the worst message, and one stall of the shared machine
would decide it. A system leaves the ramp on its first loss or its second failed step in a
row. The result is the highest step that passed: its deliveries per second.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from bench.load import SubscriberPool
from bench.messages import bench_channel
from bench.window import Window, measure_window

__all__ = ["P99_LIMIT_MS", "FanoutRun", "fanout_ramp", "open_streams"]

# The liveness bound: past 100 ms at p99 the stream is not live any more.
P99_LIMIT_MS = 100.0
# Bulk (counting) client workers let bytes pile up this long between polls: fewer, larger
# reads. Latency is read by a reactive worker on one stream in FANOUT_SAMPLE_EVERY.
BULK_COALESCE_S = 0.05
FANOUT_SAMPLE_EVERY = 25
# Each system gets this much traffic before its first recorded step.
WARM_UP_RATE = 5.0
WARM_UP_S = 1.0


@dataclass
class FanoutRun:
    system: str
    subscribers: int
    steps: list[Window] = field(default_factory=list)
    failure: str = ""
    open_failures: dict = field(default_factory=dict)
    # rate -> the p99 of a first try that failed on p99 alone and was measured again
    retried: dict[float, float] = field(default_factory=dict)

    @property
    def best(self) -> Window | None:
        passed = [step for step in self.steps if step_problem(step) is None]
        return max(passed, key=lambda step: step.sustained_rate, default=None)


def step_problem(step: Window) -> str | None:
    """Why this step does not count as sustained, or None."""
    if step.report.overflows or step.report.closed:
        return f"{step.report.closed} streams closed ({step.report.overflows} with `overflow`)"
    if step.lost:
        return f"lost {step.lost:,} of {step.expected:,} deliveries"
    if step.p99 > P99_LIMIT_MS:
        return f"p99 {step.p99:.0f} ms > {P99_LIMIT_MS:.0f} ms"
    if step.paced.behind:
        return (
            f"publisher behind: {step.paced.achieved_rate:,.0f} of "
            f"{step.paced.offered_rate:,.0f} msgs/s"
        )
    return None


def _finished(run: FanoutRun) -> bool:
    """A system leaves the ramp on its first loss, and after two failed steps in a row: one
    failed step alone may be a burst of other work on the shared machine."""
    last = run.steps[-1]
    if not _latency_only(last):
        return True
    return len(run.steps) >= 2 and step_problem(run.steps[-2]) is not None


def _latency_only(step: Window) -> bool:
    """Failed on p99 alone: nothing lost or cut, the publisher kept up."""
    return not (step.report.overflows or step.report.closed or step.lost or step.paced.behind)


async def open_streams(
    system, pool: SubscriberPool, channel: str, count: int, sample_every: int = 1
):
    return await asyncio.to_thread(
        pool.open, system.targets(channel), count, sample_every=sample_every
    )


async def fanout_ramp(
    systems: list, subscribers: int, rates: list[float], step_s: float, client_processes: int
) -> list[FanoutRun]:
    """Ramp every system, interleaved: each rate is run on each system still passing, one
    after the other, so that all of them see the machine in about the same state."""
    runs, live = [], []
    try:
        for system in systems:
            run = FanoutRun(system.name, subscribers)
            runs.append(run)
            state = await _open(system, run, subscribers, client_processes)
            if state is not None:
                live.append((system, run, *state))
        for rate in rates:
            for entry in list(live):
                system, run, pool, publisher, seq = entry
                step = await measure_window(system, pool, publisher, rate, step_s, subscribers, seq)
                seq += step.paced.sent
                problem = step_problem(step)
                _print_step(system.name, step, problem)
                if problem and _latency_only(step):  # one stall spoils a p99: try once more
                    run.retried[rate] = step.p99
                    step = await measure_window(
                        system, pool, publisher, rate, step_s, subscribers, seq
                    )
                    seq += step.paced.sent
                    problem = step_problem(step)
                    _print_step(system.name + " (again)", step, problem)
                live[live.index(entry)] = (system, run, pool, publisher, seq)
                run.steps.append(step)
                if problem and _finished(run):  # stop now: a backlog must not load the others
                    run.failure = problem
                    live.remove((system, run, pool, publisher, seq))
                    await _close(pool, publisher)
            if not live:
                break
    finally:
        for _, _, pool, publisher, _ in live:
            await _close(pool, publisher)
    return runs


async def _open(system, run: FanoutRun, subscribers: int, client_processes: int):
    pool = SubscriberPool(reactive=1, bulk=client_processes, coalesce_s=BULK_COALESCE_S)
    channel = bench_channel("fanout-" + uuid.uuid4().hex[:8])
    ready, failed = await open_streams(system, pool, channel, subscribers, FANOUT_SAMPLE_EVERY)
    run.open_failures = dict(failed)
    if ready < subscribers:
        run.failure = f"only {ready} of {subscribers} streams opened: {dict(failed)}"
        pool.shutdown()
        return None
    publisher = await system.publisher(channel)
    # Warm-up, not recorded: first deliveries pay for lazy set-up (consumer, buffers, caches).
    warm = await measure_window(system, pool, publisher, WARM_UP_RATE, WARM_UP_S, ready, 0)
    return pool, publisher, warm.paced.sent


async def _close(pool: SubscriberPool, publisher) -> None:
    await publisher.close()
    await asyncio.to_thread(pool.shutdown)


def _print_step(name: str, step: Window, problem: str | None) -> None:
    print(
        f"  {name:<22} {step.rate:>6,.0f} msgs/s -> {step.window_rate:>9,.0f} deliveries/s, "
        f"p99 {step.p99:7.1f} ms, client CPU {sum(step.client_cpu):.2f}, server CPU "
        f"{_cpu_text(step.server_cpu)}, load {step.load.split()[0]}"
        + (f"  STOP: {problem}" if problem else ""),
        flush=True,
    )


def _cpu_text(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.2f}" for name, share in shares.items())
