"""The two ways into ingest: HTTP ``POST /api/logs/publish`` and NATS requests on ``ingest.logs``.

Both take a service token and a JSON body (one record or an array) and return the ingest's
answer as a ``Reply``: its status and JSON body (docs/reference/ingest.md and docs/reference/ingest.md#nats). A request that
never got an answer raises ``TransportFailed``; ``unreachable`` says nothing reached ingest at
all (refused connection, no NATS responder), which the runner treats as "ingest is not there".
"""

from __future__ import annotations

import asyncio
import math
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import msgspec

from logstream.shared.nats_names import INGEST_SUBJECT, inbox_prefix, redact_url

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = [
    "CONNECT_TIMEOUT_S",
    "PUBLISH_PATH",
    "HttpTransport",
    "NatsTransport",
    "Reply",
    "Transport",
    "TransportFailed",
    "describe_error",
    "open_transport",
    "redact_url",
]

PUBLISH_PATH = "/api/logs/publish"
# An unreachable ingest or broker must fail the run in seconds, not after a client's default
# two minutes of reconnecting.
CONNECT_TIMEOUT_S = 3.0
# Ingest answers once JetStream confirms (its own publish timeout is 2 s); a batch of 1,000
# on a busy machine may take a few seconds more.
REQUEST_TIMEOUT_S = 15.0
# docs/reference/ingest.md: 1 MiB bodies by default. Stay clear of it (and of NATS's default 1 MiB
# max_payload) so that a batch of records with long stack traces is never refused as too big.
MAX_BODY_BYTES = 768 * 1024
_DECODE = msgspec.json.Decoder()


class TransportFailed(Exception):
    """No answer from ingest. ``unreachable``: the request certainly never reached it."""

    def __init__(self, message: str, *, unreachable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.unreachable = unreachable


class Reply(msgspec.Struct, frozen=True):
    """Ingest's answer: the HTTP status (or the NATS reply's ``status``) and the JSON body."""

    status: int
    body: dict[str, Any]
    retry_after: float | None = None

    @property
    def error(self) -> str:
        return str(self.body.get("error") or "")

    @property
    def message(self) -> str:
        return str(self.body.get("message") or "")


class Transport(Protocol):
    name: str
    max_batch_records: int
    max_batch_bytes: int
    in_flight: int

    async def publish(self, token: str, body: bytes) -> Reply: ...

    async def close(self) -> None: ...


def _body_of(content: bytes) -> dict[str, Any]:
    try:
        body = _DECODE.decode(content)
    except msgspec.DecodeError:
        text = content.decode(errors="replace").strip()
        return {"message": text[:300] or "(empty body)"}
    return body if isinstance(body, dict) else {"message": str(body)[:300]}


def _retry_after(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None  # an HTTP date, or nothing: the runner's own backoff applies
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class HttpTransport:
    name = "http"
    max_batch_records = 1000  # docs/reference/ingest.md's batch limit
    max_batch_bytes = MAX_BODY_BYTES
    # A few requests in flight keep ingest busy without queueing behind one another.
    in_flight = 4

    def __init__(self, base_url: str) -> None:
        self.url = base_url.rstrip("/") + PUBLISH_PATH
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=self.in_flight * 2),
        )

    async def publish(self, token: str, body: bytes) -> Reply:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise TransportFailed(
                f"cannot connect to ingest at {redact_url(self.url)}: {describe_error(exc)}",
                unreachable=True,
            ) from None
        except httpx.TimeoutException:
            raise TransportFailed(
                f"no answer from {redact_url(self.url)} within {REQUEST_TIMEOUT_S:g} s",
                unreachable=False,
            ) from None
        except httpx.HTTPError as exc:
            raise TransportFailed(
                f"request to {redact_url(self.url)} failed: {describe_error(exc)}",
                unreachable=False,
            ) from None
        return Reply(
            response.status_code,
            _body_of(response.content),
            _retry_after(response.headers.get("retry-after")),
        )

    async def close(self) -> None:
        await self._client.aclose()


def _nats() -> ModuleType:
    """nats-py, which only this transport needs (the client installs it with its ``nats`` extra)."""
    try:
        import nats
        import nats.errors
    except ImportError:
        raise TransportFailed(
            "the NATS transport needs nats-py: pip install 'logstream-client[nats]'",
            unreachable=True,
        ) from None
    return nats


class NatsTransport:
    name = "nats"
    max_batch_records = 250  # several smaller requests in flight spread over ingest instances
    in_flight = 8

    def __init__(self, nc: Client, url: str) -> None:
        self._nc = nc
        self.url = url
        self.max_batch_bytes = min(MAX_BODY_BYTES, nc.max_payload * 3 // 4)

    @classmethod
    async def connect(
        cls, url: str, *, timeout: float = CONNECT_TIMEOUT_S, name: str = "logstream-simulator"
    ) -> NatsTransport:
        """Connect as a producer or raise ``TransportFailed`` naming the URL: within
        ``timeout``, and at once when every server has refused a first attempt."""
        servers = [part.strip() for part in url.split(",") if part.strip()]
        problems: list[str] = []
        refused_by_all = asyncio.Event()

        async def remember(exc: Exception) -> None:
            if not refused_by_all.is_set():
                problems.append(describe_error(exc))
                if len(problems) >= len(servers):
                    refused_by_all.set()

        nats = _nats()
        connecting = asyncio.ensure_future(
            nats.connect(
                servers=servers,
                name=name,
                error_cb=remember,
                inbox_prefix=inbox_prefix("producer"),
                connect_timeout=timeout,
                reconnect_time_wait=0.5,
                max_reconnect_attempts=-1,
            )
        )
        failing = asyncio.ensure_future(refused_by_all.wait())
        await asyncio.wait(
            {connecting, failing}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        failing.cancel()
        if connecting.done() and connecting.exception() is None:
            refused_by_all.set()  # from now on the client reconnects quietly on its own
            return cls(connecting.result(), url)
        connecting.cancel()
        outcome = (await asyncio.gather(connecting, return_exceptions=True))[0]
        if problems:
            reason = problems[-1]
        elif isinstance(outcome, asyncio.CancelledError):
            reason = f"no answer within {timeout:g} s"
        else:
            reason = describe_error(outcome)
        raise TransportFailed(f"cannot reach NATS at {redact_url(url)}: {reason}", unreachable=True)

    async def publish(self, token: str, body: bytes) -> Reply:
        headers = {"Authorization": f"Bearer {token}"}
        nats = _nats()
        try:
            msg = await self._nc.request(
                INGEST_SUBJECT, body, timeout=REQUEST_TIMEOUT_S, headers=headers
            )
        except nats.errors.NoRespondersError:
            raise TransportFailed(
                f"no ingest is listening on {INGEST_SUBJECT} at "
                f"{redact_url(self.url)} (no responders)",
                unreachable=True,
            ) from None
        except (TimeoutError, nats.errors.TimeoutError):
            raise TransportFailed(
                f"no reply on {INGEST_SUBJECT} within {REQUEST_TIMEOUT_S:g} s", unreachable=False
            ) from None
        except nats.errors.Error as exc:
            raise TransportFailed(
                f"NATS request on {INGEST_SUBJECT} failed: {describe_error(exc)}", unreachable=False
            ) from None
        answer = _body_of(msg.data)
        status = answer.get("status")
        if not isinstance(status, int):
            return Reply(
                502,
                {
                    "error": "bad_reply",
                    "message": "ingest replied without a status: "
                    + msg.data[:200].decode(errors="replace"),
                },
            )
        header = _header(msg.headers, "Retry-After")
        return Reply(
            status,
            answer,
            _retry_after(header if header is not None else answer.get("retry_after")),
        )

    async def close(self) -> None:
        if not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.drain(), 2.0)
            except Exception:  # draining is a courtesy; closing must not hide the summary
                await self._nc.close()


def _header(headers: dict[str, str] | None, name: str) -> str | None:
    """NATS headers are case-sensitive on the wire; match the name in any case."""
    lowered = name.lower()
    return next((v for k, v in (headers or {}).items() if k.lower() == lowered), None)


def describe_error(exc: BaseException) -> str:
    """An exception as a person reads it: its type, and its words when it has any."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def open_transport(via: str, *, ingest_url: str, nats_url: str) -> Transport:
    if via == "http":
        return HttpTransport(ingest_url)
    if via == "nats":
        return await NatsTransport.connect(nats_url)
    raise ValueError(f"unknown transport {via!r} (http or nats)")
