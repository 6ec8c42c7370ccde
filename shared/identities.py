"""Dev-mode identities (docs/reference/identities.md) and the parsers of `Authorization` (Bearer;
Basic for a service token).

Service tokens live in ``logstream.shared.service_tokens``, user tokens in ``logstream.shared.user_tokens``.
Dev mode has built-in, deterministic identities so that every process started in dev mode, by
  ``logstream up`` or by hand, accepts the same tokens. They never exist outside dev mode.
"""

from __future__ import annotations

import base64

from logstream.shared.channels import WILDCARD

__all__ = [
    "DEV_JWT_SECRET",
    "DEV_NATS_GATEWAY",
    "DEV_NATS_INGEST",
    "DEV_NATS_PRODUCER",
    "DEV_NATS_USERS",
    "DEV_SERVICE_TOKENS",
    "DEV_USERS",
    "DEV_USER_TOKEN_TTL_S",
    "basic_password",
    "bearer_token",
    "service_credential",
]

# Dev-mode identities. Public by design: they exist only when a service runs with --dev.
DEV_SERVICE_TOKENS: dict[str, tuple[str, ...]] = {
    "l5-etl-token": ("logs:etl",),
    "faas-token": ("logs:faas",),
    "analytics-token": ("logs:analytics",),
    "platform-token": ("logs:platform",),
}
DEV_USERS: dict[str, tuple[str, ...]] = {
    "user123": ("workspace123",),
    "user456": ("workspace456",),
    "admin": (WILDCARD,),
}
DEV_JWT_SECRET = "logstream-dev-only-jwt-secret-never-use-in-production"
# The embedded broker's NATS users (user, password), one per role, each allowed only what that
# role does (logstream.shared.nats_permissions): ingest writes logs.>, the gateway reads the stream, a
# producer may only publish to ingest.logs (docs/reference/ingest.md#nats names its password).
DEV_NATS_INGEST = ("ingest", "ingest-dev")
DEV_NATS_GATEWAY = ("gateway", "gateway-dev")
DEV_NATS_PRODUCER = ("producer", "producer")
DEV_NATS_USERS: dict[str, tuple[str, str]] = {
    "ingest": DEV_NATS_INGEST,
    "gateway": DEV_NATS_GATEWAY,
    "producer": DEV_NATS_PRODUCER,
}
# Dev user tokens live half a working day: long enough for a demo, short enough to expire.
DEV_USER_TOKEN_TTL_S = 12 * 3600


def service_credential(authorization: str | None, service_token: str | None = None) -> str | None:
    """The service token a producer presents over HTTP: ``Authorization: Bearer <token>``; or
    HTTP Basic whose password is the token (what Loki clients and Grafana agents send; the user
    name is not read); else the ``X-Service-Token`` header."""
    return bearer_token(authorization) or basic_password(authorization) or service_token or None


def basic_password(authorization: str | None) -> str | None:
    """The password of ``Authorization: Basic <base64 user:password>``; ``None`` otherwise."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon and password else None


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``; ``None`` for any other header or none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
