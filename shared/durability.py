"""What an acknowledged record survives: the broker's durability, as services report it.

A 202 from ingest means JetStream acknowledged every record. What that is worth depends on the
broker, not on Logstream:

- ``fsync``: every node that stores LOGS has ``sync_interval: always``; the broker fsyncs a
  write (an atomic batch: once for the whole batch) before it acknowledges it. A power failure
  loses nothing acknowledged.
- ``replicated``: LOGS has more than one replica; a write is acknowledged once a quorum of
  nodes holds it, so losing one node (its power included) loses nothing acknowledged, but a
  power failure of the whole cluster can.
- ``lazy``: one replica, synced every ``sync_interval`` (2 minutes by default): a power
  failure or an OS crash loses what was acknowledged since the last sync.
- ``unknown``: one replica, and no monitoring endpoint to read the broker's sync setting from
  (``nats_monitor_url``).

The sync setting is read from nats-server's monitoring endpoint (``/varz``: its JetStream
config), the replicas from the stream's own config. Both are read at start and every
``REFRESH_S`` after, so an operator who changes the broker sees it without restarting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Literal

import httpx
import msgspec
from nats.js.client import JetStreamContext
from prometheus_client import CollectorRegistry, Enum

from logstream.shared.nats_names import STREAM_NAME

__all__ = ["MODES", "REFRESH_S", "UNREAD_REFRESH_S", "BrokerDurability", "classify", "read_sync"]

Mode = Literal["fsync", "replicated", "lazy", "unknown"]
MODES: tuple[Mode, ...] = ("fsync", "replicated", "lazy", "unknown")
REFRESH_S = 30.0
UNREAD_REFRESH_S = 2.0
_VARZ_TIMEOUT_S = 3.0
# nats-server's default sync_interval when its config sets none.
_DEFAULT_SYNC = "2m"

log = logging.getLogger("logstream.durability")


class _JetStreamConfig(msgspec.Struct):
    sync_always: bool = False
    sync_interval: int = 0  # nanoseconds; 0 is the default (2 minutes)


class _JetStream(msgspec.Struct):
    config: _JetStreamConfig | None = None


class _Varz(msgspec.Struct):
    jetstream: _JetStream | None = None


_VARZ = msgspec.json.Decoder(_Varz)


def read_sync(varz: bytes) -> str:
    """The broker's sync setting from its ``/varz`` body: ``always`` or an interval like
    ``2m`` / ``10s``; ``ValueError`` when the body holds no JetStream config."""
    try:
        decoded = _VARZ.decode(varz)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not nats-server's /varz: {exc}") from None
    if decoded.jetstream is None or decoded.jetstream.config is None:
        raise ValueError("the broker's /varz shows no JetStream config (is JetStream on?)")
    config = decoded.jetstream.config
    if config.sync_always:
        return "always"
    if config.sync_interval <= 0:
        return _DEFAULT_SYNC
    seconds = config.sync_interval / 1e9
    return f"{seconds / 60:g}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}s"


def classify(syncs: Sequence[str] | None, replicas: int) -> Mode:
    """The durability of LOGS with ``replicas`` replicas on brokers whose sync settings are
    ``syncs`` (``None``: not known)."""
    if replicas > 1:  # (with sync_interval: always too: nats-server syncs replicated streams
        return "replicated"  # through their Raft log, which this does not claim to judge)
    if syncs and all(sync == "always" for sync in syncs):
        return "fsync"
    return "unknown" if not syncs else "lazy"


class BrokerDurability:
    """Reads and reports the broker's durability (``details`` for /ready, and a metric)."""

    def __init__(
        self, monitor_urls: Sequence[str], registry: CollectorRegistry | None = None
    ) -> None:
        self._monitor_urls = [url.rstrip("/") for url in monitor_urls if url.strip()]
        self.mode: Mode = "unknown"
        self.sync: list[str] | None = None
        self.replicas: int | None = None
        self.problem = "" if self._monitor_urls else "nats_monitor_url is not set"
        self._metric = (
            Enum(
                "logstream_broker_durability",
                "What an acknowledged record survives: fsync (the broker syncs before it "
                "acknowledges), replicated (a quorum of replicas holds it), lazy (synced "
                "every sync_interval), unknown (the broker's sync setting is not readable).",
                states=list(MODES),
                registry=registry,
            )
            if registry is not None
            else None
        )
        self._set("unknown")

    def details(self) -> dict[str, Any]:
        """The fields /ready adds to its body."""
        body: dict[str, Any] = {
            "durability": self.mode,
            "broker_sync": None if self.sync is None else ",".join(self.sync),
            "stream_replicas": self.replicas,
        }
        if self.problem:
            body["durability_problem"] = self.problem
        return body

    async def refresh(self, js: JetStreamContext | None) -> Mode:
        """Read the stream's replicas (through ``js``) and every broker's sync setting."""
        problems = []
        if js is not None:
            try:
                info = await js.stream_info(STREAM_NAME)
                self.replicas = info.config.num_replicas or 1
            except Exception as exc:  # not created yet, or the link is down: keep the last
                problems.append(f"stream {STREAM_NAME}: {type(exc).__name__}")
        if self._monitor_urls:
            try:
                self.sync = await self._read_syncs()
            except (httpx.HTTPError, ValueError) as exc:
                problems.append(f"broker monitoring: {exc}")
        else:
            problems.append("nats_monitor_url is not set")
        self.problem = "; ".join(problems)
        mode = classify(self.sync, self.replicas or 1)
        if mode != self.mode:
            log.info(
                "broker durability: %s",
                mode,
                extra={"sync": self.sync, "replicas": self.replicas},
            )
        self._set(mode)
        return mode

    async def _read_syncs(self) -> list[str]:
        async with httpx.AsyncClient(timeout=_VARZ_TIMEOUT_S) as client:
            answers = await asyncio.gather(
                *(client.get(url + "/varz") for url in self._monitor_urls)
            )
        syncs = []
        for url, answer in zip(self._monitor_urls, answers):
            if answer.status_code != 200:
                raise ValueError(f"{url}/varz answered {answer.status_code}")
            syncs.append(read_sync(answer.content))
        return syncs

    def next_refresh_s(self) -> float:
        """``REFRESH_S``; ``UNREAD_REFRESH_S`` while the stream's replicas are not known yet (a
        gateway that started before ingest created LOGS), so /ready does not say
        ``stream_replicas: null`` for long."""
        return REFRESH_S if self.replicas is not None else UNREAD_REFRESH_S

    async def watch(self, js: JetStreamContext | None) -> None:
        """``refresh`` every ``next_refresh_s()`` until cancelled."""
        while True:
            await asyncio.sleep(self.next_refresh_s())
            try:
                await self.refresh(js)
            except Exception:  # a bug here must not stop the service: keep the last state
                log.exception("could not read the broker's durability")

    def _set(self, mode: Mode) -> None:
        self.mode = mode
        if self._metric is not None:
            self._metric.state(mode)
