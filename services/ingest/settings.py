"""Settings of the ingest service."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from shared.durations import parse_duration
from shared.errors import SettingsError
from shared.settings import ServiceSettings, env_name, require_in_production

__all__ = ["Settings"]

# CONTRACT section 4: 1 MiB bodies, 1,000 records per batch.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# A week of logs and at most 10 GiB: whichever comes first ages records out.
DEFAULT_RETENTION = "7d"
DEFAULT_RETENTION_BYTES = 10 * 1024**3
# CONTRACT section 3: the same id within 2 minutes is stored once.
DEFAULT_DUPLICATE_WINDOW = "2m"


class Settings(ServiceSettings, frozen=True, kw_only=True):
    port: Annotated[int, Meta(ge=0, le=65535, description="port to bind")] = 3001
    tokens_file: Annotated[
        str, Meta(description="JSON or TOML file of service tokens (required outside dev mode)")
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
    rate_limit: Annotated[
        int, Meta(ge=0, description="records per second per service token (0: no limit)")
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

    @property
    def retention_s(self) -> float:
        return parse_duration(self.retention)

    @property
    def duplicate_window_s(self) -> float:
        return parse_duration(self.duplicate_window)
