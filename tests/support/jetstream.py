"""Reading what really reached the LOGS stream: tests trust JetStream, never a 202."""

from __future__ import annotations

import json

from nats.js.errors import NotFoundError

from logstream.shared.nats_names import STREAM_NAME


async def stored(js, subjects: str) -> list[tuple[int, str, dict]]:
    """Every record stored under ``subjects`` (a NATS filter), as (seq, subject, record)."""
    found: list[tuple[int, str, dict]] = []
    seq = 0
    while True:
        try:
            msg = await js.get_msg(STREAM_NAME, seq=seq + 1, subject=subjects, next=True)
        except NotFoundError:
            return found
        found.append((msg.seq, msg.subject, json.loads(msg.data)))
        seq = msg.seq
