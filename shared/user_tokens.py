"""User tokens (docs/reference/identities.md): signed JWTs with ``sub``, ``workspaces`` and optional roles.

The gateway authorises from the verified token alone; ``workspaces: ["*"]`` reads every
workspace, and the ``admin`` role (``roles: [..., "admin"]`` or ``role: "admin"``) opens the
admin routes. Reading everything and administering are separate rights.

The verification keys form a ``KeySet``, and each key's algorithm follows from the key, never
from the token:

- a shared secret (``LOGSTREAM_JWT_SECRET``): HS256 only;
- an RSA public key (``LOGSTREAM_JWT_PUBLIC_KEY_FILE``, PEM): RS256 only;
- an EC P-256 public key (same setting): ES256 only;
- a JWKS (a JSON document of public keys, in that file or fetched by the gateway from
  ``LOGSTREAM_JWT_JWKS_URL``): RS256, ES256 or EdDSA per key, as its ``alg`` says or its
  ``kty``/``crv`` imply. A token names its key with the ``kid`` header; a symmetric (``oct``)
  or private key in a JWKS is refused, so no HMAC algorithm is ever accepted from one.

So ``alg: none``, another HMAC size, an RS256 token where only a secret is configured, or an
HS256 token "signed" with the public key's PEM (algorithm confusion) never verify.

This module ships in the client package (``logstream tail`` signs dev tokens with it), which
has PyJWT without ``cryptography``: the public-key parts import it where they are used.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
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
    "JWKS_ALGORITHMS",
    "MIN_SECRET_BYTES",
    "ClaimMap",
    "KeySet",
    "KeyWatch",
    "UnknownSigningKey",
    "UserIdentity",
    "UserTokens",
    "VerificationKey",
    "key_set_from_jwks",
    "public_key_from_pem",
    "read_key_file",
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
# The algorithms a JWKS key may carry: what the identity providers sign with (Keycloak, Auth0,
# Okta and Entra default to RS256), all asymmetric. Never an HMAC one: a JWKS is public.
JWKS_ALGORITHMS = ("RS256", "ES256", "EdDSA")
# A JWKS holds a handful of keys (current, next, previous); more is a misconfigured endpoint,
# and each key costs a parse on every refresh.
MAX_JWKS_KEYS = 100
# A kid names a key; a longer one is not a name but a payload (it lands in messages and logs).
MAX_KID_CHARS = 256
# Logstream's own tokens always carry it; another name is an identity provider's claim.
DEFAULT_WORKSPACES_CLAIM = "workspaces"
_SECRET_SETTING = "jwt_secret (LOGSTREAM_JWT_SECRET)"
_KEY_SETTING = "jwt_public_key_file (LOGSTREAM_JWT_PUBLIC_KEY_FILE)"


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key user tokens are checked with, the one algorithm it allows, and its ``kid``."""

    key: Any  # the HS256 secret (str) or a ``cryptography`` public key object
    algorithm: str
    kid: str | None = None
    # What the key is, whatever it is called: an open stream remembers it, and ends once its
    # key has left the key set (a kid may be reused for other key material; this may not).
    fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", _fingerprint(self.key))

    @property
    def signs(self) -> bool:
        """Only a shared secret can also issue tokens (dev mode, tests)."""
        return self.algorithm == "HS256"


def _fingerprint(key: Any) -> str:
    """SHA-256 of the secret, or of the public key's DER SubjectPublicKeyInfo; kept in memory
    only (``UserIdentity.key_id``), never shown."""
    if isinstance(key, str):
        material = b"secret:" + key.encode()
    else:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        material = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(material).hexdigest()


class UnknownSigningKey(Unauthenticated):
    """The token names (by ``kid``) a key the gateway does not hold: not published yet, or
    withdrawn. A gateway reading a JWKS endpoint fetches it again once before refusing."""

    def __init__(self, kid: str) -> None:
        super().__init__(
            f"the user token's signing key (kid {kid!r}) is not one of this gateway's keys: "
            "it was withdrawn or is not published yet; get a fresh token",
            rule="jwt_unknown_key",
        )
        self.kid = kid


class KeySet:
    """The keys user tokens may be signed with, chosen by the token's ``kid`` header.

    One key is used for every token, whatever its kid says, when it has no kid itself (a
    secret, a PEM key, a one-key JWKS without kids); a one-key set whose key has a kid takes a
    token without a kid too. With several keys a token must name its key: trying each in turn
    would make every token cost several signature checks and blur which key signed it.
    """

    __slots__ = ("_by_kid", "_fingerprints", "keys", "skipped")

    def __init__(self, keys: Sequence[VerificationKey], *, skipped: Sequence[str] = ()) -> None:
        if not keys:
            raise ValueError("a key set holds at least one key")
        self.keys = tuple(keys)
        # Notes on the JWKS members that were left out (not a signing key, an algorithm not
        # accepted): logged by the gateway, so an operator sees why a kid is unknown.
        self.skipped = tuple(skipped)
        self._by_kid: dict[str, VerificationKey] = {}
        for key in self.keys:
            if key.kid is not None:
                self._by_kid.setdefault(key.kid, key)
        self._fingerprints = frozenset(key.fingerprint for key in self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def kids(self) -> list[str]:
        return sorted(self._by_kid)

    @property
    def needs_kid(self) -> bool:
        """Whether the token's header must be read to choose (not for one key without a kid:
        the gateway with a secret or a PEM key skips that work)."""
        return len(self.keys) > 1 or self.keys[0].kid is not None

    def select(self, kid: str | None) -> VerificationKey:
        if len(self.keys) == 1:
            only = self.keys[0]
            if kid is None or only.kid is None or only.kid == kid:
                return only
            raise UnknownSigningKey(kid)
        if kid is None:
            raise Unauthenticated(
                f"the user token has no 'kid' header; this gateway holds {len(self.keys)} keys "
                "and takes the token's kid to choose one",
                rule="jwt_invalid",
            )
        try:
            return self._by_kid[kid]
        except KeyError:
            raise UnknownSigningKey(kid) from None

    def holds(self, fingerprint: str) -> bool:
        return fingerprint in self._fingerprints


class KeyWatch:
    """Whether the key that verified a stream's token is still held. An open stream asks at
    every wake; this costs an identity comparison until the key set is replaced."""

    __slots__ = ("_fingerprint", "_held", "_seen", "_tokens")

    def __init__(self, tokens: UserTokens, fingerprint: str) -> None:
        self._tokens = tokens
        self._fingerprint = fingerprint
        self._seen = tokens.keys
        self._held = self._seen.holds(fingerprint)

    def held(self) -> bool:
        keys = self._tokens.keys
        if keys is not self._seen:
            self._seen, self._held = keys, keys.holds(self._fingerprint)
        return self._held


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


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"invalid setting {_KEY_SETTING}: cannot read {path!r} ({exc.strerror or exc})"
        ) from None


def read_public_key_file(path: str) -> VerificationKey:
    return public_key_from_pem(_read(path), where=f" ({path})")


def read_key_file(path: str) -> KeySet:
    """``LOGSTREAM_JWT_PUBLIC_KEY_FILE``: a JWKS (JSON, several keys chosen by kid: for setups
    without a reachable JWKS endpoint) or one PEM public key or certificate."""
    content = _read(path)
    if content.lstrip().startswith(b"{"):
        return key_set_from_jwks(content, source=f"invalid setting {_KEY_SETTING} ({path})")
    return KeySet([public_key_from_pem(content, where=f" ({path})")])


def key_set_from_jwks(document: bytes | str, *, source: str) -> KeySet:
    """The signing keys of a JWKS (RFC 7517 section 5), parsed with PyJWT's ``PyJWK``.

    Members that cannot sign user tokens here are left out with a note (``KeySet.skipped``)
    rather than failing the whole set: identity providers publish encryption keys and keys of
    other algorithms beside their signing keys. A set without one usable key raises
    ``SettingsError`` starting with ``source`` (which names the setting and where the document
    came from) and saying why each member was left out.
    """
    try:
        parsed = json.loads(document)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{source}: not JSON ({exc})") from None
    members = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(members, list):
        raise SettingsError(f"{source}: not a JWKS (a JSON object with a 'keys' list)")
    if len(members) > MAX_JWKS_KEYS:
        raise SettingsError(f"{source}: {len(members)} keys; a JWKS may hold {MAX_JWKS_KEYS}")
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for index, member in enumerate(members):
        name = _member_name(member, index)
        try:
            key = _jwk_key(member)
        except ValueError as why:
            skipped.append(f"{name}: {why}")
            continue
        if key.kid is not None:
            if key.kid in seen:
                skipped.append(f"{name}: its kid is used by an earlier key, which is the one used")
                continue
            seen.add(key.kid)
        keys.append(key)
    if not keys:
        reasons = "; ".join(skipped) if skipped else "the 'keys' list is empty"
        raise SettingsError(f"{source}: no usable signing key ({reasons})")
    return KeySet(keys, skipped=skipped)


def _member_name(member: Any, index: int) -> str:
    kid = member.get("kid") if isinstance(member, dict) else None
    if isinstance(kid, str):
        return f"key {index} (kid {kid[:MAX_KID_CHARS]!r})"
    return f"key {index}"


def _jwk_key(jwk: Any) -> VerificationKey:
    """One JWK as a verification key, or ``ValueError`` saying why it cannot be one."""
    from jwt import PyJWK, PyJWTError

    if not isinstance(jwk, dict):
        raise ValueError("not a JSON object")
    kty = jwk.get("kty")
    if kty == "oct":
        raise ValueError(
            "a symmetric (oct) key is a shared secret; a JWKS may only publish public keys"
        )
    if "d" in jwk:
        raise ValueError("it holds private key material; publish the public key only")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"its use is {use!r}, not 'sig'")
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 1 <= len(kid) <= MAX_KID_CHARS):
        raise ValueError(f"its kid must be a string of 1-{MAX_KID_CHARS} characters")
    alg = jwk.get("alg")
    if alg is not None and alg not in JWKS_ALGORITHMS:
        raise ValueError(f"alg {str(alg)[:32]!r} is not accepted ({', '.join(JWKS_ALGORITHMS)})")
    try:
        parsed = PyJWK(jwk)
    except PyJWTError as exc:
        raise ValueError(f"not a usable JWK ({exc})") from None
    algorithm = parsed.algorithm_name
    if algorithm not in JWKS_ALGORITHMS:  # derived from kty/crv: P-384 is ES384, and so on
        raise ValueError(f"its key type implies {algorithm}, which is not accepted")
    _check_strength(parsed.key, algorithm)
    return VerificationKey(parsed.key, algorithm, kid)


def _check_strength(key: Any, algorithm: str) -> None:
    """The same floor as for a PEM key, and the algorithm the key's type can actually use."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if algorithm == "RS256":
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("RS256 needs an RSA public key")
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(
                f"an RSA key needs at least {MIN_RSA_BITS} bits (this one has {key.key_size})"
            )
    elif algorithm == "ES256":
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError("ES256 needs an EC public key on P-256")
    elif not isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise ValueError("EdDSA needs an Ed25519 or Ed448 public key")


@dataclass(frozen=True, slots=True)
class UserIdentity:
    user_id: str
    workspaces: frozenset[str]
    # When this gateway stops accepting the token: its exp plus the leeway (None: no exp).
    expires_at: float | None = None
    roles: frozenset[str] = frozenset()
    # The fingerprint of the key that verified the token (``VerificationKey.fingerprint``):
    # a stream on it ends once that key leaves the key set (``KeyWatch``).
    key_id: str | None = None
    # An identity someone vouched for (the product's backend, asked by the gateway's auth
    # callout): when to ask again (``time.time()``); an open stream goes on only while the
    # answer is still yes. None: nothing to ask (a token says all there is at its ``exp``).
    recheck_at: float | None = None

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

    ``UserTokens(secret)`` is HS256; ``UserTokens(key=read_public_key_file(path))`` RS256/ES256;
    ``UserTokens(keys=key_set)`` any set (a JWKS). ``audience``/``issuer`` are checked when
    given; ``leeway_s`` applies to exp, nbf and iat. A gateway reading a JWKS endpoint swaps the
    set (``use_keys``) and fetches it again on an unknown kid (``refetch``, its rate limit).
    """

    def __init__(
        self,
        secret: str | None = None,
        *,
        key: VerificationKey | None = None,
        keys: KeySet | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: float = DEFAULT_LEEWAY_S,
        claims: ClaimMap | None = None,
    ) -> None:
        if (key is not None or keys is not None) and secret:
            raise SettingsError(f"give one of {_SECRET_SETTING} or {_KEY_SETTING}, not both")
        if key is not None and keys is not None:
            raise ValueError("give key or keys, not both")
        if keys is None:
            keys = KeySet([key if key is not None else secret_key(secret or "")])
        self._keys = keys
        self._audience = audience or None
        self._issuer = issuer or None
        self._leeway_s = leeway_s
        self._claims = claims or ClaimMap()
        # Asks the key source for the keys again on an unknown kid; True when it fetched them
        # (it decides how often it may). None: the keys never change (a secret or a file).
        self.refetch: Callable[[str], Awaitable[bool]] | None = None

    @property
    def keys(self) -> KeySet:
        return self._keys

    def use_keys(self, keys: KeySet) -> None:
        """Verify with ``keys`` from now on (a refreshed JWKS); open streams compare against
        them at their next wake (``KeyWatch``)."""
        self._keys = keys

    @property
    def algorithm(self) -> str:
        """The algorithm of the keys: one name, or several comma-separated (a JWKS)."""
        return ",".join(sorted({key.algorithm for key in self._keys.keys}))

    def watch(self, user: UserIdentity) -> KeyWatch | None:
        """For an open stream of ``user``: whether the key of its token is still held."""
        return KeyWatch(self, user.key_id) if user.key_id is not None else None

    def issue(
        self,
        user_id: str,
        workspaces: Iterable[str],
        ttl_s: float = DEV_USER_TOKEN_TTL_S,
        *,
        roles: Iterable[str] = (),
    ) -> str:
        signer = self._keys.keys[0]
        if len(self._keys) != 1 or not signer.signs:
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
        return jwt.encode(claims, signer.key, algorithm=signer.algorithm)

    def issue_dev(self, user_id: str, ttl_s: float = DEV_USER_TOKEN_TTL_S) -> str:
        """A token for one of the built-in dev users, with that user's workspaces and roles."""
        return self.issue(user_id, DEV_USERS[user_id], ttl_s, roles=DEV_USER_ROLES.get(user_id, ()))

    def verify(self, token: str | None) -> UserIdentity:
        if not token:
            raise Unauthenticated(
                "a user token is required (Authorization: Bearer or cookie)", rule="no_credential"
            )
        keys = self._keys
        key = keys.select(_kid_of(token)) if keys.needs_kid else keys.keys[0]
        claims = self._decode(token, key)
        mapping = self._claims
        return UserIdentity(
            mapping.user_of(claims),
            mapping.workspaces_of(claims),
            _expiry(claims, self._leeway_s),
            mapping.roles_of(claims),
            key.fingerprint,
        )

    async def verify_current(self, token: str | None) -> UserIdentity:
        """``verify``; but a token naming a key not held asks the key source (``refetch``) for
        the keys again, once, and is checked against what it brought (a key published since
        the last refresh). The source's rate limit decides whether it fetches at all."""
        try:
            return self.verify(token)
        except UnknownSigningKey as unknown:
            if self.refetch is None or not await self.refetch(unknown.kid):
                raise
        return self.verify(token)

    def _decode(self, token: str, key: VerificationKey) -> dict[str, Any]:
        try:
            # One algorithm, the key's own: the token's `alg` header cannot pick another.
            return jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                # The user's claim is checked by the claim map (it may be nested or renamed).
                options={"require": ["exp"]},
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


def _kid_of(token: str) -> str | None:
    """The token's ``kid`` header, read before its signature is checked (to choose the key)."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"the user token is not valid: {exc}", rule="jwt_invalid") from None
    if kid is not None and (not isinstance(kid, str) or not 1 <= len(kid) <= MAX_KID_CHARS):
        raise Unauthenticated(
            f"the user token's 'kid' header must be a string of 1-{MAX_KID_CHARS} characters",
            rule="jwt_invalid",
        )
    return kid


@dataclass(frozen=True, slots=True)
class ClaimMap:
    """Which claims of a verified token name the user, list the workspaces and the roles.

    Logstream's own tokens carry ``sub``, ``workspaces`` and ``roles`` (the defaults). An
    identity provider's put them elsewhere: Keycloak lists group paths in ``groups``
    (``/workspaces/ws1``) and realm roles in ``realm_access.roles``; Auth0 takes namespaced
    claims (``https://example.com/workspaces``). A claim name is looked up as given first,
    then, if it holds dots and is not there, as a path into nested objects. With
    ``workspace_prefix`` only the values that start with it are workspaces, with the prefix
    taken off (``workspace:ws1`` -> ``ws1``); the others (other groups) are left out.
    """

    user: str = "sub"
    workspaces: str = DEFAULT_WORKSPACES_CLAIM
    workspace_prefix: str = ""
    roles: str = "roles"

    def user_of(self, claims: dict[str, Any]) -> str:
        subject = _claim(claims, self.user)
        if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT_CHARS:
            state = "has no" if subject is None else "has a bad"
            raise Unauthenticated(
                f"the user token {state} '{self.user}' claim naming the user "
                f"(a string of 1-{MAX_SUBJECT_CHARS} characters)",
                rule="jwt_invalid",
            )
        return subject

    def workspaces_of(self, claims: dict[str, Any]) -> frozenset[str]:
        value = _claim(claims, self.workspaces)
        if value is None and self.workspaces != DEFAULT_WORKSPACES_CLAIM:
            # An identity provider leaves a list claim out when it is empty (Keycloak's groups
            # for a user in no group): signed in, but no workspace to read (403, not 401).
            return frozenset()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise Unauthenticated(
                f"the user token has no '{self.workspaces}' list of strings", rule="jwt_invalid"
            )
        prefix = self.workspace_prefix
        if not prefix:
            return frozenset(value)
        return frozenset(
            item[len(prefix) :]
            for item in value
            if item.startswith(prefix) and len(item) > len(prefix)
        )

    def roles_of(self, claims: dict[str, Any]) -> frozenset[str]:
        """The roles claim (a list, or one string), optional; with the default name, ``role``
        (one string) too."""
        found: list[str] = []
        names = (self.roles, "role") if self.roles == "roles" else (self.roles,)
        for index, name in enumerate(names):
            value = _claim(claims, name)
            if value is None:
                continue
            if isinstance(value, str):
                found.append(value)
            elif (
                index == 0
                and isinstance(value, list)
                and all(isinstance(item, str) for item in value)
            ):
                found += value
            else:
                raise Unauthenticated(
                    f"the user token's '{name}' must be a string"
                    + (" or a list of strings" if index == 0 else ""),
                    rule="jwt_invalid",
                )
        return frozenset(found)


def _claim(claims: dict[str, Any], name: str) -> Any:
    """``claims[name]``, else (a dotted name) the path through nested objects, else None."""
    if name in claims:
        return claims[name]
    if "." not in name:
        return None
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _expiry(claims: dict[str, Any], leeway_s: float) -> float | None:
    exp = claims.get("exp")
    return float(exp) + leeway_s if isinstance(exp, (int, float)) else None
