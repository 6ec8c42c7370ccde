"""bench/RESULTS.md: every figure of one run, the ratios against Nchan, and how they were made."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.cases.fanout import P99_LIMIT_MS, step_problem
from bench.report_sections import (
    channels_section,
    flood_section,
    history_section,
    ingest_section,
    latency_section,
    memory_section,
    profile_section,
    replay_section,
)
from bench.report_storm import storm_rows, storm_section
from bench.window import Window

__all__ = ["Results", "render"]

# The performance targets, on this machine.
IDLE_KIB_TARGET = 15
INGEST_TARGET = 50_000
# Durable ingest (sync_interval: always): records/s in HTTP batches of 1,000 on one node, and
# its share of the lazy figure of the same run.
DURABLE_TARGET = 25_000
DURABLE_SHARE_TARGET = 0.40
OTLP_TARGET = 30_000
GZIP_SHARE_TARGET = 0.80
P99_TARGET_MS = 10.0


@dataclass
class Results:
    command: str
    started: str
    machine: dict
    versions: dict
    settings: dict
    fanout: list = field(default_factory=list)
    latency: list = field(default_factory=list)
    memory: list = field(default_factory=list)
    ingest: list = field(default_factory=list)
    flood: list = field(default_factory=list)
    replay: object = None
    profile: object = None
    channels: list = field(default_factory=list)
    history: object = None
    storm: object = None
    fsync_floor: object = None
    plot: str = ""
    errors: dict = field(default_factory=dict)
    duration_s: float = 0.0


def _by_name(items, name: str):
    return next((item for item in items if getattr(item, "system", None) == name), None)


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "n/a"
    return f"{ours / theirs:.2f}"


def _best_rate(results: Results, name: str) -> float | None:
    run = _by_name(results.fanout, name)
    best = run.best if run else None
    return best.sustained_rate if best else (0.0 if run else None)


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "**missed**")


def summary(results: Results) -> list[str]:
    rows = [
        "| target | Logstream | Nchan | Logstream / Nchan | verdict |",
        "|---|---|---|---|---|",
    ]
    for ours, theirs in (
        ("Logstream 1 gateway", "Nchan 1 worker"),
        ("Logstream 2 gateways", "Nchan 2 workers"),
    ):
        mine, other = _best_rate(results, ours), _best_rate(results, theirs)
        met = None if mine is None or other is None else mine >= other
        rows.append(
            f"| fan-out, {ours} >= {theirs} (deliveries/s) | {_num(mine)} | "
            f"{_num(other)} | {_ratio(mine, other)} | {_verdict(met)} |"
        )
    rows += _efficiency_rows(results)
    ours_mem = _by_name(results.memory, "Logstream 1 gateway")
    nchan_mem = _by_name(results.memory, "Nchan 1 worker")
    kib = ours_mem.per_connection / 1024 if ours_mem else None
    rows.append(
        f"| idle memory <= {IDLE_KIB_TARGET} KiB per connection | {_num(kib, 1)} | "
        f"{_num(nchan_mem.per_connection / 1024 if nchan_mem else None, 1)} | "
        f"{_ratio(kib, nchan_mem.per_connection / 1024 if nchan_mem else None)} | "
        f"{_verdict(None if kib is None else kib <= IDLE_KIB_TARGET)} |"
    )
    batches = results.ingest[0].rate if results.ingest else None
    rows.append(
        f"| ingest >= {INGEST_TARGET:,} records/s, HTTP batches | {_num(batches)} | - "
        f"| - | {_verdict(None if batches is None else batches >= INGEST_TARGET)} |"
    )
    rows += _shipper_rows(results.ingest)
    rows += _durable_rows(results.ingest)
    ours_lat = _by_name(results.latency, "Logstream 1 gateway, via HTTP ingest")
    nchan_lat = _by_name(results.latency, "Nchan 1 worker")
    rows.append(
        f"| p99 <= {P99_TARGET_MS:g} ms, 100 streams x 500 msgs/s, via ingest (ms) | "
        f"{_num(ours_lat and ours_lat.p99, 2)} | {_num(nchan_lat and nchan_lat.p99, 2)}"
        f" | {_ratio(ours_lat and ours_lat.p99, nchan_lat and nchan_lat.p99)} | "
        f"{_verdict(None if ours_lat is None else ours_lat.p99 <= P99_TARGET_MS)} |"
    )
    ours_flood = _by_name(results.flood, "Logstream 1 gateway")
    nchan_flood = _by_name(results.flood, "Nchan 1 worker")
    loss = (ours_flood.lost + ours_flood.report.closed) if ours_flood else None
    rows.append(
        f"| zero loss at one channel flooded (messages lost) | {_num(loss)} | "
        f"{_num(nchan_flood.lost if nchan_flood else None)} | - | "
        f"{_verdict(None if loss is None else loss == 0)} |"
    )
    rows += storm_rows(results.storm)
    return rows


def _ingest_way(results: list, starts: str):
    return next((r for r in results if r.way.startswith(starts)), None)


def durable_share(ingest: list) -> tuple[float | None, float | None]:
    """Durable records/s (HTTP batches of 1,000, 4 in flight, sync_interval: always) and its
    share of the lazy figure of the same way in the same run."""
    lazy = _ingest_way(ingest, "HTTP, batches of 1,000, 4 in flight")
    durable = _ingest_way(
        ingest, "HTTP, batches of 1,000, 4 in flight, broker with sync_interval: always"
    )
    if durable is None:
        return None, None
    return durable.rate, durable.rate / lazy.rate if lazy and lazy.rate else None


def _durable_rows(ingest: list) -> list[str]:
    rate, share = durable_share(ingest)
    return [
        f"| durable ingest (sync_interval: always) >= {DURABLE_TARGET:,} records/s, HTTP "
        f"batches of 1,000 | {_num(rate)} | - | - | "
        f"{_verdict(None if rate is None else rate >= DURABLE_TARGET)} |",
        f"| durable ingest >= {DURABLE_SHARE_TARGET:.0%} of lazy, same run | {_num(share, 2)} "
        f"| - | - | {_verdict(None if share is None else share >= DURABLE_SHARE_TARGET)} |",
    ]


def _shipper_rows(ingest: list) -> list[str]:
    """What shippers send: OTLP protobuf with gzip, and native batches gzip against plain (both
    pre-built, side by side in this run)."""
    otlp = _ingest_way(ingest, "OTLP/HTTP protobuf gzip")
    plain = _ingest_way(ingest, "HTTP JSON, batches of 1,000, pre-built")
    gzipped = _ingest_way(ingest, "HTTP JSON gzip, batches of 1,000, pre-built")
    otlp_rate = otlp.rate if otlp else None
    share = gzipped.rate / plain.rate if gzipped and plain and plain.rate else None
    return [
        f"| ingest >= {OTLP_TARGET:,} records/s, OTLP/HTTP protobuf gzip, batches of 512 | "
        f"{_num(otlp_rate)} | - | - | "
        f"{_verdict(None if otlp_rate is None else otlp_rate >= OTLP_TARGET)} |",
        f"| ingest, JSON gzip >= {GZIP_SHARE_TARGET:.0%} of JSON uncompressed (batches of 1,000) "
        f"| {_num(share, 2)} | - | - | "
        f"{_verdict(None if share is None else share >= GZIP_SHARE_TARGET)} |",
    ]


def _efficiency_rows(results: Results) -> list[str]:
    """Deliveries per CPU-second of the serving processes: a ratio that holds up on a busy
    machine, and one that exists even when no Logstream step passed."""
    rows = []
    for ours, theirs in (
        ("Logstream 1 gateway", "Nchan 1 worker"),
        ("Logstream 2 gateways", "Nchan 2 workers"),
    ):
        mine, other = (
            _efficiency(_by_name(results.fanout, ours)),
            _efficiency(_by_name(results.fanout, theirs)),
        )
        if mine or other:
            ours_rate, their_rate = mine and mine[0], other and other[0]
            rows.append(
                f"| fan-out efficiency, {ours} vs {theirs} (deliveries per CPU-second "
                f"of the serving processes) | {_num(ours_rate)} | {_num(their_rate)} | "
                f"{_ratio(ours_rate, their_rate)} | (no target; for the levers) |"
            )
    return rows


def _efficiency(run) -> tuple[float, Window] | None:
    """(deliveries per CPU-second, step) at the busiest step that lost nothing: its latency
    does not matter here, and the busier the step the less start-up costs weigh."""
    if run is None or not run.steps:
        return None
    lossless = [s for s in run.steps if not (s.lost or s.report.closed)] or run.steps[:1]
    step = max(lossless, key=lambda s: s.window_rate)
    cpu = step.server_cpu.get("gateway", step.server_cpu.get("nginx workers", 0.0))
    return (step.window_rate / cpu, step) if cpu > 0 else None


def _num(value, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def fanout_section(results: Results) -> list[str]:
    settings = results.settings
    lines = [
        "## 1. Fan-out: one channel, the publish rate ramped",
        "",
        f"{settings.get('subscribers', 0):,} SSE streams on one channel, {settings.get('step_s')} s"
        f" per step; rates {settings.get('rates')} msgs/s. A step fails on any loss, a stream "
        f"cut, p99 > {P99_LIMIT_MS:g} ms or a publisher below 95 % of the offered rate; the "
        "systems are ramped interleaved (each rate on each system in turn), and one stops at "
        "its first loss or its second failed step in a row. Logstream is published to "
        "straight into JetStream "
        "(`logs.etl.workspace123.<name>`, as the ingest NATS user, ingest bypassed): the "
        "gateway's fan-out is what is measured. Two gateways: two `logstream gateway` "
        "processes on two ports, streams dealt alternately (no proxy). Nchan: POSTs to its "
        "publisher location over 8 keep-alive connections; two workers share one port with "
        "`reuseport`. A step that failed on p99 alone (nothing lost) was measured once more "
        'and the second result counts ("2nd try" below). Client: one reactive process reads '
        "one stream in 25 as soon as bytes arrive and gives the latencies; bulk processes poll "
        "the others every 50 ms and only count (bench/README.md).",
        "",
        "| system | highest sustained deliveries/s | at msgs/s | p99 there (ms) | stopped by |",
        "|---|---|---|---|---|",
    ]
    for run in results.fanout:
        best = run.best
        lines.append(
            f"| {run.system} | {_num(best and best.sustained_rate)} | "
            f"{_num(best and best.rate)} | {_num(best and best.p99, 1)} | "
            f"{run.failure or 'end of ramp'} |"
        )
    if results.plot:
        lines += ["", f"![delivered events/s against offered rate]({results.plot})"]
    lines += [
        "",
        "Every step (CPU as a share of one core over the publishing window; client ="
        " all subscriber processes, max = the busiest one):",
        "",
        "| system | offered msgs/s | accepted msgs/s | delivered/s in window | p50 ms "
        "| p99 ms | lost | client CPU (max) | server CPU | publisher CPU | load | "
        "verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results.fanout:
        for step in run.steps:
            server = ", ".join(f"{name} {share:.2f}" for name, share in step.server_cpu.items())
            lines.append(
                f"| {run.system} | {step.rate:,.0f} | {step.paced.achieved_rate:,.0f} | "
                f"{step.window_rate:,.0f} | {step.p50:.1f} | {step.p99:.1f} | {step.lost:,} | "
                f"{sum(step.client_cpu):.2f} ({max(step.client_cpu):.2f}) | {server} | "
                f"{step.publisher_cpu:.2f} | {step.load.split()[0]} | "
                f"{step_problem(step) or 'pass'}{_retry_note(run, step)} |"
            )
    efficiency = _efficiency_lines(results)
    if efficiency:
        lines += [
            "",
            "Deliveries per CPU-second of the serving processes (gateway or nginx "
            "workers) at each system's busiest step that lost nothing (whatever its "
            "latency): less sensitive to the machine's other load than the rates above.",
            "",
        ]
        lines += efficiency
    return lines


def _retry_note(run, step) -> str:
    first = run.retried.get(step.rate)
    return "" if first is None else f" (2nd try; 1st p99 {first:.0f} ms)"


def _efficiency_lines(results: Results) -> list[str]:
    rows = []
    for run in results.fanout:
        found = _efficiency(run)
        if found:
            rate, step = found
            rows.append(
                f"- {run.system}: {rate:,.0f} deliveries per CPU-second (at "
                f"{step.rate:,.0f} msgs/s, {step.window_rate / rate:.2f} of a core)"
            )
    return rows


def durability_lines(ingest: list, floor) -> list[str]:
    """The fsync floor of the store's disk beside the lazy and durable figures of this run."""
    if floor is None:
        return []
    rate, share = durable_share(ingest)
    lines = [
        "",
        "### Durable ingest: the fsync floor",
        "",
        f"{floor.writes} appends of 4 KiB, each followed by fsync, on the durable broker's "
        f"disk (`{Path(floor.directory).name}/` in the bench's work dir): p50 "
        f"{floor.p50_ms:.3f} ms, p99 {floor.p99_ms:.3f} ms, so **{floor.per_second:,.0f} "
        f"fsyncs/s**. One fsync per record would allow {floor.per_second:,.0f} records/s; one "
        f"per batch of 1,000 (an atomic batch), {floor.records_per_second(1000):,.0f} "
        "records/s, one batch at a time.",
    ]
    if rate is not None:
        lines += [
            "",
            f"Durable ingest (broker with `sync_interval: always`, ingest writing each request "
            f"as one atomic batch), HTTP batches of 1,000, 4 in flight: **{rate:,.0f} "
            f"records/s**, {_num(share, 2)} of the lazy figure above (same run).",
        ]
    return lines


def render(results: Results) -> str:
    machine = results.machine
    lines = [
        "# Logstream benchmark results",
        "",
        f"Run {results.started}, {results.duration_s / 60:.1f} min, with `{results.command}`.",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']}; load "
        f"average at start {machine['load average at start']} (the machine is shared: every "
        "case records the load at its start; compare the ratios of one run rather than "
        f"absolute figures across runs). Bench niceness: {results.settings.get('nice', 0)}.",
        "",
        "Versions: " + ", ".join(f"{name} {value}" for name, value in results.versions.items()),
        "",
        "## Summary against the targets",
        "",
        *summary(results),
        "",
        "What limits each figure, what was tried, and the design behind them: bench/README.md, "
        '"What makes it fast, and what limits it".',
        "",
        *fanout_section(results),
        "",
        *latency_section(results.latency),
        "",
        *memory_section(results.memory),
        "",
        *ingest_section(results.ingest),
        *durability_lines(results.ingest, results.fsync_floor),
        "",
        *flood_section(results.flood, results.settings),
        "",
        *replay_section(results.replay),
        "",
        *profile_section(results.profile),
        "",
        *channels_section(results.channels, results.settings),
        "",
        *history_section(results.history),
        "",
        *storm_section(results.storm),
    ]
    if results.errors:
        lines += ["", "## Cases that did not complete", ""]
        lines += [f"- {case}: {error}" for case, error in results.errors.items()]
    return "\n".join(lines) + "\n"
