"""Settings of the gateway service."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from shared.errors import SettingsError
from shared.identities import DEV_JWT_SECRET
from shared.settings import ServiceSettings, env_name, require_in_production

__all__ = ["Settings"]

# Below the 30-60 s idle timeouts of common proxies and load balancers (CONTRACT: <= 15 s).
DEFAULT_HEARTBEAT_S = 15.0
# How long a browser waits before reconnecting after a drop.
DEFAULT_RETRY_MS = 2000
# A slow reader may hold this much queued output before it is cut off with `overflow`.
DEFAULT_OUTBOX_BYTES = 1024 * 1024


class Settings(ServiceSettings, frozen=True, kw_only=True):
    port: Annotated[int, Meta(ge=0, le=65535, description="port to bind")] = 3002
    jwt_secret: Annotated[
        str, Meta(description="HS256 secret of user tokens (required outside dev mode)")
    ] = ""
    heartbeat: Annotated[
        float, Meta(gt=0, le=300, description="seconds between heartbeat comments")
    ] = DEFAULT_HEARTBEAT_S
    retry_ms: Annotated[
        int, Meta(ge=0, le=600000, description="reconnect delay sent as `retry:`")
    ] = DEFAULT_RETRY_MS
    max_channels: Annotated[
        int, Meta(ge=1, le=1000, description="most channels on one stream")
    ] = 20
    max_connections_per_user: Annotated[
        int, Meta(ge=1, description="open streams one user may hold")
    ] = 32
    outbox_bytes: Annotated[
        int, Meta(ge=4096, description="bytes queued for one connection before `overflow`")
    ] = DEFAULT_OUTBOX_BYTES
    query_token: Annotated[
        str, Meta(description="accept ?access_token= (auto: only in dev mode; on; off)")
    ] = "auto"

    def check(self) -> None:
        super().check()
        if self.query_token not in ("auto", "on", "off"):
            raise SettingsError(
                f"invalid setting query_token ({env_name('query_token')}): "
                f"{self.query_token!r} is not one of auto, on, off"
            )
        require_in_production(self, "jwt_secret", "default user-token secret")

    @property
    def user_token_secret(self) -> str:
        return self.jwt_secret or DEV_JWT_SECRET

    @property
    def accepts_query_token(self) -> bool:
        return self.query_token == "on" or (self.query_token == "auto" and self.dev)
