"""The services' link to NATS: a bounded first connect, endless reconnects, and the LOGS stream.

A service must fail fast when the broker is not there at start (``connect_timeout``), but once
it has connected it keeps reconnecting for ever, and reports its state so ``/ready`` can say
503 while the link is down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from shared.errors import BrokerUnavailable
from shared.identities import DEV_NATS_SERVICE
from shared.settings import ServiceSettings

__all__ = [
    "INGEST_SUBJECT",
    "LOGS_SUBJECTS",
    "REJECTED_SUBJECT",
    "STREAM_NAME",
    "NatsLink",
    "connect_options",
    "ensure_stream",
]

STREAM_NAME = "LOGS"
LOGS_SUBJECTS = "logs.>"
INGEST_SUBJECT = "ingest.logs"
REJECTED_SUBJECT = "ingest.rejected"
# Reconnect quickly: a broker restart should cost a browser a second, not a minute.
RECONNECT_WAIT_S = 0.5
# Publishes made while the link is down are buffered up to this much, then refused.
PENDING_BYTES = 8 * 1024 * 1024

log = logging.getLogger("logstream.nats")


def connect_options(settings: ServiceSettings, *, name: str) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` (and FastStream's ``NatsBroker``)."""
    user, password = settings.nats_user, settings.nats_password
    if settings.dev and not user:
        user, password = DEV_NATS_SERVICE
    options: dict[str, Any] = {
        "servers": settings.nats_servers,
        "name": name,
        "connect_timeout": min(settings.connect_timeout, 2.0),
        "reconnect_time_wait": RECONNECT_WAIT_S,
        "max_reconnect_attempts": -1,
        "pending_size": PENDING_BYTES,
    }
    if user:
        options["user"], options["password"] = user, password
    return options


class NatsLink:
    """One connection with JetStream, tracking whether the broker currently answers."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5)

    @classmethod
    async def connect(cls, settings: ServiceSettings, *, name: str, **callbacks: Any):
        """Connect within ``connect_timeout`` or raise ``BrokerUnavailable`` naming the URL."""

        last_error: list[Exception] = []
        refused = asyncio.Event()

        async def quiet_error(exc: Exception) -> None:
            if refused.is_set():
                return  # keep the refusal: what follows it (a reset connection) says less
            last_error[:] = [exc]
            if "authorization violation" in str(exc).lower() and not nc.is_connected:
                refused.set()  # retrying will not change the broker's mind: fail now
            log.debug("nats: %s", exc)

        async def disconnected() -> None:
            if not nc.is_closed and not nc.is_draining:
                log.warning("broker link down; reconnecting")

        async def reconnected() -> None:
            log.info("broker link back")

        options = connect_options(settings, name=name)
        options.setdefault("error_cb", quiet_error)
        options.setdefault("disconnected_cb", disconnected)
        options.setdefault("reconnected_cb", reconnected)
        options.update(callbacks)
        nc = nats.NATS()
        try:
            await asyncio.wait_for(_first_of(nc.connect(**options), refused),
                                   settings.connect_timeout)
        except (asyncio.TimeoutError, OSError, nats.errors.Error) as exc:
            # A timeout hides why: name what the broker last said (e.g. Authorization Violation).
            reason = last_error[0] if last_error else exc
            raise BrokerUnavailable(
                f"cannot reach NATS at {settings.nats_url} (nats_url, LOGSTREAM_NATS_URL; "
                f"waited up to {settings.connect_timeout:g}s): {type(reason).__name__} {reason}"
            ) from None
        return cls(nc)

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), 2.0)
            except Exception:  # draining is a courtesy; closing must not fail shutdown
                await self.nc.close()


async def _first_of(connecting, refused: asyncio.Event) -> None:
    """Connect, unless the broker refuses the credentials first (then raise at once)."""
    connect = asyncio.ensure_future(connecting)
    refusal = asyncio.ensure_future(refused.wait())
    try:
        await asyncio.wait({connect, refusal}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (connect, refusal):
            if not task.done():
                task.cancel()
        await asyncio.gather(connect, refusal, return_exceptions=True)
    if connect.cancelled():  # the refusal came first
        raise nats.errors.Error("the broker refused the credentials")
    connect.result()  # the connect's own error, if it failed


async def ensure_stream(
    js: JetStreamContext,
    *,
    max_age_s: float,
    max_bytes: int,
    duplicate_window_s: float,
    replicas: int = 1,
    name: str = STREAM_NAME,
) -> StreamConfig:
    """Create the LOGS stream, or bring an existing one's retention in line with the settings."""
    config = StreamConfig(
        name=name,
        subjects=[LOGS_SUBJECTS],
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age_s,
        max_bytes=max_bytes,
        duplicate_window=duplicate_window_s,
        num_replicas=replicas,
        allow_direct=True,
    )
    try:
        await js.stream_info(name)
    except NotFoundError:
        info = await js.add_stream(config)
        log.info("created stream %s", name)
        return info.config
    info = await js.update_stream(config)
    return info.config
