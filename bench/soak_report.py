"""The soak's verdict, ``SOAK.md`` and ``soak.png``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.cases.soak import SoakResult
from bench.soak_metrics import (
    RESTART_SETTLE_MIN_S,
    RESTART_SETTLE_SHARE,
    RULE,
    SERIES,
    WARMUP_SHARE,
    Trend,
    fit_trend,
)

__all__ = ["Verdict", "evaluate", "plot_soak", "render"]

# Series whose window starts after the broker restart settled (the broker's own, and the
# consumers on its stream, which the restart resets).
_BROKER_SERIES = ("consumers",)
_SERVICE_ORDER = ("ingest", "gateway-1", "gateway-2", "proxy", "nats-server")
_PLOTTED = (
    ("rss", "RSS (MiB)"),
    ("fds", "open descriptors"),
    ("tasks", "asyncio tasks"),
    ("consumers", "JetStream consumers on LOGS"),
    ("http_connections", "HTTP connections"),
    ("streams", "SSE streams open"),
)


@dataclass
class Verdict:
    trends: list[Trend] = field(default_factory=list)
    idle: dict[tuple[str, str], float] = field(default_factory=dict)  # after the load stopped
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def _order(key: tuple[str, str]) -> tuple[int, int]:
    metric, service = key
    names = list(SERIES)
    return (
        names.index(metric) if metric in names else len(names),
        _SERVICE_ORDER.index(service) if service in _SERVICE_ORDER else len(_SERVICE_ORDER),
    )


def _restart_end(result: SoakResult) -> float | None:
    """When the broker's and the services' series count again after the restart."""
    restart = result.restart
    if not restart.at:
        return None
    settle = max(RESTART_SETTLE_MIN_S, RESTART_SETTLE_SHARE * result.duration_s)
    return restart.at + restart.stop_s + restart.down_s + settle


def _trend(result: SoakResult, metric: str, service: str, points) -> Trend:
    warm = WARMUP_SHARE * result.duration_s
    after = _restart_end(result)
    if after is not None and (service == "nats-server" or metric in _BROKER_SERIES):
        return fit_trend(metric, service, points, max(warm, after))
    whole = fit_trend(metric, service, points, warm)
    if whole.verdict != "rising" or after is None:
        return whole
    before = fit_trend(metric, service, points, warm, result.restart.at)
    later = fit_trend(metric, service, points, after)
    if before.passed and later.passed:
        whole.verdict = "stepped"
        level = later.start - before.end
        whole.note = (
            f"before the restart {before.verdict} ({before.rise:+.1f}), after it "
            f"{later.verdict} ({later.rise:+.1f}); level {before.end:,.1f} -> {later.start:,.1f}"
            f" ({level:+.1f}) across it"
        )
    else:
        whole.note = (
            f"before the restart {before.verdict} ({before.rise:+.1f} vs {before.tolerance:.1f}),"
            f" after it {later.verdict} ({later.rise:+.1f} vs {later.tolerance:.1f})"
        )
    return whole


def evaluate(result: SoakResult) -> Verdict:
    verdict = Verdict()
    sampler = result.sampler
    assert sampler is not None
    for key in sorted((k for k in sampler.keys() if k[0] in SERIES), key=_order):
        metric, service = key
        points = sampler.series(metric, service)
        during = [(t, v) for t, v in points if t <= result.duration_s + 1]
        trend = _trend(result, metric, service, during)
        verdict.trends.append(trend)
        if points:
            verdict.idle[key] = points[-1][1]
        if trend.verdict == "rising":
            verdict.problems.append(
                f"{metric} of {service} rises {trend.rise:+.1f} over the window "
                f"(tolerance {trend.tolerance:.1f}; {trend.note})"
            )
        elif trend.verdict == "too few samples":
            verdict.problems.append(f"{metric} of {service}: too few samples")
    stored = result.stored
    if not stored.balanced:
        verdict.problems.append(
            f"stored check: {stored.acknowledged_missing} acknowledged records missing, "
            f"{stored.wrong} wrong, {stored.not_acknowledged} stored but not acknowledged, "
            f"{stored.repeated_ids} ids stored twice"
            + (f" ({stored.error})" if stored.error else "")
        )
    for reader in result.readers:
        comparison = reader.comparison
        if comparison is None or not comparison.balanced or reader.wrong_records:
            verdict.problems.append(f"long-lived reader {reader.name}: {_comparison(reader)}")
    if not result.caught_up:
        verdict.problems.append("the long-lived readers did not catch up within 90 s of the end")
    churn = result.churn.comparison
    if not churn.balanced:
        verdict.problems.append(
            f"reconnects: {churn.missing} missing, {churn.extra} extra, {churn.repeated} "
            f"repeated, {churn.out_of_order} out of order"
        )
    if result.publish.unfinished:
        verdict.problems.append(
            f"{result.publish.unfinished} records sent but never acknowledged by the end"
        )
    if result.ledger_repeated_acks:
        verdict.problems.append(f"{result.ledger_repeated_acks} seqs acknowledged for two records")
    if result.restart.error:
        verdict.problems.append(f"broker restart failed: {result.restart.error}")
    elif not result.restart.at:
        verdict.problems.append("the broker was not restarted")
    for note in result.notes:
        if "failed" in note:
            verdict.problems.append(note)
    return verdict


def _comparison(reader) -> str:
    c = reader.comparison
    if c is None:
        return "not compared"
    return (
        f"expected {c.expected:,}, received {c.received:,}, missing {c.missing:,}"
        + (f" (first {c.first_missing[:5]})" if c.missing else "")
        + f", extra {c.extra:,}, repeated {c.repeated:,}, out of order {c.out_of_order:,}, "
        f"wrong record {reader.wrong_records}"
    )


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _inside(t: float, window: tuple[float, float]) -> bool:
    return window[0] <= t <= window[1]


def _refusal_lines(result: SoakResult) -> list[str]:
    window = result.restart.outage
    lines = []
    publish = Counter(
        ("during the restart" if _inside(t, window) else "outside it", status)
        for t, status in result.publish.refusals
    )
    churn = Counter(
        ("during the restart" if _inside(t, window) else "outside it", via, status)
        for t, via, status, _ in result.churn.refusals
    )
    readers = Counter(
        ("during the restart" if _inside(t, window) else "outside it", reader.via, status)
        for reader in result.readers
        for t, status in reader.refusals
    )
    lines.append(
        f"Refusal window counted as the restart's: {window[0]:.0f}-{window[1]:.0f} s "
        "(the stop to every service ready again and the first acknowledged publish, + 5 s)."
    )
    lines.append("")
    if not (publish or churn or readers):
        lines.append("No answer other than 200/202 from any service.")
        return lines
    lines.append("| where | service | status | answers |")
    lines.append("|---|---|---|---|")
    for (where, status), count in sorted(publish.items()):
        lines.append(f"| {where} | ingest (publish) | {status} | {count:,} |")
    for (where, via, status), count in sorted(churn.items()):
        lines.append(f"| {where} | {via} (reconnects) | {status} | {count:,} |")
    for (where, via, status), count in sorted(readers.items()):
        lines.append(f"| {where} | {via} (long-lived readers) | {status} | {count:,} |")
    outside = [r for r in result.churn.refusals if not _inside(r[0], window)]
    if outside:
        lines.append("")
        lines.append("First refusals outside the restart window:")
        lines.append("")
        for t, via, status, body in outside[:5]:
            lines.append(f"- t={t:.0f} s, {via}, {status}: `{body.strip()}`")
    return lines


def render(
    result: SoakResult,
    verdict: Verdict,
    *,
    command: str,
    machine: dict[str, str],
    versions: dict[str, str],
    started: str,
    png: str | None,
) -> str:
    config = result.config
    publish, churn, restart, stored = result.publish, result.churn, result.restart, result.stored
    out: list[str] = []
    add = out.append
    add("# Soak: the stack under steady mixed load, with a broker restart")
    add("")
    add(
        f"**{'PASS' if verdict.passed else 'FAIL'}** against the target: every series flat "
        "after warm-up, and the ledger balanced (every acknowledged record stored in LOGS once "
        "and delivered to every long-lived reader of its channel, in order, none repeated; no "
        "reconnect missing or repeating a record)."
    )
    if verdict.problems:
        add("")
        for problem in verdict.problems:
            add(f"- {problem}")
    add("")
    add(f"- Command: `{command}` (started {started})")
    add(
        "- Machine: "
        + ", ".join(f"{name} {value}" for name, value in machine.items())
        + "; "
        + ", ".join(f"{name} {value}" for name, value in versions.items())
    )
    add(
        f"- Duration: {result.duration_s / 60:.1f} min of load (samples every "
        f"{config.sample_s:g} s, four more in the 45 s after the load stopped)"
    )
    rate = publish.acknowledged / max(publish.elapsed_s, 1e-9)
    add(
        f"- Publishing: {config.rate:g} records/s offered through `POST /api/logs/publish`, "
        f"{publish.acknowledged:,} acknowledged in {publish.batches:,} requests "
        f"({rate:,.0f}/s; {publish.attempts - publish.batches:,} resends), over "
        f"{result.channels_published:,} channels (4 stable, 16 active rotating, one replaced "
        f"every {config.rotate_s:g} s)"
    )
    answered = churn.statuses.total()
    add(
        f"- Reconnects: {churn.started:,} stream opens ({churn.started / max(result.duration_s, 1):.1f}"
        f"/s; target {config.reconnects:g}/s; {churn.skipped:,} skipped), "
        + ", ".join(f"{via} {n:,}" for via, n in sorted(churn.by_via.items()))
        + "; kinds: "
        + ", ".join(f"{kind} {n:,}" for kind, n in sorted(churn.by_kind.items()))
        + f". Answered {answered:,}, connected {churn.connected:,}, failed to connect "
        f"{churn.connect_errors.total():,}"
        + (f" ({dict(churn.connect_errors)})" if churn.connect_errors else "")
        + f"; {churn.records:,} records received, {churn.checked:,} streams checked against the "
        f"ledger; ended by the server before the client closed: {churn.cut_early:,} "
        f"({churn.overflows:,} with `overflow`); `connected` p50/p99 "
        f"{_pct(churn.connect_ms, 50):.1f}/{_pct(churn.connect_ms, 99):.1f} ms"
    )
    stalls = result.stalls
    overflowed = sum(s.overflow_seen for s in stalls)
    add(
        f"- Overflows seen: {overflowed} of {len(stalls)} stalled readers, "
        f"{churn.overflows} reconnects, "
        f"{sum(r.overflows for r in result.readers)} long-lived reader streams; the gateways "
        "counted (`logstream_gateway_streams_ended_total`): " + _ended(result)
    )
    if restart.at:
        ready = ", ".join(
            f"{name} {'never' if s is None else f'{s:.1f} s'}"
            for name, s in sorted(restart.ready_after_s.items())
        )
        first = restart.first_ack_after_s
        add(
            f"- Broker restart at {restart.at:.0f} s: SIGTERM to exit {restart.stop_s:.2f} s, down "
            f"{restart.down_s:.1f} s, start to listening {restart.listening_s:.2f} s; after the "
            f"stop, first acknowledged publish {'never' if first is None else f'{first:.1f} s'}; "
            f"`/ready` again: {ready}" + (f"; error: {restart.error}" if restart.error else "")
        )
    add("")
    add("## Series")
    add("")
    add(RULE)
    add("")
    add(
        "Start/end: the first and last sample of the trend window; slope per 10 min; rise: the "
        "fitted line's rise over the window; idle: the last sample, about 45 s after the load "
        "stopped and every client stream closed."
    )
    add("")
    add(
        "| metric | service | window (s) | start | end | min-max | slope/10 min | rise | tolerance | verdict | idle |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for trend in verdict.trends:
        unit = SERIES[trend.metric][0]
        idle = verdict.idle.get((trend.metric, trend.service))
        add(
            f"| {trend.metric} ({unit}) | {trend.service} | {trend.window[0]:.0f}-"
            f"{trend.window[1]:.0f} | {_fmt(trend.start)} | {_fmt(trend.end)} | "
            f"{_fmt(trend.low)}-{_fmt(trend.high)} | {trend.slope_per_10min:+.2f} | "
            f"{trend.rise:+.2f} | {trend.tolerance:.2f} | {trend.verdict} | "
            f"{'-' if idle is None else _fmt(idle)} |"
        )
    noted = [trend for trend in verdict.trends if trend.note]
    if noted:
        add("")
        for trend in noted:
            add(f"- {trend.metric} of {trend.service}, {trend.verdict}: {trend.note}")
    add("")
    if png:
        add(f"![soak]({png})")
        add("")
    add(_cpu_line(result))
    add("")
    add(_client_line(result))
    add("")
    add(_counters_line(result))
    add("")
    add("## Ledger")
    add("")
    add(
        f"- Acknowledged: {result.ledger_acknowledged:,} records (202), {result.ledger_records:,} "
        f"distinct seqs; {publish.unfinished:,} sent and never acknowledged; "
        f"{result.ledger_repeated_acks} seqs acknowledged for two records."
    )
    add(
        f"- Stored (LOGS read back with an ordered consumer, {stored.seconds:.1f} s): "
        f"{stored.stream_messages:,} messages in the stream, {stored.read:,} read; acknowledged "
        f"and found {stored.acknowledged_found:,}, missing {stored.acknowledged_missing:,}, "
        f"holding another record {stored.wrong:,}; stored but never acknowledged "
        f"{stored.not_acknowledged:,}; ids stored more than once {stored.repeated_ids:,}"
        + (f"; error: {stored.error}" if stored.error else "")
        + "."
    )
    c = churn.comparison
    add(
        f"- Reconnects (each stream's records from its `connected` cursor to its last record, "
        f"against the ledger): expected {c.expected:,}, received {c.received:,}, missing "
        f"{c.missing:,}, extra {c.extra:,}, repeated {c.repeated:,}, out of order "
        f"{c.out_of_order:,}."
    )
    for line in churn.mismatches[:10]:
        add(f"  - {line}")
    add("")
    add(
        "| long-lived reader | first cursor | connects | cut | overflow | rewinds | records | ledger |"
    )
    add("|---|---|---|---|---|---|---|---|")
    for reader in result.readers:
        add(
            f"| {reader.name} | {reader.first_cursor} | {reader.connects} | {reader.cuts} | "
            f"{reader.overflows} | {reader.rewinds} | {len(reader.received):,} | "
            f"{'balanced' if reader.comparison and reader.comparison.balanced and not reader.wrong_records else 'NOT balanced'}: "
            f"{_comparison(reader)} |"
        )
    add("")
    add("## Stalled readers")
    add("")
    add(
        f"Each sends its stream request with a 4 KiB receive buffer and never reads for "
        f"{config.stall_s:g} s; the bench polls every 2 s whether the server still has a "
        "descriptor on its end (`/proc/net/tcp` and the server's `/proc/PID/fd`), then reads "
        "what is there for up to 15 s (`overflow` frame? the server's close?) and closes. "
        "*Held at the end*: the server still had a descriptor on the connection when the bench "
        "started reading, even when it had already ended the stream (the `overflow` frame was "
        "among the unread bytes); *closed by the server*: it closed once those bytes were read."
    )
    add("")
    add(
        "| via | kind | stalled | unread for (s) | answered 200 | overflow seen | closed by the "
        "server | released by the server (after, s) | held at the end |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list] = {}
    for stall in stalls:
        groups.setdefault((stall.via, stall.kind), []).append(stall)
    for (via, kind), group in groups.items():
        released = [s.released_after_s for s in group if s.released_after_s is not None]
        add(
            f"| {via} | {kind} | {len(group)} | "
            f"{min(s.stalled_s for s in group):.0f}-{max(s.stalled_s for s in group):.0f} | "
            f"{sum(s.status == 200 for s in group)} | "
            f"{sum(s.overflow_seen for s in group)} | {sum(s.closed_by_server for s in group)} | "
            f"{len(released)}"
            + (f" ({min(released):.0f}-{max(released):.0f})" if released else "")
            + f" | {sum(bool(s.held_at_end) for s in group)} |"
        )
    errors = Counter(s.error for s in stalls if s.error)
    if errors:
        add("")
        add(f"Stalled readers that could not connect: {dict(errors)}")
    add("")
    add("## Refusals (429/503 and others)")
    add("")
    out.extend(_refusal_lines(result))
    add("")
    add("## Service logs")
    add("")
    if not result.log_lines:
        add("No warning or error line in any service's log or nats-server's.")
    for name, lines in result.log_lines.items():
        add(f"- `{name}`: {len(lines)} warning/error lines; the first distinct ones:")
        seen: list[str] = []
        for line in lines:
            short = _shape(line)
            if short not in seen:
                seen.append(short)
            if len(seen) >= 6:
                break
        for short in seen:
            add(f"  - `{short}`")
    if result.notes:
        add("")
        add("## Notes")
        add("")
        for note in result.notes:
            add(f"- {note}")
    sampler = result.sampler
    if sampler is not None and sampler.errors:
        add("")
        add(f"Samples that failed: {sampler.errors} (the broker restart accounts for some).")
    add("")
    add(
        "Warm-up: the first "
        f"{WARMUP_SHARE:.0%} of the run; the broker's series settle for "
        f"max({RESTART_SETTLE_MIN_S:.0f} s, {RESTART_SETTLE_SHARE:.0%} of the run) after the restart."
    )
    return "\n".join(out) + "\n"


def _shape(line: str) -> str:
    line = line.replace("`", "'")
    return line[:220]


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def _ended(result: SoakResult) -> str:
    sampler = result.sampler
    if sampler is None or not sampler.samples:
        return "n/a"
    last = sampler.samples[-1].counters
    parts = []
    for (key, service), value in sorted(last.items()):
        if key.startswith("logstream_gateway_streams_ended_total") and value:
            reason = key.split('reason="', 1)[-1].split('"', 1)[0]
            parts.append(f"{service} {reason} {value:,.0f}")
    return ", ".join(parts) or "none"


def _cpu_line(result: SoakResult) -> str:
    sampler = result.sampler
    if sampler is None or len(sampler.samples) < 2:
        return ""
    last = sampler.samples[-1]
    parts = []
    for service in _SERVICE_ORDER:
        total = last.values.get(("cpu_s", service))
        if total is not None:
            parts.append(f"{service} {total / max(last.t, 1):.2f}")
    return "CPU over the whole run, as a share of one core: " + ", ".join(parts) + "."


def _client_line(result: SoakResult) -> str:
    lags = result.client_lags
    sampler = result.sampler
    loads = [v for t, v in sampler.series("load1", "machine")] if sampler else []
    line = (
        f"The load client (one asyncio process): {result.client_cpu:.2f} of a core; its loop's "
        f"100 ms timer late by p50 {_pct(lags, 50) * 1000:.1f} ms, p99 {_pct(lags, 99) * 1000:.1f}"
        f" ms, max {max(lags, default=0) * 1000:.0f} ms"
    )
    if result.client_stalls:
        line += (
            f"; {len(result.client_stalls)} stalls over 1 s (first at "
            + ", ".join(f"{t:.0f} s: {lag:.1f} s" for t, lag in result.client_stalls[:5])
            + ")"
        )
    if loads:
        line += (
            f". Machine load average (1 min) over the run: min {min(loads):.1f}, mean "
            f"{sum(loads) / len(loads):.1f}, max {max(loads):.1f} (2 cores, shared)"
        )
    return line + "."


def _counters_line(result: SoakResult) -> str:
    sampler = result.sampler
    if sampler is None or not sampler.samples:
        return ""
    parts = []
    for metric, what in (
        ("catch_ups", "catch-ups (live records read back from the stream)"),
        ("repairs", "repairs (records found missing by their subject's chain)"),
    ):
        values = [
            f"{service} {value:,.0f}"
            for (name, service), value in sorted(sampler.samples[-1].values.items())
            if name == metric
        ]
        if values:
            parts.append(f"{what}: " + ", ".join(values))
    slow = max(
        (s.values.get(("slow_consumers", "nats-server"), 0) for s in sampler.samples), default=0
    )
    parts.append(f"nats-server slow consumers (the restarted process): {slow:,.0f}")
    return "At the end, gateway " + "; ".join(parts) + "."


def plot_soak(result: SoakResult, verdict: Verdict, path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sampler = result.sampler
    assert sampler is not None
    figure, axes_grid = plt.subplots(3, 2, figsize=(12, 11), dpi=100, sharex=True)
    colors = {name: f"C{index}" for index, name in enumerate(_SERVICE_ORDER)}
    keys = sampler.keys()
    for axes, (metric, title) in zip(axes_grid.flat, _PLOTTED):
        for service in _SERVICE_ORDER:
            if (metric, service) not in keys:
                continue
            points = sampler.series(metric, service)
            axes.plot(
                [t / 60 for t, _ in points],
                [v for _, v in points],
                label=service,
                color=colors[service],
                linewidth=1.2,
            )
        if result.restart.at:
            axes.axvline(result.restart.at / 60, color="red", linestyle="--", linewidth=1)
        axes.axvspan(0, WARMUP_SHARE * result.duration_s / 60, color="grey", alpha=0.12)
        axes.axvline(result.duration_s / 60, color="grey", linestyle=":", linewidth=1)
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    for axes in axes_grid[-1]:
        axes.set_xlabel("minutes (red: broker restart; shaded: warm-up; dotted: load stops)")
    figure.suptitle(
        f"Soak, {result.duration_s / 60:.0f} min: {'PASS' if verdict.passed else 'FAIL'}"
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
