"""Realistic traffic: every lane's story interleaved into one reproducible stream of events.

A *lane* is one endless story on one channel: a workflow's ETL runs (``etl_runs``), a
function's invocations, a workspace's analytics jobs or platform events (``workloads``).
``Traffic`` picks the next lane at random by weight, so a burst of any size spreads over many
channels; it always opens on the seed's channel ``logs:etl:workspace123:workflow456`` when ETL
is in the mix, so every run, however short, reaches the channel demos and tests watch.

Everything is drawn from one ``random.Random(seed)``: the same seed gives the same sequence of
(channel, level, message, source, fields). Ids and timestamps are not part of an event; the
runner stamps them when it sends (``LogEvent.to_record``), so two runs with one seed never
deduplicate each other in ingest.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from logstream.services.simulator.catalog import DEFAULT_CATALOG, SEED_CHANNEL, Catalog, LogEvent
from logstream.services.simulator.etl_runs import etl_runs
from logstream.services.simulator.workloads import analytics_jobs, faas_invocations, platform_events
from logstream.shared.channels import DEFAULT_SERVICES, Channel

__all__ = ["SEED_CHANNEL", "LogEvent", "Traffic"]


@dataclass(frozen=True, slots=True)
class _Lane:
    channel: Channel
    weight: float
    events: Iterator[LogEvent]


def _lanes(rng: random.Random, catalog: Catalog, services: frozenset[str]) -> list[_Lane]:
    """One lane per catalog entry, each with its own generator seeded from the master's."""
    lanes: list[_Lane] = []

    def add(
        channel: Channel, weight: float, make: Callable[[random.Random], Iterator[LogEvent]]
    ) -> None:
        own = random.Random(rng.getrandbits(64))  # drawn even when filtered: stable streams
        if channel.service in services:
            lanes.append(_Lane(channel, weight, make(own)))

    for workflow in catalog.workflows:
        add(workflow.channel, workflow.weight, functools.partial(etl_runs, spec=workflow))
    for function in catalog.functions:
        add(function.channel, function.weight, functools.partial(faas_invocations, spec=function))
    for job in catalog.analytics:
        add(job.channel, job.weight, functools.partial(analytics_jobs, spec=job))
    for workspace, weight in catalog.platform:
        add(
            Channel("platform", workspace),
            weight,
            functools.partial(platform_events, workspace=workspace),
        )
    return lanes


class Traffic:
    """An endless, reproducible mix of every lane's events (an iterator of ``LogEvent``)."""

    def __init__(
        self,
        seed: int | None = None,
        *,
        services: Iterable[str] | None = None,
        catalog: Catalog = DEFAULT_CATALOG,
    ) -> None:
        self.seed = seed if seed is not None else random.SystemRandom().getrandbits(32)
        self.services = frozenset(services) if services else DEFAULT_SERVICES
        unknown = self.services - DEFAULT_SERVICES
        if unknown:
            raise ValueError(f"no simulated traffic for service(s) {', '.join(sorted(unknown))}")
        self._rng = random.Random(self.seed)
        self._lanes = _lanes(self._rng, catalog, self.services)
        if not self._lanes:
            raise ValueError(f"the catalog has no channel of {', '.join(sorted(self.services))}")
        self._weights = [lane.weight for lane in self._lanes]
        self._opening = next((lane for lane in self._lanes if lane.channel == SEED_CHANNEL), None)

    @property
    def channels(self) -> list[Channel]:
        return [lane.channel for lane in self._lanes]

    def __iter__(self) -> Traffic:
        return self

    def __next__(self) -> LogEvent:
        if self._opening is not None:
            lane, self._opening = self._opening, None
        else:
            lane = self._rng.choices(self._lanes, self._weights)[0]
        return next(lane.events)

    def take(self, count: int) -> list[LogEvent]:
        return [next(self) for _ in range(count)]
