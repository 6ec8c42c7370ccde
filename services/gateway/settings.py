"""Settings of the gateway service."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlparse

from msgspec import Meta

from logstream.shared.durations import parse_duration
from logstream.shared.errors import SettingsError
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.settings import ServiceSettings, env_name
from logstream.shared.stream_doc import DEFAULT_MAX_CHANNELS, MAX_CHANNELS_SETTING
from logstream.shared.user_tokens import DEFAULT_LEEWAY_S, read_key_file, secret_key

__all__ = ["Settings"]

# Below the 30-60 s idle timeouts of common proxies and load balancers (docs/reference/stream.md: <= 15 s).
DEFAULT_HEARTBEAT_S = 15.0
# A write the client does not take for this long ends the connection (nginx's send_timeout is
# 60 s): a reader that stopped holds its descriptor, its queued bytes and its slot no longer.
DEFAULT_SEND_TIMEOUT_S = 30.0
# How long a browser waits before reconnecting after a drop.
DEFAULT_RETRY_MS = 2000
# A slow reader may hold this much queued output before it is cut off with `overflow`.
DEFAULT_OUTBOX_BYTES = 1024 * 1024
# The admin token is a bearer secret compared as typed: as long as a random 128-bit hex string
# at least, so it cannot be guessed the way a password can.
MIN_ADMIN_TOKEN_CHARS = 32
# How often a JWKS endpoint is read again. Identity providers publish a new key well before
# they sign with it (Keycloak, Auth0, Okta, Entra: hours to days), so minutes are plenty; a
# token with a kid not seen yet makes the gateway look sooner anyway.
DEFAULT_JWKS_REFRESH = "5m"
# Faster than this is no refresh but a poll of the identity provider by every gateway.
MIN_JWKS_REFRESH_S = 1.0
# The ways to give the user-token key; exactly one (none in dev mode: the dev secret).
USER_KEY_SETTINGS = ("jwt_secret", "jwt_public_key_file", "jwt_jwks_url")


class Settings(ServiceSettings, frozen=True, kw_only=True):
    port: Annotated[int, Meta(ge=0, le=65535, description="port to bind")] = 3002
    jwt_secret: Annotated[
        str,
        Meta(
            description="HS256 secret of user tokens, 32 bytes or more (this, "
            "jwt_public_key_file or jwt_jwks_url is required outside dev mode)"
        ),
    ] = ""
    jwt_public_key_file: Annotated[
        str,
        Meta(
            description="PEM public key (or certificate) of user tokens: RSA -> RS256, "
            "EC P-256 -> ES256; or a JWKS JSON file of keys chosen by kid (instead of jwt_secret)"
        ),
    ] = ""
    jwt_jwks_url: Annotated[
        str,
        Meta(
            description="JWKS endpoint of the identity provider: user-token keys chosen by kid "
            "(RS256, ES256, EdDSA), fetched at start and every jwt_jwks_refresh (instead of "
            "jwt_secret or jwt_public_key_file)"
        ),
    ] = ""
    jwt_jwks_refresh: Annotated[
        str,
        Meta(
            description="how often jwt_jwks_url is read again (30s, 5m, 1h); a token with an "
            "unknown kid also rereads it, at most once per 10 s"
        ),
    ] = DEFAULT_JWKS_REFRESH
    jwt_audience: Annotated[
        str,
        Meta(
            description="the `aud` user tokens must carry (unset: a token with an `aud` is refused)"
        ),
    ] = ""
    jwt_issuer: Annotated[
        str, Meta(description="the `iss` user tokens must carry (unset: not checked)")
    ] = ""
    jwt_leeway: Annotated[
        float,
        Meta(
            ge=0,
            le=300,
            description="seconds of clock skew allowed on exp/nbf/iat; "
            "a stream ends this long after its token's exp",
        ),
    ] = DEFAULT_LEEWAY_S
    admin_token: Annotated[
        str,
        Meta(
            description="bearer secret for /admin/logs/stats besides user tokens with "
            f"the admin role ({MIN_ADMIN_TOKEN_CHARS}+ characters)"
        ),
    ] = ""
    heartbeat: Annotated[
        float, Meta(gt=0, le=300, description="seconds between heartbeat comments")
    ] = DEFAULT_HEARTBEAT_S
    retry_ms: Annotated[
        int, Meta(ge=0, le=600000, description="reconnect delay sent as `retry:`")
    ] = DEFAULT_RETRY_MS
    send_timeout: Annotated[
        float,
        Meta(
            gt=0,
            le=3600,
            description="seconds a stream's write may wait for a client that stopped reading; "
            "then the connection is closed and everything it held let go",
        ),
    ] = DEFAULT_SEND_TIMEOUT_S
    max_channels: Annotated[
        int, Meta(ge=1, le=MAX_CHANNELS_SETTING, description="most channels on one stream")
    ] = DEFAULT_MAX_CHANNELS
    max_connections_per_user: Annotated[
        int, Meta(ge=1, description="open streams one user may hold")
    ] = 32
    max_opening: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000,
            description="stream, history and channel-list requests opened at once; more wait "
            "their turn, so a reconnect storm cannot starve the streams already open",
        ),
    ] = 32
    outbox_bytes: Annotated[
        int, Meta(ge=4096, description="bytes queued for one connection before `overflow`")
    ] = DEFAULT_OUTBOX_BYTES
    query_token: Annotated[
        str,
        Meta(
            description="accept ?access_token= (auto: only in dev mode; on: dev mode "
            "only, URLs end up in logs; off)"
        ),
    ] = "auto"

    def check(self) -> None:
        super().check()
        if self.query_token not in ("auto", "on", "off"):
            raise SettingsError(
                f"invalid setting query_token ({env_name('query_token')}): "
                f"{self.query_token!r} is not one of auto, on, off"
            )
        if self.query_token == "on" and not self.dev:
            raise SettingsError(
                f"invalid setting query_token ({env_name('query_token')}): 'on' is for dev mode "
                "only; production takes user tokens from the Authorization header or the "
                "logstream_session cookie, never from URLs (they end up in access logs)"
            )
        self._check_user_token_key()
        if self.admin_token and len(self.admin_token) < MIN_ADMIN_TOKEN_CHARS:
            raise SettingsError(
                f"invalid setting admin_token ({env_name('admin_token')}): at least "
                f"{MIN_ADMIN_TOKEN_CHARS} characters (given {len(self.admin_token)})"
            )

    def _check_user_token_key(self) -> None:
        labels = [f"{name} ({env_name(name)})" for name in USER_KEY_SETTINGS]
        names = f"{labels[0]}, {labels[1]} or {labels[2]}"
        given = [label for name, label in zip(USER_KEY_SETTINGS, labels) if getattr(self, name)]
        if len(given) > 1:
            raise SettingsError(
                f"invalid settings: {' and '.join(given)} are each a user-token key; give one "
                f"of {names}, not {'both' if len(given) == 2 else 'all three'}"
            )
        self._check_jwks_refresh()
        if self.jwt_secret:
            secret_key(self.jwt_secret)
        elif self.jwt_public_key_file:
            read_key_file(self.jwt_public_key_file)
        elif self.jwt_jwks_url:
            self._check_jwks_url()
        elif not self.dev:
            raise SettingsError(
                f"missing setting {names}: production mode has no default user-token key; "
                "give one or run with --dev"
            )

    def _check_jwks_url(self) -> None:
        # Only its shape here: the gateway fetches it when it starts (services/gateway/user_keys.py).
        url = urlparse(self.jwt_jwks_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise SettingsError(
                f"invalid setting jwt_jwks_url ({env_name('jwt_jwks_url')}): "
                f"{self.jwt_jwks_url[:200]!r} is not an http:// or https:// URL"
            )

    def _check_jwks_refresh(self) -> None:
        name = "jwt_jwks_refresh"
        try:
            if parse_duration(self.jwt_jwks_refresh) < MIN_JWKS_REFRESH_S:
                raise ValueError(f"it must be at least {MIN_JWKS_REFRESH_S:g}s")
        except ValueError as exc:
            raise SettingsError(f"invalid setting {name} ({env_name(name)}): {exc}") from None

    @property
    def jwks_refresh_s(self) -> float:
        return parse_duration(self.jwt_jwks_refresh)

    @property
    def user_token_secret(self) -> str:
        """The HS256 secret, if user tokens are checked with one (the dev secret in dev mode)."""
        if self.jwt_public_key_file or self.jwt_jwks_url:
            return ""
        return self.jwt_secret or (DEV_JWT_SECRET if self.dev else "")

    @property
    def accepts_query_token(self) -> bool:
        return self.dev and self.query_token in ("auto", "on")
