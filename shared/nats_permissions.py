"""What each NATS user may do: least privilege per role, enforced by the broker (docs/reference/ingest.md#nats).

``logstream up``'s embedded broker, the compose file's NATS and SECURITY.md's production mapping
all take their users from here. Each role may publish and subscribe to what it uses and nothing
else, and subscribes to replies and deliveries only under its own inbox prefix
(``logstream.shared.nats_link.inbox_prefix``): a producer allowed ``_INBOX.>`` would receive the
gateway's stream deliveries and every other client's replies.

- ``producer``: publish ``ingest.logs``; receive ingest's replies.
- ``ingest``: consume ``ingest.logs`` in the ``ingest`` queue group; publish ``logs.>`` (the
  records it stored) and ``ingest.rejected``; create, update and look at the LOGS stream; answer
  requests (``allow_responses``: a reply may go only to a request it received).
- ``gateway``: read LOGS: look at it and its messages, create, inspect and delete the ephemeral
  consumers that follow it, answer their flow control; subscribe to the records the stream
  republishes (``live.logs.>``), by subject. In dev mode also request on
  ``ingest.logs`` (``POST /test/logs`` goes through ingest like any producer).

Nobody here may delete or purge the stream, create a durable consumer, or touch another stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from logstream.shared.identities import DEV_NATS_USERS
from logstream.shared.nats_names import (
    INGEST_SUBJECT,
    LIVE_SUBJECTS,
    LOGS_SUBJECTS,
    REJECTED_SUBJECT,
    STREAM_NAME,
    inbox_prefix,
)

__all__ = ["INGEST_QUEUE", "ROLES", "dev_users", "role_permissions"]

ROLES = ("producer", "ingest", "gateway")
# The queue group every ingest instance joins; ingest.logs may be consumed in it alone, so a
# stolen ingest login cannot quietly read every producer's messages on a plain subscription.
INGEST_QUEUE = "ingest"


def _js_api(stream: str, *calls: str) -> list[str]:
    return [f"$JS.API.{call.format(stream=stream)}" for call in calls]


def role_permissions(role: str, *, stream: str = STREAM_NAME, dev: bool = True) -> dict[str, Any]:
    """The nats-server ``permissions`` block of ``role`` (``dev``: with dev-mode routes)."""
    own_inbox = inbox_prefix(role) + ".>"
    if role == "producer":
        return {"publish": {"allow": [INGEST_SUBJECT]}, "subscribe": {"allow": [own_inbox]}}
    if role == "ingest":
        return {
            "publish": {
                "allow": [
                    LOGS_SUBJECTS,
                    REJECTED_SUBJECT,
                    # ensure_stream: look, then create or bring the retention in line; INFO is the
                    # account's JetStream status (the embedded cluster's readiness probe asks it).
                    *_js_api(
                        stream,
                        "INFO",
                        "STREAM.INFO.{stream}",
                        "STREAM.CREATE.{stream}",
                        "STREAM.UPDATE.{stream}",
                    ),
                ]
            },
            "subscribe": {"allow": [f"{INGEST_SUBJECT} {INGEST_QUEUE}", own_inbox]},
            "allow_responses": True,
        }
    if role == "gateway":
        publish = [
            # CONSUMER.CREATE without a name creates ephemeral consumers only (the broker
            # refuses a durable name there): ordered consumers, and the throw-away ones that
            # count records for `tail`. MSG.GET reads one record (tools, tests).
            *_js_api(
                stream,
                "STREAM.INFO.{stream}",
                "STREAM.MSG.GET.{stream}",
                # batched direct gets: the newest record of many channels at once (the
                # channel list), answered by any replica
                "DIRECT.GET.{stream}",
                "CONSUMER.CREATE.{stream}",
                "CONSUMER.INFO.{stream}.*",
                "CONSUMER.DELETE.{stream}.*",
            ),
            # flow control and stall replies of push consumers (not allow_responses: that
            # would make the broker track the ack reply of every record it delivers)
            f"$JS.FC.{stream}.>",
        ]
        if dev:
            publish.append(INGEST_SUBJECT)
        # LIVE_SUBJECTS: the records the stream republishes, by the subjects its streams watch
        return {"publish": {"allow": publish}, "subscribe": {"allow": [LIVE_SUBJECTS, own_inbox]}}
    raise ValueError(f"no NATS role {role!r} (one of {', '.join(ROLES)})")


def dev_users(extra: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """The embedded broker's ``authorization.users``: each role's dev user, then ``extra``
    entries as given (tests add users of their own this way; ``logstream up`` never does)."""
    users = [
        {"user": user, "password": password, "permissions": role_permissions(role)}
        for role, (user, password) in DEV_NATS_USERS.items()
    ]
    return users + [dict(entry) for entry in extra]
