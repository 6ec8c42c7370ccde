"""The fan-out plot: delivered events/s against offered publish rate, one line per system,
and below it the p99 latency of each step against the same rates."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_fanout"]


def plot_fanout(runs, subscribers: int, path: Path) -> bool:
    """Write the PNG; False (and nothing written) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.cases.fanout import P99_LIMIT_MS, step_problem

    figure, (rates_axes, p99_axes) = plt.subplots(
        2, 1, figsize=(8, 8), dpi=110, sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    offered = sorted({step.rate for run in runs for step in run.steps})
    rates_axes.plot(
        offered,
        [rate * subscribers for rate in offered],
        linestyle=":",
        color="grey",
        label=f"offered x {subscribers:,} streams",
    )
    for run in runs:
        if not run.steps:
            continue
        rates = [step.rate for step in run.steps]
        (line,) = rates_axes.plot(
            rates, [s.window_rate for s in run.steps], marker="o", label=run.system
        )
        p99_axes.plot(rates, [s.p99 for s in run.steps], marker="o", color=line.get_color())
        failed = [s for s in run.steps if step_problem(s)]
        if failed:
            rates_axes.scatter(
                [s.rate for s in failed],
                [s.window_rate for s in failed],
                marker="x",
                s=90,
                color=line.get_color(),
                zorder=3,
            )
            p99_axes.scatter(
                [s.rate for s in failed],
                [s.p99 for s in failed],
                marker="x",
                s=90,
                color=line.get_color(),
                zorder=3,
            )
    p99_axes.axhline(P99_LIMIT_MS, color="grey", linestyle="--", linewidth=1)
    for axes in (rates_axes, p99_axes):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.grid(True, which="both", alpha=0.3)
    rates_axes.set_ylabel("delivered events/s (all streams)")
    rates_axes.set_title(
        f"Fan-out to {subscribers:,} SSE streams on one channel (x: the step that failed)"
    )
    rates_axes.legend()
    p99_axes.set_ylabel("p99 publish-to-reader (ms)")
    p99_axes.set_xlabel("offered publish rate (msgs/s)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
