"""The services' link to NATS: who it logs in as, a bounded first connect, endless reconnects,
and the LOGS stream.

A service must fail fast when the broker is not there at start (``connect_timeout``), but once
it has connected it keeps reconnecting for ever, and reports its state so ``/ready`` can say
503 while the link is down.

Each service connects as its own NATS role (``ingest``, ``gateway``): in dev mode as that role's
built-in user unless a login is given (credentials in the URL, user/password, a ``.creds`` file
or an nkey seed file), and always with the role's own inbox prefix (``_INBOX_<role>``), so a
broker can let each user subscribe to its own replies and deliveries and no one else's
(logstream.shared.nats_permissions). A permissions violation the broker reports on a service's connection
is one audit line (``rule="nats_permissions"``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RePublish, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from logstream.shared import audit
from logstream.shared.errors import BrokerUnavailable
from logstream.shared.identities import DEV_NATS_USERS
from logstream.shared.nats_names import (
    LIVE_SUBJECTS,
    LOGS_SUBJECTS,
    STREAM_NAME,
    inbox_prefix,
    redact_url,
)
from logstream.shared.settings import ServiceSettings

__all__ = [
    "NatsLink",
    "broker_options",
    "connect_options",
    "ensure_stream",
    "nats_login_name",
    "permission_auditor",
    "role_of",
    "settle",
]

# Reconnect quickly: a broker restart should cost a browser a second, not a minute.
RECONNECT_WAIT_S = 0.5
# Publishes made while the link is down are buffered up to this much, then refused.
PENDING_BYTES = 8 * 1024 * 1024
# Consumers the LOGS stream allows at once (``ensure_stream``).
LOGS_MAX_CONSUMERS = 10_000
# How nats-server words a refused PUB or SUB: 'Permissions Violation for Publish to "logs.x"'.
# nats-py 2.16 lowercases that text before error_cb sees it, subject included, so an audit
# line's ``what`` is the subject in lower case.
_VIOLATION = re.compile(r"permissions violation for (\w+) to \"([^\"]*)\"", re.IGNORECASE)

log = logging.getLogger("logstream.nats")
ErrorCallback = Callable[[Exception], Awaitable[None]]


def role_of(settings: ServiceSettings) -> str:
    """The NATS role a service connects as: its Settings' ``nats_role``, else its package name
    (``logstream.services.gateway.settings`` -> ``gateway``); empty for settings of no service."""
    if settings.nats_role:
        return settings.nats_role
    parts = type(settings).__module__.split(".")
    return parts[2] if len(parts) == 4 and parts[:2] == ["logstream", "services"] else ""


def _login(settings: ServiceSettings) -> dict[str, Any]:
    """The one login ``settings.check`` allowed, as ``nats.connect`` keywords."""
    if settings.nats_creds_file:
        return {"user_credentials": settings.nats_creds_file}
    if settings.nats_nkey_file:
        return {"nkeys_seed": settings.nats_nkey_file}
    if settings.nats_user:
        return {"user": settings.nats_user, "password": settings.nats_password}
    if any(urlparse(url).username for url in settings.nats_servers):
        return {}  # the URL's own credentials
    dev_user = DEV_NATS_USERS.get(role_of(settings)) if settings.dev else None
    if dev_user:  # outside dev mode there is no default login
        return {"user": dev_user[0], "password": dev_user[1]}
    return {}


def nats_login_name(settings: ServiceSettings) -> str:
    """Who the broker sees, for audit lines: a user name, an nkey, or the creds file's name."""
    login = _login(settings)
    if "user" in login:
        return login["user"]
    if "nkeys_seed" in login:
        return _public_nkey(login["nkeys_seed"])
    if "user_credentials" in login:
        return f"creds:{Path(login['user_credentials']).name}"
    url_users = [urlparse(url).username for url in settings.nats_servers]
    return next((user for user in url_users if user), "anonymous")


def _public_nkey(seed_file: str) -> str:
    try:
        import nkeys

        return nkeys.from_seed(Path(seed_file).read_bytes().strip()).public_key.decode()
    except Exception:  # unreadable or not a seed: the connect itself will say so
        return f"nkey:{Path(seed_file).name}"


def connect_options(settings: ServiceSettings, *, name: str) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect``: servers, login, inbox prefix, reconnects."""
    options: dict[str, Any] = {
        "servers": settings.nats_servers,
        "name": name,
        "connect_timeout": min(settings.connect_timeout, 2.0),
        "reconnect_time_wait": RECONNECT_WAIT_S,
        "max_reconnect_attempts": -1,
        "pending_size": PENDING_BYTES,
        **_login(settings),
    }
    role = role_of(settings)
    if role:
        options["inbox_prefix"] = inbox_prefix(role)
    return options


def broker_options(settings: ServiceSettings, *, name: str) -> dict[str, Any]:
    """The same for FastStream's ``NatsBroker``: the login as its ``security=`` object, and an
    error callback that audits permission violations."""
    from faststream.nats.security import NatsCredentials, NatsNKey, NatsUserPassword

    options = connect_options(settings, name=name)
    if "user_credentials" in options:
        options["security"] = NatsCredentials.from_file(options.pop("user_credentials"))
    elif "nkeys_seed" in options:
        options["security"] = NatsNKey.from_file(options.pop("nkeys_seed"))
    elif "user" in options:
        options["security"] = NatsUserPassword(options.pop("user"), options.pop("password"))
    options["error_cb"] = permission_auditor(settings)
    return options


def permission_auditor(
    settings: ServiceSettings, then: ErrorCallback | None = None
) -> ErrorCallback:
    """An ``error_cb`` writing one audit line per permissions violation, then calling ``then``
    (or logging the error at debug level)."""
    who = f"nats:{nats_login_name(settings)}"

    async def on_error(exc: Exception) -> None:
        found = _VIOLATION.search(str(exc))
        if found:
            action, subject = found.groups()
            audit.denied(
                who=who,
                what=subject,
                rule="nats_permissions",
                via="nats",
                reason=f"the broker refused {action.lower()} to {subject}",
            )
        if then is not None:
            await then(exc)
        else:
            log.debug("nats: %s", exc)

    return on_error


class NatsLink:
    """One connection with JetStream, tracking whether the broker currently answers."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5)
        self._disconnect_listeners: list[Callable[[], None]] = []

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

        listeners: list[Callable[[], None]] = []

        async def disconnected() -> None:
            for listener in listeners:
                listener()
            if not nc.is_closed and not nc.is_draining:
                log.warning("broker link down; reconnecting")

        async def reconnected() -> None:
            log.info("broker link back")

        options = connect_options(settings, name=name)
        options.setdefault("error_cb", permission_auditor(settings, quiet_error))
        options.setdefault("disconnected_cb", disconnected)
        options.setdefault("reconnected_cb", reconnected)
        options.update(callbacks)
        nc = nats.NATS()
        try:
            await asyncio.wait_for(
                _first_of(nc.connect(**options), refused), settings.connect_timeout
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            # A timeout hides why: name what the broker last said (e.g. Authorization Violation).
            reason = last_error[0] if last_error else exc
            raise BrokerUnavailable(
                f"cannot reach NATS at {redact_url(settings.nats_url)} as "
                f"{nats_login_name(settings)} (nats_url, LOGSTREAM_NATS_URL; waited up to "
                f"{settings.connect_timeout:g}s): {type(reason).__name__} {reason}"
            ) from None
        link = cls(nc)
        link._disconnect_listeners = listeners
        return link

    def on_disconnect(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` each time the link drops (before it reconnects): whatever the broker
        sent meanwhile is lost to this connection's subscriptions."""
        self._disconnect_listeners.append(listener)

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), 2.0)
            except Exception:  # draining is a courtesy; closing must not fail shutdown
                await self.nc.close()


async def settle(nc: Client, timeout: int = 10) -> None:
    """Return once the broker has handled every SUB, UNSUB and PUB ``nc`` sent before.

    nats-py's ``flush()`` (2.16, and its main branch) writes its PING straight to the socket,
    while SUB, UNSUB and PUB lines wait in the client's buffer for its flusher task: one flush
    can be answered before the broker has a SUB sent just before it, and a message another
    client publishes next is then not delivered. The flusher writes the buffer while the first
    flush waits for its PONG, so the second PING goes after it."""
    await nc.flush(timeout)
    await nc.flush(timeout)


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
    """Create the LOGS stream, or bring an existing one's retention (and its live republish,
    which gateways read, and atomic batches) in line with the settings."""
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
        # Atomic batch publish (nats-server 2.12+; older servers ignore it): ingest writes a
        # batch as one, which the broker stores whole and, under sync_interval: always, with
        # one fsync instead of one per record.
        allow_atomic=True,
        republish=RePublish(src=LOGS_SUBJECTS, dest=LIVE_SUBJECTS),
        # Explicit: nats-server 2.15 gives a stream without one a limit of 1,000 (and takes
        # -1 as "its default", not "unlimited"). Gateways' consumers are short-lived (counts,
        # replays, history pages), but a reconnect storm on several gateways makes many at once.
        max_consumers=LOGS_MAX_CONSUMERS,
    )
    try:
        current = await js.stream_info(name)
    except NotFoundError:
        info = await js.add_stream(config)
        log.info("created stream %s", name)
        return info.config
    try:
        info = await js.update_stream(config)
    except BadRequestError as exc:
        # A broker that cannot change an existing stream's consumer limit (before 2.14) keeps
        # the one it has; everything else is brought in line.
        if "consumer" not in str(exc.description).lower():
            raise
        log.warning(
            "stream %s keeps max_consumers %s (this broker cannot change it: %s)",
            name,
            current.config.max_consumers,
            exc.description,
        )
        config.max_consumers = current.config.max_consumers
        info = await js.update_stream(config)
    return info.config
