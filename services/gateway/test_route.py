"""Dev mode's ``POST /test/logs``: one test record, through ingest like any other.

The gateway does not write to the log itself (only ingest does): it sends the record to
``ingest.logs`` as a NATS request with the dev service token that covers the channel, and
answers with ingest's reply, so every section 4 rule applies.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from logstream.shared.channels import parse_channel
from logstream.shared.errors import BrokerUnavailable, InvalidChannel, InvalidRequest
from logstream.shared.identities import DEV_SERVICE_TOKENS
from logstream.shared.nats_link import NatsLink
from logstream.shared.nats_names import INGEST_SUBJECT
from logstream.shared.settings import ServiceSettings

__all__ = ["SEED_CHANNEL", "publish_test_record"]

SEED_CHANNEL = "logs:etl:workspace123:workflow456"
# Ingest confirms after JetStream does; this covers a loaded machine.
REQUEST_TIMEOUT_S = 5.0


class _TestBody(msgspec.Struct, forbid_unknown_fields=True):
    channel: str = SEED_CHANNEL
    message: str | None = None
    level: str = "info"


def _dev_token_for(channel: str, services) -> str:
    parsed = parse_channel(channel, services)
    for secret, grants in DEV_SERVICE_TOKENS.items():
        if any(grant == f"logs:{parsed.service}" for grant in grants):
            return secret
    raise InvalidRequest(f"no dev service token covers {channel!r}")


async def publish_test_record(link: NatsLink, settings: ServiceSettings, body: bytes):
    try:
        test = msgspec.json.decode(body or b"{}", type=_TestBody)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f'body must be JSON like {{"channel": ..., "message": ...}}: {exc}'
        ) from None
    try:
        token = _dev_token_for(test.channel, settings.service_names)
    except InvalidChannel as exc:
        raise InvalidRequest(exc.message, details=[{"field": "channel"}]) from None
    record: dict[str, Any] = {
        "channel": test.channel,
        "message": test.message or f"test record from the gateway at {time.strftime('%H:%M:%S')}",
        "level": test.level,
        "source": "gateway.test",
    }
    try:
        reply = await link.nc.request(
            INGEST_SUBJECT,
            msgspec.json.encode(record),
            timeout=REQUEST_TIMEOUT_S,
            headers={"Authorization": f"Bearer {token}"},
        )
    except (NoRespondersError, NatsTimeout):
        raise BrokerUnavailable("ingest did not answer on NATS; is it running?") from None
    answer = msgspec.json.decode(reply.data)
    status = int(answer.pop("status", 502))
    return status, answer
