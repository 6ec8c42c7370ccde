"""Who may do what (CONTRACT section 8): service tokens with channel grants, and user tokens.

- Service tokens are opaque secrets; only their SHA-256 is kept (token file or dev set). Each
  carries a name (recorded as a record's ``publisher``) and the grants it may publish under.
- Users carry a signed JWT (HS256) with ``sub`` and ``workspaces`` (``["*"]`` means all). The
  gateway authorises from the verified token alone.
- Dev mode has built-in, deterministic identities so that every process started in dev mode, by
  ``logstream up`` or by hand, accepts the same tokens. They never exist outside dev mode.
"""

from __future__ import annotations

import hashlib
import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterable

import jwt
import msgspec
from msgspec import Meta

from shared.channels import (
    DEFAULT_SERVICES,
    WILDCARD,
    Channel,
    ChannelGrant,
    ChannelPattern,
    parse_grant,
)
from shared.errors import InvalidChannel, SettingsError, Unauthenticated

__all__ = [
    "DEV_JWT_SECRET",
    "DEV_NATS_PRODUCER",
    "DEV_NATS_SERVICE",
    "DEV_SERVICE_TOKENS",
    "DEV_USERS",
    "DEV_USER_TOKEN_TTL_S",
    "ServiceToken",
    "TokenRegistry",
    "UserIdentity",
    "UserTokens",
    "bearer_token",
    "hash_secret",
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
# The embedded broker's NATS users: services connect as the first, producers as the second.
DEV_NATS_SERVICE = ("logstream", "logstream-dev")
DEV_NATS_PRODUCER = ("producer", "producer")
# Dev user tokens live half a working day: long enough for a demo, short enough to expire.
DEV_USER_TOKEN_TTL_S = 12 * 3600
_JWT_ALGORITHM = "HS256"


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``; ``None`` for any other header or none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ServiceToken:
    name: str
    grants: tuple[ChannelGrant, ...]

    def may_publish(self, channel: Channel) -> bool:
        return any(grant.covers(channel) for grant in self.grants)


class _TokenEntry(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=128)]
    sha256: Annotated[str, Meta(pattern="^[0-9a-fA-F]{64}$")]
    grants: list[str]


class _TokenFile(msgspec.Struct, forbid_unknown_fields=True):
    tokens: list[_TokenEntry]


class TokenRegistry:
    """Service tokens by the SHA-256 of their secret."""

    def __init__(self, tokens: dict[str, ServiceToken]) -> None:
        self._by_hash = tokens

    @classmethod
    def dev(cls, services: Iterable[str] = DEFAULT_SERVICES) -> "TokenRegistry":
        services = frozenset(services)
        tokens = {}
        for secret, grants in DEV_SERVICE_TOKENS.items():
            parsed = tuple(parse_grant(g) for g in grants)
            # A dev token for a service that is not configured would grant nothing.
            if all(grant.segments[0] in services for grant in parsed):
                tokens[hash_secret(secret)] = ServiceToken(secret, parsed)
        return cls(tokens)

    @classmethod
    def from_file(cls, path: str | Path, services: Iterable[str] = DEFAULT_SERVICES):
        """Load a JSON or TOML token file; any problem names the file and the entry."""
        path = Path(path)
        try:
            text = path.read_text()
            raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
            parsed = msgspec.convert(raw, _TokenFile)
        except (OSError, ValueError, msgspec.ValidationError) as exc:
            raise SettingsError(f"invalid setting tokens_file ({path}): {exc}") from None
        tokens = {}
        for entry in parsed.tokens:
            try:
                grants = tuple(parse_grant(g, services) for g in entry.grants)
            except InvalidChannel as exc:
                raise SettingsError(
                    f"invalid setting tokens_file ({path}): token {entry.name!r}: {exc.message}"
                ) from None
            digest = entry.sha256.lower()
            if digest in tokens:  # one secret, two names: which one published would be a guess
                raise SettingsError(
                    f"invalid setting tokens_file ({path}): token {entry.name!r} has the same "
                    f"sha256 as token {tokens[digest].name!r}"
                )
            tokens[digest] = ServiceToken(entry.name, grants)
        return cls(tokens)

    def verify(self, secret: str | None) -> ServiceToken:
        if not secret:
            raise Unauthenticated(
                "a service token is required (Authorization: Bearer or X-Service-Token)"
            )
        token = self._by_hash.get(hash_secret(secret))
        if token is None:
            raise Unauthenticated("the service token is not valid")
        return token

    def __len__(self) -> int:
        return len(self._by_hash)


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
