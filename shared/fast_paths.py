"""The fast paths that lean on a library's internals, and whether each one is on.

Each library whose internals Logstream uses has one adapter module, and each adapter checks at
start that what it hooks is there: ``logstream.shared.uvicorn_adapter`` (the HTTP protocol:
direct socket writes and disconnect hooks) and ``logstream.shared.nats_internals`` (nats-py:
ingest's ack lane and batch writes, the gateway's shared live inbox). The versions they were
tested with are pinned to a compatible range in ``pyproject.toml``.

A check's outcome is recorded here: a fast path that cannot attach is logged once as a warning
naming what is missing, the service goes on with the library's ordinary path, and every
service's ``/metrics`` says which paths are on:

    logstream_fast_path{path="uvicorn_connection"} 1.0

A hook the service cannot run without (it has no ordinary path to fall back on) is ``require``d
instead: the service refuses to start, naming the library and the tested range.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from logstream.shared.errors import SettingsError

__all__ = ["FastPathCollector", "record", "require", "states"]

log = logging.getLogger("logstream.fast_paths")

# path -> None when on, else what was missing (process-wide: each service is its own process)
_STATES: dict[str, str | None] = {}


def record(path: str, missing: Sequence[str]) -> bool:
    """Note whether ``path`` attached (nothing ``missing``); True when it did."""
    if missing:
        why = "; ".join(missing)
        if _STATES.get(path) != why:
            log.warning(
                "fast path %s is off, the ordinary path is used: %s",
                path,
                why,
                extra={"fast_path": path, "missing": list(missing)},
            )
        _STATES[path] = why
        return False
    _STATES[path] = None
    return True


def require(path: str, missing: Sequence[str], library: str) -> None:
    """As ``record``, for a hook with no ordinary path: raises ``SettingsError`` (the service
    does not start) when something is missing."""
    if not record(path, missing):
        raise SettingsError(
            f"{library} lacks what {path} uses ({'; '.join(missing)}): install the version "
            f"range pyproject.toml pins for it"
        )


def states() -> dict[str, bool]:
    """Each checked path, and whether it is on."""
    return {path: why is None for path, why in _STATES.items()}


class FastPathCollector(Collector):
    """``logstream_fast_path{path}``: 1 for a fast path that attached, 0 for one that did not."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "logstream_fast_path",
            "Whether a fast path that leans on a library's internals attached at start (1) "
            "or the library's ordinary path is used (0)",
            labels=["path"],
        )
        for path, on in sorted(states().items()):
            family.add_metric([path], 1.0 if on else 0.0)
        yield family
