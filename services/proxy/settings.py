"""Settings of the proxy service."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from logstream.shared.cookies import cookie_names
from logstream.shared.errors import SettingsError
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.settings import ServiceSettings, env_name
from logstream.shared.user_tokens import secret_key

__all__ = ["Settings"]


class Settings(ServiceSettings, frozen=True, kw_only=True):
    port: Annotated[int, Meta(ge=0, le=65535, description="port to bind")] = 3000
    gateway_url: Annotated[
        str, Meta(min_length=1, description="gateway base URL(s), comma-separated")
    ] = "http://127.0.0.1:3002"
    routes_file: Annotated[
        str, Meta(description="TOML route table (default: the packaged Datashop routes)")
    ] = ""
    jwt_secret: Annotated[
        str,
        Meta(
            description="HS256 secret for /dev/token (dev mode only; the proxy issues "
            "no token in production and ignores it there)"
        ),
    ] = ""

    forward_cookies: Annotated[
        str,
        Meta(
            description="the browser's cookies passed to the gateway besides logstream_session, "
            "comma-separated: the product's session cookie, for the gateway's auth callout "
            "(the Logs page then offers no dev users)",
        ),
    ] = ""
    sign_in_url: Annotated[
        str,
        Meta(
            description="where the Logs page sends a visitor who is not signed in "
            "(the product's login page; ?next= is the page's address; the page then offers "
            "no dev users)",
        ),
    ] = ""

    def check(self) -> None:
        super().check()
        cookie_names(self.forward_cookies, setting="forward_cookies")
        if self.sign_in_url and not self.sign_in_url.startswith(("http://", "https://", "/")):
            raise SettingsError(
                f"invalid setting sign_in_url ({env_name('sign_in_url')}): "
                f"{self.sign_in_url[:200]!r} must be an http(s) URL or a path starting with /"
            )
        for url in self.gateway_urls:
            if not url.startswith(("http://", "https://")):
                raise SettingsError(
                    f"invalid setting gateway_url ({env_name('gateway_url')}): {url!r} "
                    "must start with http:// or https://"
                )
        if self.dev and self.jwt_secret:
            secret_key(self.jwt_secret)  # too short a secret stops the proxy, naming it

    @property
    def forwarded_cookies(self) -> tuple[str, ...]:
        return cookie_names(self.forward_cookies, setting="forward_cookies")

    @property
    def gateway_urls(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.gateway_url.split(",") if u.strip()]

    @property
    def user_token_secret(self) -> str:
        """The secret /dev/token signs with; none outside dev mode, where that route is absent."""
        if not self.dev:
            return ""
        return self.jwt_secret or DEV_JWT_SECRET
