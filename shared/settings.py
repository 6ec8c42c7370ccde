"""Settings: one frozen object per service, from flags and ``LOGSTREAM_<NAME>`` variables.

Each service declares a ``ServiceSettings`` subclass; every field is a setting with a flag
(``--nats-url``) and a variable (``LOGSTREAM_NATS_URL``). Flags win over variables, variables
over defaults. A bad value raises ``SettingsError`` naming the setting, so a service stops at
start instead of failing later. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any, Literal, Mapping, TypeVar

import msgspec
from msgspec import Meta

from shared.channels import DEFAULT_SERVICES, valid_segment
from shared.errors import SettingsError

__all__ = [
    "ENV_PREFIX",
    "ServiceSettings",
    "add_flags",
    "env_name",
    "flag_name",
    "load_settings",
    "require_in_production",
    "settings_table",
]

ENV_PREFIX = "LOGSTREAM_"
S = TypeVar("S", bound="ServiceSettings")


class ServiceSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What every service takes. Subclasses add their own fields and checks."""

    env: Annotated[
        Literal["dev", "production"],
        Meta(description="dev: built-in identities and dev routes; production: none of them, "
                         "and every secret is required"),
    ] = "production"
    host: Annotated[str, Meta(description="address to bind")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535, description="port to bind")] = 0
    nats_url: Annotated[
        str, Meta(min_length=1, description="NATS server URL(s), comma-separated")
    ] = "nats://127.0.0.1:4222"
    nats_user: Annotated[
        str, Meta(description="NATS user (dev default: the embedded broker's service user)")
    ] = ""
    nats_password: Annotated[str, Meta(description="NATS password")] = ""
    connect_timeout: Annotated[
        float, Meta(gt=0, le=120, description="seconds a first broker connect may take")
    ] = 5.0
    services: Annotated[
        str, Meta(description="service names a channel may use, comma-separated")
    ] = ",".join(sorted(DEFAULT_SERVICES))
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], Meta(description="stderr log level")
    ] = "info"

    @property
    def dev(self) -> bool:
        return self.env == "dev"

    @property
    def nats_servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @property
    def service_names(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.services.split(",") if name.strip())

    def check(self) -> None:
        """Cross-field rules; subclasses extend. Raise ``SettingsError`` naming the setting."""
        names = self.service_names
        if not names or not all(valid_segment(name) for name in names):
            raise SettingsError(
                f"invalid setting services ({env_name('services')}): {self.services!r} must be "
                "a comma-separated list of channel segments"
            )


def require_in_production(settings: ServiceSettings, name: str, what: str) -> None:
    """Outside dev mode there are no defaults for secrets: a missing one stops the service."""
    if not settings.dev and not getattr(settings, name):
        raise SettingsError(
            f"missing setting {name} ({env_name(name)}): production mode has no {what}; "
            "give one or run with --dev"
        )


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _fields(cls: type[ServiceSettings]) -> list[msgspec.structs.FieldInfo]:
    return list(msgspec.structs.fields(cls))


def _description(cls: type[ServiceSettings], field: str) -> str:
    for item in msgspec.inspect.type_info(cls).fields:
        if item.name == field:
            schema = getattr(item.type, "extra_json_schema", None) or {}
            return schema.get("description", "")
    return ""


def add_flags(parser: argparse.ArgumentParser, cls: type[ServiceSettings]) -> None:
    """One ``--flag`` per setting; values stay strings until ``load_settings`` converts them."""
    for field in _fields(cls):
        if field.name == "env":
            parser.add_argument("--dev", action="store_const", const="dev", dest="env",
                                help="dev mode: built-in identities and dev routes")
            parser.add_argument("--env", dest="env", help=_help(cls, field))
            continue
        parser.add_argument(flag_name(field.name), dest=field.name, help=_help(cls, field))


def _help(cls, field) -> str:
    return f"{_description(cls, field.name)} [{env_name(field.name)}, default: {field.default!r}]"


def load_settings(
    cls: type[S],
    environ: Mapping[str, str],
    flags: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> S:
    """Build ``cls`` from variables, then flags, then keyword overrides (for tests and `up`)."""
    raw: dict[str, Any] = {}
    for field in _fields(cls):
        if env_name(field.name) in environ:
            raw[field.name] = environ[env_name(field.name)]
        if flags and flags.get(field.name) is not None:
            raw[field.name] = flags[field.name]
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(str(exc), raw)) from None
    settings.check()
    return settings


def _explain(text: str, raw: Mapping[str, Any]) -> str:
    problem, _, where = text.partition(" - at `$.")
    field = where.rstrip("`").split(".")[0].split("[")[0]
    if not field:
        return f"invalid settings: {problem}"
    value = raw.get(field)
    return (
        f"invalid setting {field} ({env_name(field)} / {flag_name(field)}): "
        f"{problem} (given {value!r})"
    )


def settings_table(cls: type[ServiceSettings]) -> str:
    """The Markdown table of ``cls``'s settings, as the README shows it."""
    rows = ["| setting | variable | flag | default | meaning |", "|---|---|---|---|---|"]
    for field in _fields(cls):
        default = "" if field.default in ("", None) else f"`{field.default}`"
        rows.append(
            f"| {field.name} | `{env_name(field.name)}` | `{flag_name(field.name)}` | "
            f"{default} | {_description(cls, field.name)} |"
        )
    return "\n".join(rows)
