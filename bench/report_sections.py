"""The per-case sections of bench/RESULTS.md (cases 2 to 6 and the profile)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["flood_section", "ingest_section", "latency_section", "memory_section",
           "profile_section", "replay_section"]

# Rows of the profile tables.
PROFILE_ROWS = 15
# Frames every stack of the main thread passes through: they say nothing about where time goes.
_PLUMBING = ("<frozen runpy>", "logstream/cli.py", "logstream/__main__.py", "shared/web.py",
             "uvicorn/server.py", "uvicorn/_compat.py", "asyncio/runners.py")
# py-spy sees no Python frame inside uvloop's C loop: its own time lands on the frame that
# called ``run``.
_LOOP = "Runner.run (asyncio/runners.py)"


def _cpu(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.2f}" for name, share in shares.items())


def latency_section(results) -> list[str]:
    lines = ["## 2. Latency: publish to reader, 100 streams x 500 msgs/s", "",
             "Every stream read as soon as bytes arrive (reactive client workers); every "
             "message's send time (taken by the publisher just before sending) is compared "
             "with the reader's clock after `recv` (CLOCK_MONOTONIC, one clock for all "
             "processes). \"via HTTP ingest\": each 5 ms tick POSTs the records due to "
             "`/api/logs/publish` (up to 32 POSTs in flight over 4 connections) and the figure "
             "includes ingest storing them in JetStream; \"Logstream 1 gateway\" publishes "
             "straight into JetStream; \"read through the proxy\" streams through "
             "`logstream proxy`'s ETL route in front of the same gateway, as a browser does. "
             "The systems take turns in rounds; p50, p99, CPU are the "
             "median of the rounds (the worst round's p99 is shown too).", "",
             "| system | p50 ms | p99 ms | worst round p99 ms | delivered | lost | client CPU "
             "| server CPU | load per round |", "|---" * 9 + "|"]
    for r in results:
        lines.append(f"| {r.system} | {r.p50:.2f} | {r.p99:.2f} | {r.worst_p99:.1f} | "
                     f"{r.delivered:,} | {r.lost:,} | {r.client_cpu:.2f} | "
                     f"{_cpu(r.server_cpu)} | {r.loads} |")
    nchan = next((r for r in results if r.system.startswith("Nchan")), None)
    if nchan and nchan.p99:
        for r in results:
            if r is not nchan:
                lines.append(f"\n{r.system} / Nchan: p50 {r.p50 / nchan.p50:.2f}, "
                             f"p99 {r.p99 / nchan.p99:.2f}")
    return lines


def memory_section(results) -> list[str]:
    lines = ["## 3. Idle memory per connection", "",
             "RSS of the serving process (the gateway; nginx's worker) after 100 warm-up "
             "streams and again after all of them, idle, on one channel; the growth divided by "
             "the streams added.", "",
             "| system | streams open | RSS before MiB | RSS after MiB | KiB per connection | "
             "load |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.system} | {r.opened:,} | {r.rss_before / 2**20:.1f} | "
                     f"{r.rss_after / 2**20:.1f} | {r.per_connection / 1024:.1f} | "
                     f"{r.load.split()[0]} |")
        if r.failures:
            lines.append(f"| (failures: {r.failures}) | | | | | |")
    if len(results) == 2 and results[1].per_connection:
        lines.append(f"\nLogstream / Nchan: "
                     f"{results[0].per_connection / results[1].per_connection:.2f}")
    return lines


def ingest_section(results) -> list[str]:
    lines = ["## 4. Ingest throughput (Logstream only; Nchan has no equivalent)", "",
             "Records confirmed stored per second (HTTP 202, or ingest's NATS reply with "
             "status 202), each record with its own idempotency `id`, for a fixed time with "
             "the stated requests in flight. Failed: records not confirmed, by answer (a 503 "
             "is ingest's `publish_timeout`, 2 s, passing before JetStream confirmed the "
             "batch). CPU as a share of one core.", "",
             "| way | records/s | failed | ingest CPU | nats-server CPU | client CPU | load |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        failed = ", ".join(f"{n:,} ({why})" for why, n in r.failures.items()) or "0"
        lines.append(f"| {r.way} | {r.rate:,.0f} | {failed} | {r.ingest_cpu:.2f} | "
                     f"{r.nats_cpu:.2f} | {r.client_cpu:.2f} | {r.load.split()[0]} |")
    return lines


def flood_section(windows, settings: dict) -> list[str]:
    lines = [f"## 5. One channel flooded at {settings.get('flood_rate', 0):,.0f} msgs/s", "",
             f"{settings.get('flood_s')} s offered, {settings.get('flood_subscribers')} "
             "stream(s). Accepted = acknowledged by JetStream (Logstream, published straight "
             "into it) or answered 2xx (Nchan). Lost = accepted but not delivered by the end "
             "of the drain (up to 15 s after the last publish, ended early by 5 s without "
             "progress); cut = streams ended by the server (`overflow`).", "",
             "| system | accepted msgs/s | accepted | delivered | lost | cut | p50 ms | p99 ms "
             "| server CPU | publisher CPU | client CPU | load |", "|---" * 12 + "|"]
    for w in windows:
        lines.append(f"| {w.system} | {w.paced.achieved_rate:,.0f} | {w.paced.accepted:,} | "
                     f"{w.delivered:,} | {w.lost:,} | {w.report.closed} | {w.p50:.1f} | "
                     f"{w.p99:.1f} | {_cpu(w.server_cpu)} | {w.publisher_cpu:.2f} | "
                     f"{sum(w.client_cpu):.2f} | {w.load.split()[0]} |")
    return lines


def replay_section(result) -> list[str]:
    if result is None:
        return ["## 6. Resume replay speed", "", "Not run."]
    return ["## 6. Resume replay speed (Logstream)", "",
            f"{result.records:,} records stored straight into JetStream (as the ingest NATS "
            "user), then one stream resumed with `Last-Event-ID` before the first of them:"
            f" {result.received:,} read in {result.seconds:.2f} s, "
            f"**{result.rate:,.0f} records/s** (gateway CPU {result.gateway_cpu:.2f}, "
            f"nats-server {result.nats_cpu:.2f}, client {result.client_cpu:.2f}; load "
            f"{result.load.split()[0]})."]


def profile_section(profile) -> list[str]:
    if profile is None:
        return ["## Where the gateway's CPU goes", "", "Not profiled in this run."]
    window = profile.window
    lines = ["## Where the gateway's CPU goes (py-spy, fan-out)", "",
             f"py-spy ({profile.samples:,} samples at 200 Hz over {profile.seconds:.0f} s, "
             f"`--nonblocking`, Python frames only: time in C is charged to the calling line) "
             f"on the gateway while {window.subscribers:,} streams received {window.rate:,.0f} "
             f"msgs/s ({window.window_rate:,.0f} deliveries/s, p99 {window.p99:.0f} ms, gateway "
             f"CPU {window.server_cpu.get('gateway', 0):.2f}). The main thread was on CPU "
             f"{profile.busy_share:.0%} of the time. Raw stacks: `{Path(profile.raw_path).name}`"
             " (py-spy's raw format, next to this file).", "",
             "Self time (the innermost Python frame):", "", "| function | share |", "|---|---|"]
    total = max(profile.samples, 1)
    for name, count in profile.self_time.most_common(PROFILE_ROWS):
        label = ("the event loop itself (uvloop, in C: epoll, callbacks, socket I/O)"
                 if name == _LOOP else f"`{name}`")
        lines.append(f"| {label} | {count / total:.1%} |")
    lines += ["", "Inclusive time (the function or anything it called; start-up frames "
              "left out):", "", "| function | share |", "|---|---|"]
    shown = [(name, count) for name, count in profile.inclusive.most_common()
             if not any(part in name for part in _PLUMBING)]
    for name, count in shown[:PROFILE_ROWS]:
        lines.append(f"| `{name}` | {count / total:.1%} |")
    return lines
