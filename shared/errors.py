"""The one exception tree of Logstream.

Every failure a caller can act on is a subclass of ``LogstreamError``. HTTP status codes are
chosen at the route layer (``logstream.shared.web``), never here::

    LogstreamError
    ├── SettingsError            a setting is missing or invalid (service refuses to start)
    ├── InvalidRequest           the input breaks the contract (400)
    │   └── InvalidChannel       a channel outside the grammar of docs/reference/channels.md
    ├── Unauthenticated          no credential, or one that does not verify (401)
    ├── Forbidden                a valid credential that does not cover the request (403)
    ├── PayloadTooLarge          body over the configured limit (413)
    ├── UnsupportedMediaType     body in a format we do not take (415)
    ├── RateLimited              over a rate or connection cap (429, Retry-After)
    ├── BrokerUnavailable        NATS or JetStream did not confirm in time (503, Retry-After)
    └── AuthUnavailable          the product's auth backend did not answer usably (503, Retry-After)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthUnavailable",
    "BrokerUnavailable",
    "Forbidden",
    "InvalidChannel",
    "InvalidRequest",
    "LogstreamError",
    "PayloadTooLarge",
    "RateLimited",
    "SettingsError",
    "Unauthenticated",
    "UnsupportedMediaType",
]


class LogstreamError(Exception):
    """Base of every Logstream error: a machine code, a human message and optional details."""

    code = "error"

    def __init__(
        self, message: str, *, details: list[Any] | None = None, rule: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        # Which rule refused the request, for the audit log (``logstream.shared.audit``); the code if unset.
        self.rule = rule or self.code

    def to_body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}


class SettingsError(LogstreamError):
    code = "invalid_setting"


class InvalidRequest(LogstreamError):
    code = "invalid_request"


class InvalidChannel(InvalidRequest):
    code = "invalid_channel"


class Unauthenticated(LogstreamError):
    code = "unauthenticated"


class Forbidden(LogstreamError):
    code = "forbidden"


class PayloadTooLarge(LogstreamError):
    code = "payload_too_large"


class UnsupportedMediaType(LogstreamError):
    code = "unsupported_media_type"


class RateLimited(LogstreamError):
    code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: int = 1,
        details: list[Any] | None = None,
        rule: str | None = None,
    ):
        super().__init__(message, details=details, rule=rule)
        self.retry_after = retry_after


class BrokerUnavailable(LogstreamError):
    code = "broker_unavailable"

    def __init__(self, message: str, *, retry_after: int = 2, details: list[Any] | None = None):
        super().__init__(message, details=details)
        self.retry_after = retry_after


class AuthUnavailable(LogstreamError):
    """The product's backend, asked who a caller is (the gateway's auth callout), was down,
    slow or answered something that is no answer: nobody is let in on it (fail closed)."""

    code = "auth_unavailable"

    def __init__(self, message: str, *, retry_after: int = 2) -> None:
        super().__init__(message, rule="callout_unavailable")
        self.retry_after = retry_after
