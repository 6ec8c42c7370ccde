"""The audit log: one structured line per denial (401, 403, 429, broker permission violations).

Each line says who asked, what they asked for, and which rule refused it. It never carries a
secret: callers pass a token's *name* or a user's id, never the token, and ``what`` is a route
or channel, never a URL with its query string (``access_token`` may ride there). As a second
line of defence, anything shaped like a JWT and any ``access_token=`` value is masked, and
every field is cut to a bounded length, so a hostile path cannot flood the log.

A line, as ``logstream.shared.structured_logging`` writes it::

    {"ts": "...", "level": "warning", "service": "gateway", "logger": "logstream.audit",
     "msg": "denied", "audit": "denied", "who": "user:user123",
     "what": "GET /api/logs/stream", "rule": "workspace", "status": 403, "via": "http",
     "remote": "127.0.0.1", "reason": "user 'user123' may not read logs:etl:workspace456"}
"""

from __future__ import annotations

import logging
import re

__all__ = ["ANONYMOUS", "AUDIT_LOGGER", "MAX_FIELD_CHARS", "denied", "mask_secrets"]

AUDIT_LOGGER = "logstream.audit"
# ``who`` of a request that named no identity, or one that did not verify.
ANONYMOUS = "anonymous"
# Enough for any route, channel list or error sentence we write; a path or user id longer than
# this is an attack on the log itself, not information.
MAX_FIELD_CHARS = 512

# A JWT: three base64url parts, the first a JSON header ("eyJ" is '{"' encoded).
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_QUERY_TOKEN = re.compile(r"(access_token=)[^&\s]*", re.IGNORECASE)
_MASK = "[redacted]"

_log = logging.getLogger(AUDIT_LOGGER)


def mask_secrets(text: object) -> str:
    """``text`` without JWT-shaped strings or ``access_token=`` values, at most
    ``MAX_FIELD_CHARS`` long."""
    text = _QUERY_TOKEN.sub(r"\g<1>" + _MASK, _JWT.sub(_MASK, str(text)))
    return text if len(text) <= MAX_FIELD_CHARS else text[: MAX_FIELD_CHARS - 3] + "..."


def denied(
    *,
    who: str,
    what: str,
    rule: str,
    status: int | None = None,
    via: str = "http",
    remote: str | None = None,
    reason: str = "",
) -> None:
    """Log one denial: ``who`` (``user:<id>``, ``token:<name>``, ``nats:<user>`` or
    ``anonymous``), ``what`` (``POST /api/logs/publish``, a channel, a subject), ``rule``."""
    _log.warning(
        "denied",
        extra={
            "audit": "denied",
            "who": mask_secrets(who),
            "what": mask_secrets(what),
            "rule": mask_secrets(rule),
            "status": status,
            "via": via,
            "remote": remote,
            "reason": mask_secrets(reason),
        },
    )
