"""The audit log: one structured line per denial (401, 403, 429, broker permission violations).

Each line says who asked, what they asked for, and which rule refused it. It never carries a
secret: callers pass a token's *name* or a user's id, never the token, and ``what`` is a route
or channel, never a URL with its query string (``access_token`` may ride there).
"""

from __future__ import annotations

import logging

__all__ = ["AUDIT_LOGGER", "denied"]

AUDIT_LOGGER = "logstream.audit"

_log = logging.getLogger(AUDIT_LOGGER)


def denied(*, who: str, what: str, rule: str, status: int | None = None, via: str = "http",
           remote: str | None = None, reason: str = "") -> None:
    """Log one denial: ``who`` (``user:<id>``, ``token:<name>``, ``nats:<user>`` or
    ``anonymous``), ``what`` (``POST /api/logs/publish``, a channel, a subject), ``rule``."""
    _log.warning(
        "denied",
        extra={"audit": "denied", "who": who, "what": what, "rule": rule, "status": status,
               "via": via, "remote": remote, "reason": reason},
    )
