"""The soak's samples of every service process, and the trend test that reads them.

Every ``SAMPLE_S`` the sampler takes, for ingest, each gateway, the proxy and nats-server: RSS
(``/proc/PID/status`` VmRSS), open descriptors (``/proc/PID/fd``) and CPU seconds; from each
Python service's ``GET /metrics`` its asyncio tasks, HTTP connections and (gateway, proxy) its
stream gauges; from the broker the JetStream consumers on LOGS (stream info, as the ingest NATS
user) and its client connections and subscriptions (``/varz``).

The trend test (``fit_trend``) is the soak's pass rule; ``RULE`` states it for the report.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import nats

from bench.credentials import JETSTREAM_WRITER, WRITER_INBOX
from bench.machine import cpu_seconds, rss_bytes
from logstream.shared.nats_names import STREAM_NAME

__all__ = [
    "FLOORS",
    "RULE",
    "SERIES",
    "Sampler",
    "Service",
    "Trend",
    "fit_trend",
    "parse_metrics",
]

SAMPLE_S = 10.0
MIB = 1024 * 1024

# (metric, unit, absolute floor of the tolerance): the series the soak tests for a trend.
SERIES: dict[str, tuple[str, float]] = {
    "rss": ("MiB", 5.0),
    "fds": ("descriptors", 5.0),
    "tasks": ("asyncio tasks", 20.0),
    "consumers": ("JetStream consumers on LOGS", 2.0),
    "http_connections": ("HTTP connections", 20.0),
    "streams": ("SSE streams open", 20.0),
    "interests": ("subject interests", 20.0),
    "nats_connections": ("NATS client connections", 3.0),
    "nats_subscriptions": ("NATS subscriptions", 50.0),
}
FLOORS = {name: floor for name, (_, floor) in SERIES.items()}
# Share of the run dropped as warm-up before a trend is fitted.
WARMUP_SHARE = 0.2
# After the broker restart, the broker's own series (a new process, consumers created again)
# settle for this share of the run (at least RESTART_SETTLE_MIN_S) before their trend counts.
RESTART_SETTLE_SHARE = 0.1
RESTART_SETTLE_MIN_S = 20.0
RULE = (
    "Each series is fitted with a least-squares line over the samples after the warm-up (the "
    f"first {WARMUP_SHARE:.0%} of the run dropped; for nats-server's own series and the "
    "consumer count, which the broker restart resets, the samples before the restart plus "
    f"max({RESTART_SETTLE_MIN_S:.0f} s, {RESTART_SETTLE_SHARE:.0%} of the run) dropped "
    "instead, when that is later). "
    "Rise = slope x the window's length. Tolerance = max(3 x the residuals' standard deviation, "
    "the series' floor: "
    + ", ".join(f"{floor:g} {unit}" for unit, floor in SERIES.values())
    + "). The series is *flat* when |rise| <= tolerance, *falling* when rise < -tolerance "
    "(not a leak: it passes), *rising* when rise > tolerance. A rising series of a service "
    "that lived through the restart is fitted again on each side of it (warm-up to the "
    "restart; the restart plus the settle time to the end): flat (or falling) on both sides, "
    "it is *stepped* (it passes, and the step is reported: a level that moved once at the "
    "restart, not a growth); otherwise it fails."
)


@dataclass
class Service:
    name: str
    pid: Callable[[], int | None]
    metrics_url: str | None  # the Python services' /metrics


@dataclass
class Sample:
    t: float  # seconds since the soak's start
    values: dict[tuple[str, str], float] = field(default_factory=dict)  # (metric, service)
    counters: dict[tuple[str, str], float] = field(default_factory=dict)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text: ``name{labels}`` -> value (comments skipped)."""
    found = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            found[key] = float(value)
        except ValueError:
            continue
    return found


_GAUGES = {
    "logstream_asyncio_tasks": "tasks",
    "logstream_http_connections": "http_connections",
    "logstream_gateway_connections": "streams",
    "logstream_proxy_streams_open": "streams",
    "logstream_gateway_interests": "interests",
    "logstream_gateway_catch_ups": "catch_ups",
    "logstream_gateway_repairs": "repairs",
}
_COUNTER_PREFIXES = (
    "logstream_gateway_streams_ended_total",
    "logstream_gateway_streams_refused_total",
    "logstream_proxy_stream_requests_total",
    "logstream_ingest_requests_total",
)


def _open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Sampler:
    def __init__(
        self, services: list[Service], nats_url: str, monitor_url: str | None, t0: float
    ) -> None:
        self.services, self.nats_url, self.monitor_url = services, nats_url, monitor_url
        self.t0 = t0
        self.samples: list[Sample] = []
        self.errors: dict[str, int] = {}
        self._client = httpx.AsyncClient(timeout=5.0)
        self._nc: nats.NATS | None = None
        # CPU seconds per service, summed over the processes it had (the broker restarts)
        self._cpu_base: dict[str, float] = {}
        self._cpu_last: dict[str, tuple[int, float]] = {}

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def _admin(self) -> nats.NATS:
        if self._nc is None:

            async def quiet(_exc: Exception) -> None:
                pass

            user, password = JETSTREAM_WRITER
            self._nc = await nats.connect(
                self.nats_url,
                user=user,
                password=password,
                inbox_prefix=WRITER_INBOX,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=quiet,
                name="logstream-soak-sampler",
            )
        return self._nc

    def cpu_total(self, service: str) -> float:
        return self._cpu_base.get(service, 0.0) + self._cpu_last.get(service, (0, 0.0))[1]

    def _cpu(self, service: str, pid: int) -> None:
        now = cpu_seconds(pid)
        last_pid, last = self._cpu_last.get(service, (pid, 0.0))
        if last_pid != pid:  # a new process: what the old one used is kept
            self._cpu_base[service] = self._cpu_base.get(service, 0.0) + last
        self._cpu_last[service] = (pid, now)

    async def sample(self) -> Sample:
        sample = Sample(time.monotonic() - self.t0)
        for service in self.services:
            pid = service.pid()
            if pid:
                rss = rss_bytes(pid)
                if rss:
                    sample.values[("rss", service.name)] = rss / MIB
                fds = _open_fds(pid)
                if fds is not None:
                    sample.values[("fds", service.name)] = fds
                self._cpu(service.name, pid)
                sample.values[("cpu_s", service.name)] = self.cpu_total(service.name)
            if service.metrics_url:
                await self._scrape(service, sample)
        await self._broker(sample)
        sample.values[("load1", "machine")] = os.getloadavg()[0]
        self.samples.append(sample)
        return sample

    async def _scrape(self, service: Service, sample: Sample) -> None:
        assert service.metrics_url is not None
        try:
            answer = await self._client.get(service.metrics_url)
            metrics = parse_metrics(answer.text)
        except (httpx.HTTPError, OSError):
            self._error(f"{service.name} /metrics")
            return
        for name, metric in _GAUGES.items():
            if name in metrics:
                sample.values[(metric, service.name)] = metrics[name]
        for key, value in metrics.items():
            if key.startswith(_COUNTER_PREFIXES):
                sample.counters[(key, service.name)] = value

    async def _broker(self, sample: Sample) -> None:
        try:
            nc = await asyncio.wait_for(self._admin(), 5)
            js = nc.jetstream(timeout=2)
            info = await asyncio.wait_for(js.stream_info(STREAM_NAME), 3)
            sample.values[("consumers", "nats-server")] = info.state.consumer_count
            sample.values[("stored", "nats-server")] = info.state.messages
        except (TimeoutError, nats.errors.Error, OSError):
            self._error("stream info")
        if self.monitor_url:
            try:
                varz = (await self._client.get(self.monitor_url + "/varz")).json()
                sample.values[("nats_connections", "nats-server")] = varz["connections"]
                sample.values[("nats_subscriptions", "nats-server")] = varz["subscriptions"]
                sample.values[("slow_consumers", "nats-server")] = varz.get("slow_consumers", 0)
            except (httpx.HTTPError, OSError, ValueError, KeyError):
                self._error("/varz")

    async def close(self) -> None:
        await self._client.aclose()
        if self._nc is not None:
            try:
                await asyncio.wait_for(self._nc.close(), 5)
            except (TimeoutError, nats.errors.Error):
                pass

    def series(self, metric: str, service: str) -> list[tuple[float, float]]:
        return [
            (sample.t, sample.values[(metric, service)])
            for sample in self.samples
            if (metric, service) in sample.values
        ]

    def keys(self) -> list[tuple[str, str]]:
        seen: dict[tuple[str, str], None] = {}
        for sample in self.samples:
            for key in sample.values:
                seen.setdefault(key, None)
        return list(seen)


@dataclass
class Trend:
    metric: str
    service: str
    samples: int
    window: tuple[float, float]  # seconds since the start
    start: float  # first sample of the window
    end: float  # last sample of the window
    low: float
    high: float
    slope_per_10min: float
    rise: float
    residual_std: float
    tolerance: float
    verdict: str  # flat | falling | rising | too few samples | stepped (see RULE)
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict in ("flat", "falling", "stepped")


def fit_trend(
    metric: str,
    service: str,
    points: list[tuple[float, float]],
    since: float,
    until: float = float("inf"),
) -> Trend:
    window = [(t, v) for t, v in points if since <= t < until]
    floor = FLOORS.get(metric, 0.0)
    if len(window) < 3:
        empty = (since, since)
        return Trend(metric, service, len(window), empty, 0, 0, 0, 0, 0, 0, 0, 0, "too few samples")
    n = len(window)
    ts = [t for t, _ in window]
    vs = [v for _, v in window]
    mean_t, mean_v = sum(ts) / n, sum(vs) / n
    var_t = sum((t - mean_t) ** 2 for t in ts)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in window) / var_t if var_t else 0.0
    intercept = mean_v - slope * mean_t
    residuals = [v - (intercept + slope * t) for t, v in window]
    std = (sum(r * r for r in residuals) / max(n - 2, 1)) ** 0.5
    rise = slope * (ts[-1] - ts[0])
    tolerance = max(3 * std, floor)
    verdict = "flat" if abs(rise) <= tolerance else ("falling" if rise < 0 else "rising")
    return Trend(
        metric,
        service,
        n,
        (ts[0], ts[-1]),
        vs[0],
        vs[-1],
        min(vs),
        max(vs),
        slope * 600,
        rise,
        std,
        tolerance,
        verdict,
    )
