"""The per-case sections of bench/RESULTS.md (cases 2 to 8 and the profile)."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "channels_section",
    "flood_section",
    "history_section",
    "ingest_section",
    "latency_section",
    "memory_section",
    "profile_section",
    "replay_section",
]

# Rows of the profile tables.
PROFILE_ROWS = 15
# Frames every stack of the main thread passes through: they say nothing about where time goes.
_PLUMBING = (
    "<frozen runpy>",
    "logstream/cli.py",
    "logstream/__main__.py",
    "shared/web.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "asyncio/runners.py",
)
# py-spy sees no Python frame inside uvloop's C loop: its own time lands on the frame that
# called ``run``.
_LOOP = "Runner.run (asyncio/runners.py)"


def _cpu(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.2f}" for name, share in shares.items())


def latency_section(results) -> list[str]:
    lines = [
        "## 2. Latency: publish to reader, 100 streams x 500 msgs/s",
        "",
        "Every stream read as soon as bytes arrive (reactive client workers); every "
        "message's send time (taken by the publisher just before sending) is compared "
        "with the reader's clock after `recv` (CLOCK_MONOTONIC, one clock for all "
        'processes). "via HTTP ingest": each 5 ms tick POSTs the records due to '
        "`/api/logs/publish` (up to 32 POSTs in flight over 4 connections) and the figure "
        'includes ingest storing them in JetStream; "Logstream 1 gateway" publishes '
        'straight into JetStream; "read through the proxy" streams through '
        "`logstream proxy`'s ETL route in front of the same gateway, as a browser does. "
        "The systems take turns in rounds; p50, p99, CPU are the "
        "median of the rounds (the worst round's p99 is shown too).",
        "",
        "| system | p50 ms | p99 ms | worst round p99 ms | delivered | lost | client CPU "
        "| server CPU | load per round |",
        "|---" * 9 + "|",
    ]
    for r in results:
        lines.append(
            f"| {r.system} | {r.p50:.2f} | {r.p99:.2f} | {r.worst_p99:.1f} | "
            f"{r.delivered:,} | {r.lost:,} | {r.client_cpu:.2f} | "
            f"{_cpu(r.server_cpu)} | {r.loads} |"
        )
    nchan = next((r for r in results if r.system.startswith("Nchan")), None)
    if nchan and nchan.p99:
        for r in results:
            if r is not nchan:
                lines.append(
                    f"\n{r.system} / Nchan: p50 {r.p50 / nchan.p50:.2f}, "
                    f"p99 {r.p99 / nchan.p99:.2f}"
                )
    return lines


def memory_section(results) -> list[str]:
    lines = [
        "## 3. Idle memory per connection",
        "",
        "RSS of the serving process (the gateway; nginx's worker) after 100 warm-up "
        "streams and again after all of them, idle, on one channel; the growth divided by "
        "the streams added.",
        "",
        "| system | streams open | RSS before MiB | RSS after MiB | KiB per connection | load |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.system} | {r.opened:,} | {r.rss_before / 2**20:.1f} | "
            f"{r.rss_after / 2**20:.1f} | {r.per_connection / 1024:.1f} | "
            f"{r.load.split()[0]} |"
        )
        if r.failures:
            lines.append(f"| (failures: {r.failures}) | | | | | |")
    if len(results) == 2 and results[1].per_connection:
        lines.append(
            f"\nLogstream / Nchan: {results[0].per_connection / results[1].per_connection:.2f}"
        )
    return lines


def ingest_section(results) -> list[str]:
    lines = [
        "## 4. Ingest throughput (Logstream only; Nchan has no equivalent)",
        "",
        "Records confirmed stored per second (HTTP 202, or ingest's NATS reply with "
        "status 202), each record with its own idempotency `id`, for a fixed time with "
        "the stated requests in flight. Failed: records not confirmed, by answer (a 503 "
        "is ingest's `publish_timeout`, 2 s, passing before JetStream confirmed the "
        "batch). CPU as a share of one core.",
        "",
        "| way | records/s | failed | ingest CPU | nats-server CPU | client CPU | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        failed = ", ".join(f"{n:,} ({why})" for why, n in r.failures.items()) or "0"
        lines.append(
            f"| {r.way} | {r.rate:,.0f} | {failed} | {r.ingest_cpu:.2f} | "
            f"{r.nats_cpu:.2f} | {r.client_cpu:.2f} | {r.load.split()[0]} |"
        )
    return lines


def flood_section(windows, settings: dict) -> list[str]:
    lines = [
        f"## 5. One channel flooded at {settings.get('flood_rate', 0):,.0f} msgs/s",
        "",
        f"{settings.get('flood_s')} s offered, {settings.get('flood_subscribers')} "
        "stream(s). Accepted = acknowledged by JetStream (Logstream, published straight "
        "into it) or answered 2xx (Nchan). Lost = accepted but not delivered by the end "
        "of the drain (up to 15 s after the last publish, ended early by 5 s without "
        "progress); cut = streams ended by the server (`overflow`).",
        "",
        "| system | accepted msgs/s | accepted | delivered | lost | cut | p50 ms | p99 ms "
        "| server CPU | publisher CPU | client CPU | load |",
        "|---" * 12 + "|",
    ]
    for w in windows:
        lines.append(
            f"| {w.system} | {w.paced.achieved_rate:,.0f} | {w.paced.accepted:,} | "
            f"{w.delivered:,} | {w.lost:,} | {w.report.closed} | {w.p50:.1f} | "
            f"{w.p99:.1f} | {_cpu(w.server_cpu)} | {w.publisher_cpu:.2f} | "
            f"{sum(w.client_cpu):.2f} | {w.load.split()[0]} |"
        )
    return lines


def replay_section(result) -> list[str]:
    if result is None:
        return ["## 6. Resume replay speed", "", "Not run."]
    return [
        "## 6. Resume replay speed (Logstream)",
        "",
        f"{result.records:,} records stored straight into JetStream (as the ingest NATS "
        "user), then one stream resumed with `Last-Event-ID` before the first of them:"
        f" {result.received:,} read in {result.seconds:.2f} s, "
        f"**{result.rate:,.0f} records/s** (gateway CPU {result.gateway_cpu:.2f}, "
        f"nats-server {result.nats_cpu:.2f}, client {result.client_cpu:.2f}; load "
        f"{result.load.split()[0]}).",
    ]


def profile_section(profile) -> list[str]:
    if profile is None:
        return ["## Where the gateway's CPU goes", "", "Not profiled in this run."]
    window = profile.window
    lines = [
        "## Where the gateway's CPU goes (py-spy, fan-out)",
        "",
        f"py-spy ({profile.samples:,} samples at 200 Hz over {profile.seconds:.0f} s, "
        f"`--nonblocking`, Python frames only: time in C is charged to the calling line) "
        f"on the gateway while {window.subscribers:,} streams received {window.rate:,.0f} "
        f"msgs/s ({window.window_rate:,.0f} deliveries/s, p99 {window.p99:.0f} ms, gateway "
        f"CPU {window.server_cpu.get('gateway', 0):.2f}). The main thread was on CPU "
        f"{profile.busy_share:.0%} of the time. Raw stacks: `{Path(profile.raw_path).name}`"
        " (py-spy's raw format, next to this file).",
        "",
        "Self time (the innermost Python frame):",
        "",
        "| function | share |",
        "|---|---|",
    ]
    total = max(profile.samples, 1)
    for name, count in profile.self_time.most_common(PROFILE_ROWS):
        label = (
            "the event loop itself (uvloop, in C: epoll, callbacks, socket I/O)"
            if name == _LOOP
            else f"`{name}`"
        )
        lines.append(f"| {label} | {count / total:.1%} |")
    lines += [
        "",
        "Inclusive time (the function or anything it called; start-up frames left out):",
        "",
        "| function | share |",
        "|---|---|",
    ]
    shown = [
        (name, count)
        for name, count in profile.inclusive.most_common()
        if not any(part in name for part in _PLUMBING)
    ]
    for name, count in shown[:PROFILE_ROWS]:
        lines.append(f"| `{name}` | {count / total:.1%} |")
    return lines


# The targets of the many-channels case.
COLD_OPEN_TARGET_S = 10.0
REOPEN_P99_TARGET_MS = 50.0
CHURN_P99_TARGET_MS = 20.0
READ_RATIO_TARGET = 1.2


def _ms(value: float) -> str:
    if value == float("inf"):
        return "not connected"
    return "n/a" if value != value else f"{value:.1f}"  # NaN: no samples


def _met(ok: bool | None) -> str:
    return "" if ok is None else (" (met)" if ok else " (**missed**)")


def _phase_rows(runs, name: str) -> list[str]:
    phases = [getattr(run, name) for run in runs]

    def row(label: str, value) -> str:
        return f"| {label} | " + " | ".join(value(p) if p else "not run" for p in phases) + " |"

    rows = [
        row(f"{name}: records accepted / s", lambda p: f"{p.accepted / p.duration_s:,.0f}"),
        row(f"{name}: streams counted", lambda p: f"{p.streams:,}"),
        row(f"{name}: delivered / expected", lambda p: f"{p.delivered:,} / {p.expected:,}"),
        row(
            f"{name}: lost, repeated (streams short, over)",
            lambda p: f"{p.lost:,}, {p.repeated:,} ({p.short:,}, {p.over:,})",
        ),
        row(f"{name}: streams cut (with `overflow`)", lambda p: f"{p.cut} ({p.overflow})"),
        row(f"{name}: delivery p50 / p99 (ms)", lambda p: f"{_ms(p.p50)} / {_ms(p.p99)}"),
        row(
            f"{name}: loop lag, samples > 10 ms of all (worst bucket)",
            lambda p: f"{p.lag.over_10ms} of {p.lag.samples} ({p.lag.worst})" if p.lag else "n/a",
        ),
        row(
            f"{name}: gateway catch-ups, repairs (interests at the end)",
            lambda p: (
                f"{p.broker['catch_ups']:.0f}, {p.broker['repairs']:.0f} "
                f"({p.broker['interests']:,.0f})"
                if p.broker
                else "n/a"
            ),
        ),
        row(
            f"{name}: CPU seconds in the {phases[0].duration_s if phases[0] else 0:g} s window",
            lambda p: ", ".join(f"{n} {s:.1f}" for n, s in p.cpu_s.items()),
        ),
        row(f"{name}: load average at start", lambda p: p.load.split()[0]),
    ]
    return rows


def channels_section(runs, settings: dict) -> list[str]:
    head = "## 7. Many channels"
    single = [run for run in runs if not run.system.startswith("Logstream 4")]
    if not single:
        return [head, "", "Not run."]
    streams = settings.get("channels_streams", 0)
    lines = [
        head,
        "",
        f"{streams:,} streams on {streams:,} distinct channels `logs:etl:ws<i % 2000>:wf<i>`"
        ", opened from cold (a fresh stack of its own for Logstream: a new broker, four new "
        "gateways; the first serves the one-gateway phases) with at most "
        "200 requests in flight from two client processes; connect latency is from "
        "sending the GET to reading `event: connected` (Nchan: the response head), and at "
        "the cold open it includes waiting behind the other requests in flight. Then "
        f"{settings.get('channels_rate', 0):,.0f} records/s round-robin over the channels "
        f"for {settings.get('channels_s')} s (steady), and the same again while "
        f"{settings.get('channels_churn', 0):g} streams/s close and reopen on channels never "
        "seen before (`logs:etl:churn<k % 2000>:x<k>`), each living about a second "
        "(churn): the figures of the churn window are of the streams that stayed open, "
        "which receive the whole load. Each counted stream must receive exactly the "
        "records accepted on its channel (JetStream acknowledged them; Nchan answered "
        "2xx): lost and repeated are summed per stream. Logstream is published to straight "
        "into JetStream as the ingest NATS user, Nchan through its publisher location. "
        "Loop lag: the gateway's `logstream_gateway_loop_lag_seconds` bucket deltas over "
        "the publishing window (a 100 ms timer, sampled every 0.1 s).",
        "",
        "| | " + " | ".join(run.system for run in single) + " |",
        "|---" * (len(single) + 1) + "|",
    ]

    def row(label: str, value) -> str:
        return f"| {label} | " + " | ".join(value(run) for run in single) + " |"

    lines.append(
        row(
            "cold open: streams connected",
            lambda r: f"{r.cold.ready:,} of {r.cold.streams:,}" if r.cold else "not run",
        )
    )
    lines.append(
        row(
            f"cold open: seconds until all connected (target <= {COLD_OPEN_TARGET_S:g} s)",
            lambda r: (
                f"{r.cold.seconds:.2f}"
                if r.cold and r.cold.seconds is not None
                else f"did not complete in {r.cold.timeout_s:g} s"
                if r.cold
                else "not run"
            ),
        )
    )
    lines.append(
        row(
            "cold open: connect p50 / p99 (ms)",
            lambda r: f"{_ms(r.cold.p50)} / {_ms(r.cold.p99)}" if r.cold else "not run",
        )
    )
    lines += _phase_rows(single, "steady")
    lines.append(
        row(
            "churn: reopens connected (closed by the client before they connected)",
            lambda r: (
                f"{r.churn.reopen.ready:,} of {r.churn.reopen.streams:,} "
                f"({r.churn.reopen.abandoned:,})"
                if r.churn and r.churn.reopen
                else "not run"
            ),
        )
    )
    lines.append(
        row(
            f"churn: reopen connect p50 / p99 (ms; never connected = infinitely "
            f"late; target p99 <= {REOPEN_P99_TARGET_MS:g})",
            lambda r: (
                f"{_ms(r.churn.reopen.p50)} / {_ms(r.churn.reopen.p99)}"
                if r.churn and r.churn.reopen
                else "not run"
            ),
        )
    )
    lines += _phase_rows(single, "churn")
    lines.append(
        row(
            f"churn p99 / steady p99 (target <= 2, and churn p99 <= {CHURN_P99_TARGET_MS:g} ms)",
            lambda r: (
                f"{r.churn.p99 / r.steady.p99:.2f}"
                if r.churn and r.steady and r.steady.p99 > 0
                else "n/a"
            ),
        )
    )
    lines.append(row("server log lines warning or worse", lambda r: f"{r.log_lines:,}"))
    lines += ["", "Targets (Logstream 1 gateway):", ""]
    lines += _targets(single[0])
    lines += _split_lines(runs, single[0])
    for run in runs:
        if run.problems:
            lines += [""] + [f"- {run.system}: {problem}" for problem in run.problems]
        if run.log_examples:
            lines += [
                "",
                f"{run.system}: {run.log_lines:,} log lines warning or worse, e.g.:",
                "",
            ] + [f"    {text}" for text in run.log_examples]
    return lines


def _targets(run) -> list[str]:
    cold, steady, churn = run.cold, run.steady, run.churn
    out = []
    if cold:
        ok = cold.seconds is not None and cold.seconds <= COLD_OPEN_TARGET_S
        out.append(f"- all {cold.streams:,} connected within {COLD_OPEN_TARGET_S:g} s{_met(ok)}")
    if churn and churn.reopen:
        ok = churn.reopen.ready == churn.reopen.streams and (
            churn.reopen.p99 <= REOPEN_P99_TARGET_MS
        )
        out.append(f"- reopen connect p99 <= {REOPEN_P99_TARGET_MS:g} ms{_met(ok)}")
    if churn and steady:
        ok = churn.p99 <= CHURN_P99_TARGET_MS and churn.p99 <= 2 * steady.p99
        out.append(
            f"- churn delivery p99 <= {CHURN_P99_TARGET_MS:g} ms and within 2x of steady{_met(ok)}"
        )
        ok = churn.lost == 0 and churn.repeated == 0 and churn.cut == 0
        out.append(f"- nothing lost, repeated or cut on the streams that stayed open{_met(ok)}")
    return out or ["- not measured"]


def _split_lines(runs, single) -> list[str]:
    split = next((run for run in runs if run.system.startswith("Logstream 4")), None)
    if split is None or split.steady is None:
        problems = "; ".join(split.problems) if split else "not run"
        return ["", f"Four gateways: {problems}."]
    phase = split.steady
    lines = [
        "",
        f"Four gateways: the same {split.streams:,} channels dealt over four gateway "
        "processes by a stable hash of the workspace (crc32 % 4), the same load for "
        f"{phase.duration_s:g} s (opened in "
        f"{split.cold.seconds:.2f} s; delivery p50 {_ms(phase.p50)} ms, p99 "
        f"{_ms(phase.p99)} ms; lost {phase.lost:,}, repeated {phase.repeated:,}, cut "
        f"{phase.cut}). Read = the delta of `logstream_gateway_records_read_total`; wanted "
        "= records accepted on the channels of the gateway's streams (target read/wanted "
        f"<= {READ_RATIO_TARGET:g} plus a small fixed overhead).",
        "",
        "| gateway | streams | records read | records wanted | read / wanted | CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for number, (held, read, wanted, cpu) in enumerate(phase.gateways, 1):
        ratio = read / wanted if wanted else float("nan")
        lines.append(
            f"| {number} | {held:,} | {read:,.0f} | {wanted:,} | {ratio:.2f}"
            f"{_met(ratio <= READ_RATIO_TARGET)} | {cpu:.2f} |"
        )
    total = sum(cpu for *_, cpu in phase.gateways)
    one = single.steady.cpu_s.get("gateway 1") if single.steady else None
    lines.append(
        f"| all four | {sum(g[0] for g in phase.gateways):,} | "
        f"{sum(g[1] for g in phase.gateways):,.0f} | "
        f"{sum(g[2] for g in phase.gateways):,} | | {total:.2f} |"
    )
    if one:
        lines += [
            "",
            f"One gateway, the same load (steady window): {one:.2f} CPU s; the four "
            f"together {total:.2f} ({total / one:.2f}x).",
        ]
    return lines


def history_section(result) -> list[str]:
    head = "## 8. History pages and the channel list (Logstream)"
    if result is None:
        return [head, "", "Not run."]
    headline = result.timing("newest page, big channel", result.records)
    ratio = result.scale_ratio
    lines = [
        head,
        "",
        f"A stack of its own (a fresh broker, one gateway), its LOGS stream filled straight "
        f"into JetStream (as the ingest NATS user, records in ingest's layout) with "
        f"{result.records:,} records on {result.channels:,} channels of one workspace: "
        f"{result.channels - 2:,} filler channels round-robin and two page channels of exactly "
        f"100 records each, spread evenly, *big* over the whole stream and *small* over its "
        f"first {result.scale_records:,}. Filled in {result.fill_s:.1f} s of writing "
        f"({result.fill_rate:,.0f} records/s; the pause at the scale point left out). At {result.scale_records:,} records the small "
        "channel's newest page and the channel list were timed, then the fill went on. Each "
        "row: sequential requests over one keep-alive connection (httpx) after one not "
        "counted, timed from sending to the whole body read; every answer is compared with "
        "what was written (records, order, `next_before`; the list's channels, counts and "
        "newest seqs). CPU: the gateway's and nats-server's, per request. With this few "
        "requests the p99 is close to the max.",
        "",
    ]
    if headline is not None:
        lines += [
            f"**A page of a 100-record channel in a {result.records:,}-record stream: p50 "
            f"{headline.p50:.1f} ms** (p99 {headline.p99:.1f} ms)"
            + (
                f"; {ratio:.2f}x the p50 of the same request on a 100-record channel in a "
                f"{result.scale_records:,}-record stream."
                if ratio is not None
                else "."
            ),
            "",
        ]
    small_then = result.timing("newest page, small channel", result.scale_records)
    small_now = result.timing(
        "newest page, small channel (now in the oldest tenth)", result.records
    )
    if small_then and small_now:
        lines += [
            f"The small channel's page, its records in the first {result.scale_records:,}: "
            f"p50 {small_then.p50:.1f} ms in a {result.scale_records:,}-record stream, "
            f"{small_now.p50:.1f} ms in the {result.records:,}-record one: a page's cost "
            "follows the stretch of stream its records lie in (the broker walks it for the "
            "channel's records: nats-server CPU per request below), not the records after it.",
            "",
        ]
    lines += [
        "| request | stream records | requests | answer | p50 ms | p99 ms | max ms "
        "| gateway CPU ms / request | nats-server CPU ms / request | answer right |",
        "|---" * 10 + "|",
    ]
    for t in result.timings:
        lines.append(
            f"| {t.what}: `{t.request}` | {t.stream_records:,} | {t.requests} | {t.answer} | "
            f"{t.p50:.1f} | {t.p99:.1f} | {t.max:.1f} | {t.gateway_cpu_ms:.1f} | "
            f"{t.nats_cpu_ms:.1f} | {'yes' if t.problem is None else '**no**'} |"
        )
    lines.append(f"\nLoad average at the start: {result.load.split()[0]}.")
    if result.problems:
        lines += ["", "Wrong answers or a broken fill (the case failed):", ""]
        lines += [f"- {problem}" for problem in result.problems]
    return lines
