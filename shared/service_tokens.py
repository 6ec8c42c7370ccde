"""Service tokens (docs/reference/identities.md): opaque secrets with a name and channel grants.

Only the SHA-256 of a secret is kept (token file or the dev set), never the secret. Each token
carries a name, recorded as a record's ``publisher``, and the grants it may publish under.

Verification is constant-time in the presented secret: its SHA-256 is compared with *every*
known digest by ``hmac.compare_digest``, with no early exit and no lookup keyed by the digest
(a dict probe would compare a hash bucket's keys byte by byte and return early). What the
time can tell is the secret's length (public: it is on the wire) and the number of tokens.

A registry loaded from a file can ``reload()`` it (ingest does on SIGHUP): the new set replaces
the old one in one assignment, and a file that does not load leaves the old set in place.
Rotating a secret: add an entry with the new secret's digest under the same name, reload,
move the producers to the new secret, remove the old entry, reload again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from logstream.shared.channels import DEFAULT_SERVICES, Channel, ChannelGrant, parse_grant
from logstream.shared.errors import InvalidChannel, SettingsError, Unauthenticated
from logstream.shared.identities import DEV_SERVICE_TOKENS

__all__ = ["MAX_SECRET_CHARS", "ServiceToken", "TokenRegistry", "hash_secret"]

# No real token is longer (a 256-bit token_urlsafe is 43 characters); refusing longer ones
# before hashing keeps an absurd header (or NATS header) from costing more than a rejection.
MAX_SECRET_CHARS = 4096
_DIGEST_BYTES = hashlib.sha256().digest_size


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of a secret, as a token file stores it."""
    return _digest(secret).hex()


def _digest(secret: str) -> bytes:
    # surrogatepass: a header decoded with lone surrogates must not turn into an exception.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class ServiceToken:
    name: str
    grants: tuple[ChannelGrant, ...]

    def may_publish(self, channel: Channel) -> bool:
        return any(grant.covers(channel) for grant in self.grants)


# A token's name is a record's ``publisher``, the audit's ``token:<name>`` and the scope of its
# ``Nats-Msg-Id`` (``<name>:<id>``): no ':' (names "a:b" and "a" would share ids), no spaces or
# control characters (a log reader must see one name).
_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"


class _TokenEntry(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(pattern=_NAME_PATTERN)]
    sha256: Annotated[str, Meta(pattern="^[0-9a-fA-F]{64}$")]
    grants: list[str]


class _TokenFile(msgspec.Struct, forbid_unknown_fields=True):
    tokens: list[_TokenEntry]


# (SHA-256 digest of the secret, the token it identifies)
_Entries = tuple[tuple[bytes, ServiceToken], ...]


def _read_file(path: Path, services: frozenset[str]) -> _Entries:
    """Parse a JSON or TOML token file; any problem names the file and the entry."""

    def problem(text: str) -> SettingsError:
        return SettingsError(f"invalid setting tokens_file ({path}): {text}")

    try:
        text = path.read_text()
        raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        parsed = msgspec.convert(raw, _TokenFile)
    except (OSError, ValueError, msgspec.ValidationError) as exc:
        raise problem(str(exc)) from None
    names_by_digest: dict[bytes, str] = {}
    entries = []
    for entry in parsed.tokens:
        try:
            grants = tuple(parse_grant(g, services) for g in entry.grants)
        except InvalidChannel as exc:
            raise problem(f"token {entry.name!r}: {exc.message}") from None
        digest = bytes.fromhex(entry.sha256)
        if digest in names_by_digest:  # one secret, two names: which one published is a guess
            raise problem(
                f"token {entry.name!r} has the same sha256 as token {names_by_digest[digest]!r}"
            )
        names_by_digest[digest] = entry.name
        entries.append((digest, ServiceToken(entry.name, grants)))
    return tuple(entries)


class TokenRegistry:
    """The service tokens a process accepts, verified in constant time."""

    def __init__(
        self,
        entries: _Entries,
        *,
        source: Path | None = None,
        services: Iterable[str] = DEFAULT_SERVICES,
    ) -> None:
        if any(len(digest) != _DIGEST_BYTES for digest, _ in entries):
            raise ValueError("every entry needs a SHA-256 digest")
        self._entries = entries
        self._services = frozenset(services)
        self.source = source

    @classmethod
    def dev(cls, services: Iterable[str] = DEFAULT_SERVICES) -> TokenRegistry:
        services = frozenset(services)
        entries = []
        for secret, grants in DEV_SERVICE_TOKENS.items():
            parsed = tuple(parse_grant(g) for g in grants)
            # A dev token for a service that is not configured would grant nothing.
            if all(grant.segments[0] in services for grant in parsed):
                entries.append((_digest(secret), ServiceToken(secret, parsed)))
        return cls(tuple(entries), services=services)

    @classmethod
    def from_file(
        cls, path: str | Path, services: Iterable[str] = DEFAULT_SERVICES
    ) -> TokenRegistry:
        """Load a JSON or TOML token file; any problem names the file and the entry."""
        path, services = Path(path), frozenset(services)
        return cls(_read_file(path, services), source=path, services=services)

    def reload(self) -> int:
        """Read the token file again and use it from now on; returns how many tokens it holds.

        Raises ``SettingsError`` (naming the file and the problem) and keeps the tokens it had
        when the file does not load."""
        if self.source is None:
            raise SettingsError("invalid setting tokens_file: these tokens come from no file")
        entries = _read_file(self.source, self._services)
        self._entries = entries  # one assignment: a request sees the old set or the new one
        return len(entries)

    def verify(self, secret: str | None) -> ServiceToken:
        """The token whose secret this is; ``Unauthenticated`` (rule ``no_credential`` or
        ``token_invalid``) otherwise."""
        if not secret:
            raise Unauthenticated(
                "a service token is required (Authorization: Bearer or X-Service-Token)",
                rule="no_credential",
            )
        if len(secret) > MAX_SECRET_CHARS:
            raise Unauthenticated(
                f"the service token is not valid (longer than {MAX_SECRET_CHARS} characters)",
                rule="token_invalid",
            )
        presented = _digest(secret)
        found = None
        for digest, token in self._entries:  # every entry, whatever matched before
            if hmac.compare_digest(digest, presented):
                found = token
        if found is None:
            raise Unauthenticated("the service token is not valid", rule="token_invalid")
        return found

    def __len__(self) -> int:
        return len(self._entries)
