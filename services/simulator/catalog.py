"""What simulated traffic is about: the event shape and the workspaces, workflows and functions.

Names are realistic and every one is a valid channel segment (``[A-Za-z0-9_-]{1,64}``). The
seed's ``workspace123``/``workflow456`` is always there, and most traffic lands in
``workspace123`` and ``workspace456``, the workspaces of the dev users ``user123``/``user456``,
so the Logs page shows something for them at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from logstream.shared.channels import Channel
from logstream.shared.records import PublishedRecord

__all__ = [
    "DEFAULT_CATALOG",
    "SEED_CHANNEL",
    "AnalyticsSpec",
    "Catalog",
    "Emit",
    "FunctionSpec",
    "LogEvent",
    "WorkflowSpec",
    "emitter",
    "short_id",
]

# The channel of the original `gateway-log-publisher.js`, which every demo and test opens first.
SEED_CHANNEL = Channel("etl", "workspace123", "workflow456")


class LogEvent(msgspec.Struct, frozen=True, kw_only=True):
    """What a record says, before the runner stamps it with an id and a timestamp."""

    channel: Channel
    level: str
    message: str
    source: str
    fields: dict[str, Any]

    @property
    def service(self) -> str:
        return self.channel.service

    def to_record(self, record_id: str, timestamp: str | int) -> PublishedRecord:
        return PublishedRecord(
            channel=str(self.channel),
            message=self.message,
            level=self.level,
            timestamp=timestamp,
            source=self.source,
            fields=self.fields,
            id=record_id,
        )


Emit = Callable[..., LogEvent]


def emitter(channel: Channel) -> Emit:
    """``emit(level, source, message, **fields)`` for one channel."""

    def emit(level: str, source: str, message: str, **fields: Any) -> LogEvent:
        return LogEvent(channel=channel, level=level, message=message, source=source, fields=fields)

    return emit


def short_id(rng, prefix: str) -> str:
    return f"{prefix}_{rng.getrandbits(48):012x}"


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    workspace: str
    name: str
    source_system: str
    source_host: str
    tables: tuple[str, ...]
    transforms: tuple[str, ...]
    targets: tuple[str, ...]
    load_mode: str = "merge"
    weight: float = 2.0

    @property
    def channel(self) -> Channel:
        return Channel("etl", self.workspace, self.name)


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    workspace: str
    name: str
    trigger: str
    memory_mb: int = 256
    timeout_s: int = 30
    runtime: str = "python3.11"
    weight: float = 2.0

    @property
    def channel(self) -> Channel:
        return Channel("faas", self.workspace, self.name)


@dataclass(frozen=True, slots=True)
class AnalyticsSpec:
    workspace: str
    dataset: str
    queries: tuple[str, ...]
    weight: float = 1.5

    @property
    def channel(self) -> Channel:
        return Channel("analytics", self.workspace)


@dataclass(frozen=True, slots=True)
class Catalog:
    workflows: tuple[WorkflowSpec, ...]
    functions: tuple[FunctionSpec, ...]
    analytics: tuple[AnalyticsSpec, ...]
    platform: tuple[tuple[str, float], ...]  # (workspace, weight)


DEFAULT_CATALOG = Catalog(
    workflows=(
        WorkflowSpec(
            "workspace123",
            "workflow456",
            "postgres.public",
            "orders-db.internal",
            ("orders", "order_items", "customers"),
            ("dedupe_customers", "normalize_currency"),
            ("analytics.fact_orders", "analytics.dim_customers"),
            weight=3.0,
        ),
        WorkflowSpec(
            "workspace123",
            "orders-daily-sync",
            "mysql.shop",
            "shop-mysql.internal",
            ("payments", "refunds"),
            ("join_payments_refunds",),
            ("analytics.fact_payments",),
        ),
        WorkflowSpec(
            "workspace456",
            "inventory-snapshot",
            "postgres.inventory",
            "inventory-db.internal",
            ("stock_levels", "warehouses"),
            ("latest_stock_per_sku",),
            ("analytics.inventory_daily",),
            load_mode="overwrite partition",
        ),
        WorkflowSpec(
            "workspace456",
            "marketing-attribution",
            "s3.raw-events",
            "s3.eu-west-1.amazonaws.com",
            ("clickstream", "campaigns"),
            ("sessionize_clicks", "attribute_last_touch"),
            ("marts.attribution",),
            load_mode="append",
            weight=1.0,
        ),
        WorkflowSpec(
            "acme-retail",
            "pos-ingest",
            "sqlserver.pos",
            "pos-sql.acme.local",
            ("transactions",),
            ("cast_quantities",),
            ("raw.pos_transactions",),
            load_mode="append",
            weight=1.0,
        ),
    ),
    functions=(
        FunctionSpec(
            "workspace123", "resize-thumbnails", "s3:ObjectCreated", memory_mb=1024, timeout_s=60
        ),
        FunctionSpec("workspace123", "stripe-webhook", "http POST /webhooks/stripe"),
        FunctionSpec("workspace456", "send-digest-email", "schedule rate(1 hour)", weight=1.0),
        FunctionSpec(
            "acme-retail", "geo-enrich", "sqs orders-to-enrich", memory_mb=512, weight=1.0
        ),
    ),
    analytics=(
        AnalyticsSpec(
            "workspace123",
            "sales.events",
            ("daily_revenue_by_region", "top_skus_7d", "cohort_retention"),
        ),
        AnalyticsSpec(
            "workspace456",
            "inventory.snapshots",
            ("stockout_forecast", "warehouse_turnover"),
            weight=1.0,
        ),
        AnalyticsSpec("acme-retail", "pos.transactions", ("basket_analysis",), weight=0.5),
    ),
    platform=(("workspace123", 1.0), ("workspace456", 0.7), ("acme-retail", 0.4)),
)
