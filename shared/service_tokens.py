"""Service tokens (CONTRACT section 8): opaque secrets with a name and channel grants.

Only the SHA-256 of a secret is kept (token file or the dev set). Each token carries a name,
recorded as a record's ``publisher``, and the grants it may publish under.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterable

import msgspec
from msgspec import Meta

from shared.channels import DEFAULT_SERVICES, Channel, ChannelGrant, parse_grant
from shared.errors import InvalidChannel, SettingsError, Unauthenticated
from shared.identities import DEV_SERVICE_TOKENS

__all__ = ["ServiceToken", "TokenRegistry", "hash_secret"]


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
