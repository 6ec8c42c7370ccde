"""Who is asking: the user's credential, verified, and the guards built on it (docs/reference/stream.md).

The credential comes from ``Authorization: Bearer``, else the ``logstream_session`` cookie,
else (dev mode only) the ``access_token`` query parameter. The identity comes from the verified
token alone; ``X-User-Id``/``X-Workspace-Id`` are recorded by the stream handler, never
trusted. With an auth callout (``logstream.services.gateway.callout``), a request whose
credential is no Logstream token that verifies is answered by the product's backend instead.
Each guard records who asked (``connection.state.audit_who``) as soon as it knows, so
a later denial's audit line names them (``logstream.shared.web``).
"""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from logstream.services.gateway.callout import AuthCallout
from logstream.services.gateway.settings import Settings
from logstream.services.gateway.user_keys import fetch_at_start
from logstream.shared.errors import Forbidden, Unauthenticated
from logstream.shared.identities import bearer_token
from logstream.shared.user_tokens import ClaimMap, KeySet, UserIdentity, UserTokens, read_key_file

__all__ = [
    "ADMIN_TOKEN_WHO",
    "SESSION_COOKIE",
    "credential_of",
    "require_admin",
    "require_user",
    "user_tokens_for",
]

SESSION_COOKIE = "logstream_session"
# How the audit log names a request that presented the configured admin token.
ADMIN_TOKEN_WHO = "token:admin"


def user_tokens_for(settings: Settings) -> UserTokens:
    """The verifier the settings describe: the JWKS endpoint's keys (fetched now, blocking:
    call it before the event loop runs), a key file's, else a secret (the dev one in dev).

    Keeping a JWKS endpoint's keys fresh is ``logstream.services.gateway.user_keys``' job."""
    keys: KeySet | None = None
    if settings.jwt_jwks_url:
        keys = fetch_at_start(settings.jwt_jwks_url)
    elif settings.jwt_public_key_file:
        keys = read_key_file(settings.jwt_public_key_file)
    return UserTokens(
        settings.user_token_secret or None,
        keys=keys,
        audience=settings.jwt_audience or None,
        issuer=settings.jwt_issuer or None,
        leeway_s=settings.jwt_leeway,
        claims=ClaimMap(
            user=settings.jwt_user_claim,
            workspaces=settings.jwt_workspaces_claim,
            workspace_prefix=settings.jwt_workspace_prefix,
            roles=settings.jwt_roles_claim,
        ),
    )


def credential_of(connection: ASGIConnection, *, query_tokens: bool) -> str | None:
    header = connection.headers.get("authorization")
    if header:
        token = bearer_token(header)
        if token is None:
            raise Unauthenticated(
                "the Authorization header must be 'Bearer <token>'", rule="no_credential"
            )
        return token
    cookie = connection.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie
    query = connection.query_params.get("access_token")
    if query:
        if not query_tokens:
            raise Unauthenticated(
                "access_token in the query is disabled here (URLs end up in logs); "
                "send the token in the Authorization: Bearer header or the "
                f"{SESSION_COOKIE} cookie",
                rule="query_token_disabled",
            )
        return query
    return None


async def _verified(connection: ASGIConnection, credential: str | None) -> UserIdentity:
    tokens: UserTokens | None = connection.app.state.user_tokens
    if tokens is None:
        raise Unauthenticated(
            "this gateway takes no Logstream tokens; sign in to the product", rule="no_credential"
        )
    # Awaits a fetch of the JWKS only for a kid not held (rate-limited: user_keys.py).
    user = await tokens.verify_current(credential)
    connection.state.audit_who = f"user:{user.user_id}"
    return user


def _credential(connection: ASGIConnection) -> str | None:
    settings: Settings = connection.app.state.settings
    return credential_of(connection, query_tokens=settings.accepts_query_token)


# Guards are coroutines: Litestar runs a plain function guard in its thread pool, a thread hop
# per stream opened (a quarter of a churning gateway's CPU); verifying a token is microseconds,
# and awaits nothing unless the token names a key not held yet (a JWKS fetch).
async def require_user(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: a verified user token, else the auth callout's word; the identity is kept on the
    connection's state (and, from the callout, how to ask again: ``callout_renewal``)."""
    callout: AuthCallout | None = connection.app.state.get("callout")
    if callout is None:
        connection.state.user = await _verified(connection, _credential(connection))
        return
    refused: Unauthenticated | None = None
    try:
        credential = _credential(connection)
        if credential is not None and connection.app.state.user_tokens is not None:
            connection.state.user = await _verified(connection, credential)
            return
    except Unauthenticated as exc:  # not our token (the product's own): the backend may know
        refused = exc
    forwarded = callout.forwarded(connection.headers)
    if not forwarded:
        raise refused or Unauthenticated(
            "no credential: sign in to the product (its session cookie), or send a user token "
            "(Authorization: Bearer)",
            rule="no_credential",
        )
    host = connection.client.host if connection.client else None
    user = await callout.identify(forwarded, client_host=host)
    connection.state.audit_who = f"user:{user.user_id}"
    connection.state.user = user
    connection.state.callout_renewal = callout.renewal(forwarded, client_host=host)


def _is_admin_token(credential: str, admin_token: str) -> bool:
    # Constant time: how far a guess matches must not show in how long the answer takes.
    return bool(admin_token) and hmac.compare_digest(credential.encode(), admin_token.encode())


async def require_admin(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: open in dev mode; elsewhere the admin token, or a user token with the admin role."""
    settings: Settings = connection.app.state.settings
    if settings.dev:
        return
    credential = _credential(connection)
    if credential is None:
        raise Unauthenticated(
            "an admin credential is required (a user token with the admin "
            "role, or the admin token, as Authorization: Bearer)",
            rule="no_credential",
        )
    if _is_admin_token(credential, settings.admin_token):
        connection.state.audit_who = ADMIN_TOKEN_WHO
        return
    user = await _verified(connection, credential)
    if not user.is_admin:
        raise Forbidden(
            f"user {user.user_id!r} lacks the admin role this route needs", rule="admin_only"
        )
