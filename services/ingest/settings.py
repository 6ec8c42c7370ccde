"""Settings of the ingest service."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from msgspec import Meta

from logstream.shared.durations import parse_duration
from logstream.shared.errors import SettingsError
from logstream.shared.settings import ServiceSettings, env_name, require_in_production

__all__ = ["Settings"]

# docs/reference/ingest.md: 1 MiB bodies, 1,000 records per batch.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# A week of logs and at most 10 GiB: whichever comes first ages records out.
DEFAULT_RETENTION = "7d"
DEFAULT_RETENTION_BYTES = 10 * 1024**3
# docs/reference/records.md: the same id within 2 minutes is stored once.
DEFAULT_DUPLICATE_WINDOW = "2m"
# The default burst is this many seconds of publish_rate: log traffic comes in bursts (a failing
# job logs a stack of lines at once) and a bucket of one second would refuse ordinary ones. It
# is never below max_batch_records, so a full batch (the SDK sends up to 1,000 records at once)
# can always pass once the bucket is full, and the average rate is still publish_rate.
DEFAULT_BURST_SECONDS = 2
# A bound that no producer reaches (ingest stores ~50k records/s) and keeps the bucket's
# arithmetic in ordinary floats.
MAX_PUBLISH_RATE = 10_000_000


class Settings(ServiceSettings, frozen=True, kw_only=True):
    port: Annotated[int, Meta(ge=0, le=65535, description="port to bind")] = 3001
    tokens_file: Annotated[
        str, Meta(description="JSON or TOML file of service tokens (required outside dev mode)")
    ] = ""
    channel_rules: Annotated[
        str,
        Meta(
            description="TOML file of channel mapping rules for records that come without a "
            "channel (OTLP attributes, Loki labels)"
        ),
    ] = ""
    max_body_bytes: Annotated[
        int, Meta(ge=1024, le=64 * 1024 * 1024, description="largest request body accepted")
    ] = DEFAULT_MAX_BODY_BYTES
    max_batch_records: Annotated[
        int, Meta(ge=1, le=10000, description="most records in one request")
    ] = 1000
    retention: Annotated[
        str, Meta(description="how long the LOGS stream keeps records (30m, 24h, 7d)")
    ] = DEFAULT_RETENTION
    retention_bytes: Annotated[
        int, Meta(ge=1024 * 1024, description="most bytes the LOGS stream keeps")
    ] = DEFAULT_RETENTION_BYTES
    duplicate_window: Annotated[
        str, Meta(description="window in which a repeated record id is stored once")
    ] = DEFAULT_DUPLICATE_WINDOW
    stream_replicas: Annotated[
        int, Meta(ge=1, le=5, description="JetStream replicas of the LOGS stream")
    ] = 1
    publish_timeout: Annotated[
        float, Meta(gt=0, le=60, description="seconds to wait for JetStream to confirm a batch")
    ] = 2.0
    atomic_batches: Annotated[
        Literal["auto", "on", "off"],
        Meta(
            description="write a request of 5+ records as one JetStream atomic batch (one "
            "fsync per batch under sync_interval: always; nats-server 2.12+): auto when the "
            "broker's durability is fsync (read through nats_monitor_url), on, or off"
        ),
    ] = "auto"
    publish_rate: Annotated[
        float,
        Meta(
            ge=0,
            le=MAX_PUBLISH_RATE,
            description="records per second each service token may publish, over "
            "HTTP and NATS together (0: no limit)",
        ),
    ] = 0.0
    publish_burst: Annotated[
        int,
        Meta(
            ge=0,
            le=MAX_PUBLISH_RATE,
            description="token bucket size: the most records a token may publish at "
            "once; a larger batch is refused with 413 (0: the larger of "
            f"{DEFAULT_BURST_SECONDS} s of publish_rate and "
            "max_batch_records)",
        ),
    ] = 0

    def check(self) -> None:
        super().check()
        for name in ("retention", "duplicate_window"):
            try:
                if parse_duration(getattr(self, name)) <= 0:
                    raise ValueError("it must be positive")
            except ValueError as exc:
                raise SettingsError(f"invalid setting {name} ({env_name(name)}): {exc}") from None
        require_in_production(self, "tokens_file", "built-in service tokens")
        if self.publish_burst and not self.publish_rate:
            raise SettingsError(
                f"invalid setting publish_burst ({env_name('publish_burst')}): it needs "
                f"publish_rate ({env_name('publish_rate')}); without a rate there is no limit"
            )

    @property
    def burst(self) -> int:
        """Records a token may publish at once (meaningful only with a ``publish_rate``)."""
        if self.publish_burst:
            return self.publish_burst
        return max(math.ceil(self.publish_rate * DEFAULT_BURST_SECONDS), self.max_batch_records)

    @property
    def retention_s(self) -> float:
        return parse_duration(self.retention)

    @property
    def duplicate_window_s(self) -> float:
        return parse_duration(self.duplicate_window)
