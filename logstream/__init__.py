"""Logstream: real-time log streaming over Server-Sent Events, backed by NATS JetStream.

The client library: ``from logstream import LogPublisher, LogstreamHandler`` (imported on
first use, so the ``logstream`` command does not pay for what it does not run).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["LogPublisher", "LogstreamHandler", "__version__"]

_LAZY = {"LogPublisher": "logstream.publisher", "LogstreamHandler": "logstream.handler"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'logstream' has no attribute {name!r}")
