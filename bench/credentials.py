"""Every identity the benchmark uses, in one place.

The bench writes ``logs.>`` as the NATS user ingest connects as (``JETSTREAM_WRITER``), and
publishes to ``ingest.logs`` as a producer; each may subscribe to replies only under its own
inbox prefix. If the dev NATS users change again, this block is the one place to follow them.
"""

from __future__ import annotations

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.identities import DEV_NATS_PRODUCER as NATS_PRODUCER
from logstream.shared.user_tokens import UserTokens

try:  # one NATS user per role (logstream.shared.nats_permissions), each with its own reply inbox
    from logstream.shared.identities import DEV_NATS_INGEST as JETSTREAM_WRITER
    from logstream.shared.nats_names import inbox_prefix

    WRITER_INBOX, PRODUCER_INBOX = inbox_prefix("ingest"), inbox_prefix("producer")
except ImportError:  # before the split: one services user, replies anywhere under _INBOX
    # An older logstream than the one checked here: mypy sees neither the name nor the redefinition.
    from logstream.shared.identities import (  # type: ignore[attr-defined, no-redef]
        DEV_NATS_SERVICE as JETSTREAM_WRITER,
    )

    WRITER_INBOX = PRODUCER_INBOX = "_INBOX"

__all__ = [
    "JETSTREAM_WRITER",
    "NATS_PRODUCER",
    "PRODUCER_INBOX",
    "SERVICE_TOKEN",
    "WORKSPACE",
    "WRITER_INBOX",
    "nats_url_as",
    "user_token",
]

# A dev-mode service token granted `logs:etl` (docs/reference/identities.md).
SERVICE_TOKEN = "l5-etl-token"
# Every benchmark channel lives in this dev user's workspace: logs:etl:<WORKSPACE>:<name>.
WORKSPACE = "workspace123"
_USER = "user123"


def user_token() -> str:
    """A dev user JWT that may read every channel of ``WORKSPACE``."""
    return UserTokens(DEV_JWT_SECRET).issue(_USER, [WORKSPACE])


def nats_url_as(url: str, user_pass: tuple[str, str]) -> str:
    user, password = user_pass
    return url.replace("nats://", f"nats://{user}:{password}@", 1)
