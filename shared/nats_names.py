"""The names Logstream uses on NATS (the stream, its subjects, each role's inbox prefix) and how
a NATS server list is shown in a log line.

Nothing here needs nats-py, so the client (``logstream.shared.ingest_client``, ``logstream up``)
shares these names with the services without pulling the broker link in.
"""

from __future__ import annotations

import re

__all__ = [
    "INGEST_SUBJECT",
    "LIVE_PREFIX",
    "LIVE_SUBJECTS",
    "LOGS_SUBJECTS",
    "REJECTED_SUBJECT",
    "STREAM_NAME",
    "inbox_prefix",
    "redact_url",
]

STREAM_NAME = "LOGS"
LOGS_SUBJECTS = "logs.>"
# The stream republishes every record it stores under this prefix (``live.logs.etl.ws1.wf1``),
# with its seq and the previous seq on its subject in headers: gateways subscribe to exactly
# the subjects their connections watch (logstream.services.gateway.live). Only the broker publishes here.
LIVE_PREFIX = "live"
LIVE_SUBJECTS = f"{LIVE_PREFIX}.{LOGS_SUBJECTS}"
INGEST_SUBJECT = "ingest.logs"
REJECTED_SUBJECT = "ingest.rejected"


def inbox_prefix(role: str) -> str:
    """A role's own inbox prefix: its replies and push deliveries come to ``<prefix>.>``."""
    return f"_INBOX_{role}"


def redact_url(url: str) -> str:
    """A server list fit for a log line: a password, or a token (``nats://TOKEN@host``), in it
    replaced by ``***``."""

    def mask(found: re.Match[str]) -> str:
        user, colon, _ = found.group(1).partition(":")
        return f"//{user}:***@" if colon else "//***@"

    return ",".join(re.sub(r"//([^@/]*)@", mask, part) for part in url.split(","))
