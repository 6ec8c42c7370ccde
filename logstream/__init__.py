"""Logstream: real-time log streaming over Server-Sent Events, backed by NATS JetStream.

The client library: ``from logstream import LogPublisher, LogstreamHandler`` (imported on
first use, so the ``logstream`` command does not pay for what it does not run).

``logstream`` is the one import root. The services and the code they share live in the repo's
top ``services/`` and ``shared/`` folders; ``logstream/services`` and ``logstream/shared`` are
links to them, so a checkout, an editor, the type checker and the wheel all see one package:
``logstream.services.gateway``, ``logstream.shared.channels``.
"""

from __future__ import annotations

import importlib
from typing import Any

from logstream.shared.version import VERSION as __version__

__all__ = ["LogPublisher", "LogstreamHandler", "__version__"]

_LAZY = {"LogPublisher": "logstream.publisher", "LogstreamHandler": "logstream.handler"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'logstream' has no attribute {name!r}")
