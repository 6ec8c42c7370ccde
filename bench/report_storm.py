"""The reconnect storm's section of bench/RESULTS.md and its row in the summary."""

from __future__ import annotations

from bench.cases.storm import DRAIN_TIMEOUT_S, LIVE_TARGET_S, LIVE_TIMEOUT_S, STORM_P99_TARGET_MS

__all__ = ["storm_rows", "storm_section"]

HEAD = "## Reconnect storm after a gateway restart (Logstream)"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _s(value: float) -> str:
    return "never" if value == float("inf") else f"{value:.2f}"


def _ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}"  # NaN: no samples


def storm_rows(result) -> list[str]:
    """The summary table's row (target | Logstream | Nchan | ratio | verdict)."""
    if result is None:
        return []
    figures = (
        f"all live {_s(result.live_max)} s (p99 {_s(result.live_p99)}), p99 "
        f"{_ms(result.storm_p99)} ms, lost {result.lost:,}, repeated {result.repeated:,}"
    )
    return [
        f"| reconnect storm: {result.streams:,} streams on {result.channels:,} channels resume "
        f"at once after a gateway restart: all live <= {LIVE_TARGET_S:g} s, p99 of live "
        f"streams <= {STORM_P99_TARGET_MS:g} ms, nothing lost or repeated | {figures} | - | - | "
        f"{_met(result.passed)} |"
    ]


def storm_section(result) -> list[str]:
    if result is None:
        return [HEAD, "", "Not run."]
    lines = [
        HEAD,
        "",
        f"A stack of its own (a fresh broker, one gateway). {result.streams:,} streams on "
        f"{result.channels:,} channels ({result.streams // max(result.channels, 1):,} per "
        f"channel), opened in {result.opened_s:.1f} s; records published straight into "
        f"JetStream (the ingest NATS user, ingest's layout) at {result.rate:,.0f} records/s "
        f"round-robin over the channels, without a pause until the end. After "
        f"{result.settle_s:g} s the gateway is stopped (SIGTERM) and started again on the same "
        "port; the client holds every stream closed, and when `/ready` answers 200 every "
        "stream reconnects at once (non-blocking connects from two client processes, no "
        "retry delay) with `Last-Event-ID` = the last id it received. A stream is *live "
        "again* once, on a connection made after the restart, it holds every record "
        "acknowledged on its channel before that connection's `connected` frame: the later "
        "of the two instants, timed from the gateway's readiness. A refused or failed "
        "attempt, or a connection ended before it caught up, is retried after 0.5 s with the "
        "last id. Delivery during the storm: the records that reached streams already live, "
        "from readiness until the last stream was live (each stream's backlog is not in it). The ledger: every stream's ids, before and after the restart, against its "
        "channel's acknowledged ids after the cursor of its first `connected`.",
        "",
        "| | |",
        "|---|---|",
        f"| records accepted (sent) | {result.accepted:,} ({result.sent:,}) |",
        f"| gateway down: SIGTERM to exited, to `/ready` 200 | {result.stop_s:.2f} s, "
        f"{result.down_s:.2f} s ({result.acked_while_down:,} records acknowledged meanwhile) |",
        f"| live again after readiness: p50 / p99 / max (s; target max <= "
        f"{LIVE_TARGET_S:g}) | {_s(result.live_p50)} / {_s(result.live_p99)} / "
        f"{_s(result.live_max)} ({_met(result.live_met)}) |",
        f"| streams never live again (by the end of the run; the wait for them stops after "
        f"{LIVE_TIMEOUT_S:g} s) | {result.not_live:,} |",
        f"| records read back by the resumed streams (most by one) | {result.caught_up:,} "
        f"({result.most_caught_up:,}) |",
        f"| delivery to live streams during the storm: p50 / p99 ms (target p99 <= "
        f"{STORM_P99_TARGET_MS:g}) | {_ms(result.storm_p50)} / {_ms(result.storm_p99)} "
        f"({_met(result.p99_met)}; {result.storm_samples:,} records over "
        f"{result.storm_window_s:.2f} s) |",
        f"| delivery before the restart / after the storm: p99 ms | "
        f"{_ms(result.before_p99)} / {_ms(result.after_p99)} |",
        f"| ledger: delivered / expected | {result.delivered:,} / {result.expected:,} |",
        f"| lost (not received {DRAIN_TIMEOUT_S:g} s after the last publish), repeated, "
        f"unexpected, out of order (streams wrong) | {result.lost:,}, "
        f"{result.repeated:,}, {result.unexpected:,}, {result.disordered:,} "
        f"({result.streams_wrong:,}) ({_met(result.ledger_ok)}) |",
        f"| storm attempts refused or failed (retried) | "
        f"{_failures(result.storm_failed)} ({result.retries:,} retries) |",
        f"| streams ended by the server other than by the restart, by its last word (closed: "
        f"the connection closed without a final frame; with `overflow`) | {result.cuts:,}: "
        f"{_failures(result.cut)} ({result.overflows:,}) |",
        f"| gateway log lines warning or worse | {result.log_lines:,} |",
        f"| CPU seconds from readiness until the client saw every stream live (or gave up), "
        f"{result.storm_cpu_window_s:.1f} s | "
        f"{', '.join(f'{n} {s:.2f}' for n, s in result.storm_cpu_s.items())} |",
        f"| CPU before the restart, share of a core | "
        f"{', '.join(f'{n} {s:.2f}' for n, s in result.steady_cpu.items())} |",
        f"| gateway flags added for the storm | "
        f"{' '.join(result.gateway_flags) or 'none (the gateway has no edge limits)'} |",
        f"| load average at start | {result.load.split()[0]} |",
        "",
        f"Verdict: {'**pass**' if result.passed else '**fail**'}.",
    ]
    if result.problems:
        lines += ["", *[f"- {problem}" for problem in result.problems]]
    if result.log_kinds:
        lines += [
            "",
            "The gateway's log lines warning or worse, by kind (most frequent first):",
            "",
        ]
        lines += [f"    {count:>7,} x {kind}" for count, kind in result.log_kinds]
    return lines


def _failures(failed: dict) -> str:
    return ", ".join(f"{n:,} {why}" for why, n in sorted(failed.items())) or "none"
