"""Settings of the gateway service."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlparse

from msgspec import Meta

from logstream.shared.cookies import cookie_names, is_token
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
# The headers that carry a signed-in browser's credential to the product's backend: its session
# cookie, or the bearer token its own front end sends.
DEFAULT_CALLOUT_HEADERS = "Cookie,Authorization"
# A product backend checks a session in milliseconds; a stream open waits this long at most.
DEFAULT_CALLOUT_TIMEOUT_S = 2.0
# How long a backend's yes is reused for the same credential (and an open stream goes on
# before asking again): the most a signed-out session's streams outlive it.
DEFAULT_CALLOUT_TTL_S = 60.0
DEFAULT_CALLOUT_CACHE = 10_000
# A header name is an RFC 9110 token (``is_token``); one that is not could not be forwarded.
MAX_HEADER_NAME_CHARS = 64
# Never forwarded: they describe this hop, not who the caller is.
_HOP_HEADERS = frozenset(
    {"host", "connection", "content-length", "transfer-encoding", "upgrade", "te", "trailer"}
)


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
    jwt_user_claim: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=256,
            description="the user-token claim naming the user (Keycloak: preferred_username "
            "or sub); a dotted name reads a nested claim",
        ),
    ] = "sub"
    jwt_workspaces_claim: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=256,
            description="the user-token claim listing the user's workspaces (Keycloak: "
            "groups; Auth0: a namespaced claim such as https://example.com/workspaces)",
        ),
    ] = "workspaces"
    jwt_workspace_prefix: Annotated[
        str,
        Meta(
            max_length=256,
            description="only values of the workspaces claim that start with this are "
            "workspaces, with it taken off (groups /workspaces/ws1 -> ws1); unset: every value",
        ),
    ] = ""
    jwt_roles_claim: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=256,
            description="the user-token claim listing roles, the admin role among them "
            "(Keycloak: realm_access.roles)",
        ),
    ] = "roles"
    auth_callout_url: Annotated[
        str,
        Meta(
            description="the product backend's endpoint that says who a caller without a "
            "Logstream token is, from the forwarded headers (docs/reference/identities.md)",
        ),
    ] = ""
    auth_callout_headers: Annotated[
        str,
        Meta(
            description="the request headers forwarded to auth_callout_url, comma-separated",
        ),
    ] = DEFAULT_CALLOUT_HEADERS
    auth_callout_cookies: Annotated[
        str,
        Meta(
            description="of the Cookie header, only these cookies (comma-separated: the "
            "product's session cookie) are forwarded and make the credential; unset: all",
        ),
    ] = ""
    auth_callout_timeout: Annotated[
        float,
        Meta(
            gt=0,
            le=60,
            description="seconds the callout may take; slower is 503 with Retry-After, "
            "never a grant",
        ),
    ] = DEFAULT_CALLOUT_TIMEOUT_S
    auth_callout_ttl: Annotated[
        float,
        Meta(
            ge=1,
            le=86400,
            description="seconds a callout's yes is reused for the same credential (less if "
            "it says expires_in); an open stream asks again after this long",
        ),
    ] = DEFAULT_CALLOUT_TTL_S
    auth_callout_cache_size: Annotated[
        int,
        Meta(ge=1, le=10_000_000, description="credentials whose callout answer is kept"),
    ] = DEFAULT_CALLOUT_CACHE
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
        self._check_callout()
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
        elif not self.dev and not self.auth_callout_url:
            raise SettingsError(
                f"missing setting {names}: production mode has no default user-token key; "
                "give one, or auth_callout_url (LOGSTREAM_AUTH_CALLOUT_URL) to ask the "
                "product's backend, or run with --dev"
            )

    def _check_callout(self) -> None:
        if not self.auth_callout_url:
            return
        url = urlparse(self.auth_callout_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise SettingsError(
                f"invalid setting auth_callout_url ({env_name('auth_callout_url')}): "
                f"{self.auth_callout_url[:200]!r} is not an http:// or https:// URL"
            )
        cookie_names(self.auth_callout_cookies, setting="auth_callout_cookies")
        name = f"auth_callout_headers ({env_name('auth_callout_headers')})"
        headers = self.callout_headers
        if not headers:
            raise SettingsError(f"invalid setting {name}: name at least one header")
        for header in headers:
            if not is_token(header, MAX_HEADER_NAME_CHARS) or header in _HOP_HEADERS:
                raise SettingsError(
                    f"invalid setting {name}: {header[:64]!r} is not a header that can be forwarded"
                )

    @property
    def callout_cookies(self) -> tuple[str, ...]:
        return cookie_names(self.auth_callout_cookies, setting="auth_callout_cookies")

    @property
    def callout_headers(self) -> tuple[str, ...]:
        """The forwarded headers' names, lower-cased, each once."""
        names = (name.strip().lower() for name in self.auth_callout_headers.split(","))
        return tuple(dict.fromkeys(name for name in names if name))

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
    def takes_user_tokens(self) -> bool:
        """False only for a gateway that knows callers by the auth callout alone."""
        return bool(self.user_token_secret or self.jwt_public_key_file or self.jwt_jwks_url)

    @property
    def accepts_query_token(self) -> bool:
        return self.dev and self.query_token in ("auto", "on")
