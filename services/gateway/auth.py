"""Who is asking: the user's credential, verified, and the guards built on it (CONTRACT 6).

The credential comes from ``Authorization: Bearer``, else the ``logstream_session`` cookie,
else (only where enabled: dev mode by default) the ``access_token`` query parameter. The
identity comes from the verified token alone; ``X-User-Id``/``X-Workspace-Id`` are recorded by
the stream handler, never trusted.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from shared.errors import Forbidden, Unauthenticated
from shared.identities import bearer_token
from shared.user_tokens import UserIdentity, UserTokens

__all__ = ["SESSION_COOKIE", "credential_of", "require_admin", "require_user"]

SESSION_COOKIE = "logstream_session"


def credential_of(connection: ASGIConnection, *, query_tokens: bool) -> str | None:
    header = connection.headers.get("authorization")
    if header:
        token = bearer_token(header)
        if token is None:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        return token
    cookie = connection.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie
    query = connection.query_params.get("access_token")
    if query:
        if not query_tokens:
            raise Unauthenticated(
                "access_token in the query is disabled here (URLs end up in logs); "
                "send Authorization: Bearer or the logstream_session cookie"
            )
        return query
    return None


def identify(connection: ASGIConnection) -> UserIdentity:
    state = connection.app.state
    tokens: UserTokens = state.user_tokens
    credential = credential_of(connection, query_tokens=state.settings.accepts_query_token)
    return tokens.verify(credential)


def require_user(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: a verified user token; the identity is kept on the connection's state."""
    connection.state.user = identify(connection)


def require_admin(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: open in dev mode; elsewhere a user token whose workspaces are ``["*"]``."""
    if connection.app.state.settings.dev:
        return
    user = identify(connection)
    if not user.is_admin:
        raise Forbidden("the stats need an admin token (workspaces [\"*\"])")
