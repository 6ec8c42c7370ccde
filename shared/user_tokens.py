"""User tokens (docs/reference/identities.md): signed JWTs with ``sub``, ``workspaces`` and optional roles.

The gateway authorises from the verified token alone; ``workspaces: ["*"]`` reads every
workspace, and the ``admin`` role (``roles: [..., "admin"]`` or ``role: "admin"``) opens the
admin routes. Reading everything and administering are separate rights.

One verification key, and the algorithm allow-list follows from it, never from the token:

- a shared secret (``LOGSTREAM_JWT_SECRET``): HS256 only;
- an RSA public key (``LOGSTREAM_JWT_PUBLIC_KEY_FILE``): RS256 only;
- an EC P-256 public key (same setting): ES256 only.

So ``alg: none``, another HMAC size, an RS256 token where only a secret is configured, or an
HS256 token "signed" with the public key's PEM (algorithm confusion) never verify.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from logstream.shared.channels import WILDCARD, ChannelPattern
from logstream.shared.errors import SettingsError, Unauthenticated
from logstream.shared.identities import DEV_USER_TOKEN_TTL_S, DEV_USERS

__all__ = [
    "ADMIN_ROLE",
    "DEFAULT_LEEWAY_S",
    "DEV_USER_ROLES",
    "MIN_SECRET_BYTES",
    "UserIdentity",
    "UserTokens",
    "VerificationKey",
    "public_key_from_pem",
    "read_public_key_file",
    "secret_key",
]

ADMIN_ROLE = "admin"
# Dev mode's `admin` (every workspace) also holds the admin role, so its token opens the stats.
DEV_USER_ROLES: dict[str, tuple[str, ...]] = {"admin": (ADMIN_ROLE,)}
# Clock skew tolerated on exp/nbf/iat. NTP-synced hosts differ by milliseconds; 5 s covers a
# badly synced one without letting an expired token (or a stream on it) live on for long.
DEFAULT_LEEWAY_S = 5.0
# RFC 7518 3.2: an HS256 key must be at least as long as the hash output (256 bits).
MIN_SECRET_BYTES = 32
# NIST SP 800-57: RSA keys under 2048 bits no longer protect anything.
MIN_RSA_BITS = 2048
# A user id longer than this is not an id but a payload (it lands in logs, stats and events).
MAX_SUBJECT_CHARS = 256
_SECRET_SETTING = "jwt_secret (LOGSTREAM_JWT_SECRET)"
_KEY_SETTING = "jwt_public_key_file (LOGSTREAM_JWT_PUBLIC_KEY_FILE)"


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """The key user tokens are checked with, and the one algorithm it allows."""

    key: Any  # the HS256 secret (str) or a ``cryptography`` public key object
    algorithm: str

    @property
    def signs(self) -> bool:
        """Only a shared secret can also issue tokens (dev mode, tests)."""
        return self.algorithm == "HS256"


def secret_key(secret: str) -> VerificationKey:
    if not secret:
        raise SettingsError(f"invalid setting {_SECRET_SETTING}: it must not be empty")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise SettingsError(
            f"invalid setting {_SECRET_SETTING}: an HS256 secret needs at least "
            f"{MIN_SECRET_BYTES} bytes (given {len(secret.encode())})"
        )
    return VerificationKey(secret, "HS256")


def public_key_from_pem(pem: bytes, *, where: str = "") -> VerificationKey:
    """RSA (2048 bits or more) -> RS256; EC on P-256 -> ES256; anything else is refused."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    problem = f"invalid setting {_KEY_SETTING}{where}"
    try:
        key = (
            x509.load_pem_x509_certificate(pem).public_key()
            if b"BEGIN CERTIFICATE" in pem
            else load_pem_public_key(pem)
        )
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{problem}: not a PEM public key or certificate ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise SettingsError(
                f"{problem}: an RSA key needs at least {MIN_RSA_BITS} bits "
                f"(this one has {key.key_size})"
            )
        return VerificationKey(key, "RS256")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise SettingsError(
                f"{problem}: an EC key must be on P-256 for ES256 (this one is on {key.curve.name})"
            )
        return VerificationKey(key, "ES256")
    raise SettingsError(
        f"{problem}: a {type(key).__name__} is not supported; "
        "give an RSA (RS256) or EC P-256 (ES256) public key"
    )


def read_public_key_file(path: str) -> VerificationKey:
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"invalid setting {_KEY_SETTING}: cannot read {path!r} ({exc.strerror or exc})"
        ) from None
    return public_key_from_pem(pem, where=f" ({path})")


@dataclass(frozen=True, slots=True)
class UserIdentity:
    user_id: str
    workspaces: frozenset[str]
    # When this gateway stops accepting the token: its exp plus the leeway (None: no exp).
    expires_at: float | None = None
    roles: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    @property
    def reads_every_workspace(self) -> bool:
        return WILDCARD in self.workspaces

    def may_read(self, pattern: ChannelPattern) -> bool:
        """Every channel the pattern could match must lie in one of the user's workspaces."""
        if self.reads_every_workspace:
            return True
        return pattern.workspace != WILDCARD and pattern.workspace in self.workspaces


class UserTokens:
    """Verify user JWTs (and issue them where the key is a shared secret: dev mode, tests).

    ``UserTokens(secret)`` is HS256; ``UserTokens(key=read_public_key_file(path))`` RS256/ES256.
    ``audience``/``issuer`` are checked when given; ``leeway_s`` applies to exp, nbf and iat.
    """

    def __init__(
        self,
        secret: str | None = None,
        *,
        key: VerificationKey | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: float = DEFAULT_LEEWAY_S,
    ) -> None:
        if key is not None and secret:
            raise SettingsError(f"give one of {_SECRET_SETTING} or {_KEY_SETTING}, not both")
        self._key = key if key is not None else secret_key(secret or "")
        self._audience = audience or None
        self._issuer = issuer or None
        self._leeway_s = leeway_s

    @property
    def algorithm(self) -> str:
        return self._key.algorithm

    def issue(
        self,
        user_id: str,
        workspaces: Iterable[str],
        ttl_s: float = DEV_USER_TOKEN_TTL_S,
        *,
        roles: Iterable[str] = (),
    ) -> str:
        if not self._key.signs:
            raise SettingsError("a public key verifies user tokens; it cannot issue them")
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": user_id,
            "workspaces": list(workspaces),
            "iat": now,
            "exp": now + int(ttl_s),
        }
        if roles := list(roles):
            claims["roles"] = roles
        if self._audience:
            claims["aud"] = self._audience
        if self._issuer:
            claims["iss"] = self._issuer
        return jwt.encode(claims, self._key.key, algorithm=self._key.algorithm)

    def issue_dev(self, user_id: str, ttl_s: float = DEV_USER_TOKEN_TTL_S) -> str:
        """A token for one of the built-in dev users, with that user's workspaces and roles."""
        return self.issue(user_id, DEV_USERS[user_id], ttl_s, roles=DEV_USER_ROLES.get(user_id, ()))

    def verify(self, token: str | None) -> UserIdentity:
        if not token:
            raise Unauthenticated(
                "a user token is required (Authorization: Bearer or cookie)", rule="no_credential"
            )
        claims = self._decode(token)
        return UserIdentity(
            _subject(claims),
            frozenset(_strings(claims, "workspaces")),
            _expiry(claims, self._leeway_s),
            frozenset(_roles(claims)),
        )

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                self._key.key,
                algorithms=[self._key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the user token has expired", rule="jwt_expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated(
                "the user token is not valid yet (nbf/iat in the future)", rule="jwt_invalid"
            ) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                "the user token is not for this audience (aud)", rule="jwt_audience"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(
                "the user token is not from the expected issuer (iss)", rule="jwt_issuer"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            rule = {"aud": "jwt_audience", "iss": "jwt_issuer"}.get(exc.claim, "jwt_invalid")
            raise Unauthenticated(f"the user token has no '{exc.claim}' claim", rule=rule) from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(
                f"the user token is not valid: {exc}", rule="jwt_invalid"
            ) from None


def _subject(claims: dict[str, Any]) -> str:
    subject = claims["sub"]
    if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT_CHARS:
        raise Unauthenticated(
            f"the user token's 'sub' must be 1-{MAX_SUBJECT_CHARS} characters", rule="jwt_invalid"
        )
    return subject


def _strings(claims: dict[str, Any], name: str) -> list[str]:
    value = claims.get(name)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Unauthenticated(f"the user token has no '{name}' list of strings", rule="jwt_invalid")
    return value


def _roles(claims: dict[str, Any]) -> list[str]:
    """``roles`` (a list, or one string) and ``role`` (one string), both optional."""
    found: list[str] = []
    for name in ("roles", "role"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            found.append(value)
        elif (
            name == "roles"
            and isinstance(value, list)
            and all(isinstance(item, str) for item in value)
        ):
            found += value
        else:
            raise Unauthenticated(
                f"the user token's '{name}' must be a string"
                + (" or a list of strings" if name == "roles" else ""),
                rule="jwt_invalid",
            )
    return found


def _expiry(claims: dict[str, Any], leeway_s: float) -> float | None:
    exp = claims.get("exp")
    return float(exp) + leeway_s if isinstance(exp, (int, float)) else None
