"""User tokens (CONTRACT section 8): signed JWTs with ``sub`` and ``workspaces``.

The gateway authorises from the verified token alone; ``["*"]`` means every workspace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

import jwt

from shared.channels import WILDCARD, ChannelPattern
from shared.errors import SettingsError, Unauthenticated
from shared.identities import DEV_USER_TOKEN_TTL_S

__all__ = ["UserIdentity", "UserTokens"]

_JWT_ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class UserIdentity:
    user_id: str
    workspaces: frozenset[str]
    expires_at: float | None = None

    @property
    def is_admin(self) -> bool:
        return WILDCARD in self.workspaces

    def may_read(self, pattern: ChannelPattern) -> bool:
        """Every channel the pattern could match must lie in one of the user's workspaces."""
        if self.is_admin:
            return True
        return pattern.workspace != WILDCARD and pattern.workspace in self.workspaces


class UserTokens:
    """Issue (dev) and verify user JWTs with one shared secret."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise SettingsError("invalid setting jwt_secret: it must not be empty")
        self._secret = secret

    def issue(self, user_id: str, workspaces: Iterable[str], ttl_s: float = DEV_USER_TOKEN_TTL_S):
        now = int(time.time())
        claims = {"sub": user_id, "workspaces": list(workspaces), "iat": now,
                  "exp": now + int(ttl_s)}
        return jwt.encode(claims, self._secret, algorithm=_JWT_ALGORITHM)

    def verify(self, token: str | None) -> UserIdentity:
        if not token:
            raise Unauthenticated("a user token is required (Authorization: Bearer or cookie)")
        try:
            claims = jwt.decode(token, self._secret, algorithms=[_JWT_ALGORITHM],
                                options={"require": ["sub"]})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the user token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the user token is not valid: {exc}") from None
        workspaces = claims.get("workspaces")
        if not isinstance(workspaces, list) or not all(isinstance(w, str) for w in workspaces):
            raise Unauthenticated("the user token has no 'workspaces' list")
        exp = claims.get("exp")
        return UserIdentity(str(claims["sub"]), frozenset(workspaces),
                            float(exp) if isinstance(exp, (int, float)) else None)
