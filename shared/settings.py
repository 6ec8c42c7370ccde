"""Settings: one frozen object per service, from flags and ``LOGSTREAM_<NAME>`` variables.

Each service declares a ``ServiceSettings`` subclass; every field is a setting with a flag
(``--nats-url``) and a variable (``LOGSTREAM_NATS_URL``). Flags win over variables, variables
over defaults. A bad value raises ``SettingsError`` naming the setting, so a service stops at
start instead of failing later. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlparse

import msgspec
from msgspec import Meta

from logstream.shared.channels import DEFAULT_SERVICES, valid_segment
from logstream.shared.errors import SettingsError

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
T = TypeVar("T")


class ServiceSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What every service takes. Subclasses add their own fields and checks."""

    env: Annotated[
        Literal["dev", "production"],
        Meta(
            description="dev: built-in identities and dev routes; production: none of them, "
            "and every secret is required"
        ),
    ] = "production"
    host: Annotated[str, Meta(description="address to bind")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535, description="port to bind")] = 0
    nats_url: Annotated[
        str, Meta(min_length=1, description="NATS server URL(s), comma-separated")
    ] = "nats://127.0.0.1:4222"
    nats_user: Annotated[
        str,
        Meta(
            description="NATS user (dev default: the embedded broker's user of this "
            "service); or credentials in nats_url, or a creds/nkey file"
        ),
    ] = ""
    nats_password: Annotated[str, Meta(description="NATS password of nats_user")] = ""
    nats_monitor_url: Annotated[
        str,
        Meta(
            description="nats-server monitoring URL(s), comma-separated (http://host:8222): "
            "where /ready reads the broker's durability from (fsync, replicated, lazy)"
        ),
    ] = ""
    nats_creds_file: Annotated[
        str, Meta(description="NATS .creds file (user JWT and nkey seed), instead of nats_user")
    ] = ""
    nats_nkey_file: Annotated[
        str, Meta(description="NATS nkey seed file, instead of nats_user")
    ] = ""
    connect_timeout: Annotated[
        float, Meta(gt=0, le=120, description="seconds a first broker connect may take")
    ] = 5.0
    services: Annotated[
        str, Meta(description="service names a channel may use, comma-separated")
    ] = ",".join(sorted(DEFAULT_SERVICES))
    header_timeout: Annotated[
        float,
        Meta(
            gt=0,
            le=300,
            description="seconds a request's headers may take to arrive; a client still "
            "sending them is answered 408 and disconnected",
        ),
    ] = 10.0
    body_min_rate: Annotated[
        int,
        Meta(
            ge=1,
            le=1 << 30,
            description="bytes/s a request's body must average once its headers are in "
            "(after header_timeout of grace); a slower client is answered 408 and disconnected",
        ),
    ] = 1024
    max_pending_per_address: Annotated[
        int,
        Meta(
            ge=1,
            le=1_000_000,
            description="connections one client address may have still sending a request "
            "after 1 s (nothing on them is authenticated yet); the next one is answered 429 "
            "and disconnected",
        ),
    ] = 64
    max_connections: Annotated[
        int,
        Meta(
            ge=0,
            le=10_000_000,
            description="open HTTP connections of the process; past it a new one is answered "
            "503 with Retry-After. 0: the descriptor limit (raised to its hard limit at start) "
            "less a tenth kept for the broker, files and answering refusals",
        ),
    ] = 0
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], Meta(description="stderr log level")
    ] = "info"

    # Which NATS role the service connects as: its dev user and its inbox prefix
    # (logstream.shared.nats_link). Unset, it is the service's package name (logstream.services.<role>.settings).
    nats_role: ClassVar[str] = ""

    @property
    def dev(self) -> bool:
        return self.env == "dev"

    @property
    def nats_servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @property
    def nats_monitor_urls(self) -> list[str]:
        return [url.strip() for url in self.nats_monitor_url.split(",") if url.strip()]

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
        for url in self.nats_monitor_urls:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise SettingsError(
                    f"invalid setting nats_monitor_url ({env_name('nats_monitor_url')}): "
                    f"{url!r} is not an http(s)://host:port URL"
                )
        self._check_nats_login()

    def _check_nats_login(self) -> None:
        """At most one way to log in to NATS, and a credential file that is there."""
        ways = [
            name
            for name in ("nats_user", "nats_creds_file", "nats_nkey_file")
            if getattr(self, name)
        ]
        if any(urlparse(url).username for url in self.nats_servers):
            ways.insert(0, "nats_url")  # nats://user:password@host carries its own login
        if len(ways) > 1:
            first, second = (f"{name} ({env_name(name)})" for name in ways[:2])
            raise SettingsError(
                f"invalid settings: {first} and {second} are two ways to log in to NATS; give one"
            )
        if self.nats_password and not self.nats_user:
            raise SettingsError(
                f"invalid setting nats_password ({env_name('nats_password')}): "
                f"it needs nats_user ({env_name('nats_user')})"
            )
        for name in ("nats_creds_file", "nats_nkey_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise SettingsError(
                    f"invalid setting {name} ({env_name(name)}): no file at {path!r}"
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


def _struct_fields(cls: type[ServiceSettings]) -> tuple[msgspec.inspect.Field, ...]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)  # a settings class is a Struct
    return info.fields


def _description(cls: type[ServiceSettings], field: str) -> str:
    for item in _struct_fields(cls):
        if item.name == field:
            schema = getattr(item.type, "extra_json_schema", None) or {}
            return schema.get("description", "")
    return ""


def add_flags(parser: argparse.ArgumentParser, cls: type[ServiceSettings]) -> None:
    """One ``--flag`` per setting; values stay strings until ``load_settings`` converts them."""
    for field in _fields(cls):
        if field.name == "env":
            parser.add_argument(
                "--dev",
                action="store_const",
                const="dev",
                dest="env",
                help="dev mode: built-in identities and dev routes",
            )
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
        raise SettingsError(_explain(str(exc), raw, cls)) from None
    settings.check()
    return settings


def _explain(text: str, raw: Mapping[str, Any], cls: type[ServiceSettings]) -> str:
    problem, _, where = text.partition(" - at `$.")
    field = where.rstrip("`").split(".")[0].split("[")[0]
    if not field:
        return f"invalid settings: {problem}"
    value = raw.get(field)
    choices = _choices(cls, field)
    if choices:
        problem = f"it must be one of {', '.join(choices)}"
    return (
        f"invalid setting {field} ({env_name(field)} / {flag_name(field)}): "
        f"{problem} (given {value!r})"
    )


def _choices(cls: type[ServiceSettings], field: str) -> list[str]:
    """The allowed values of a ``Literal`` setting; empty for any other kind."""
    for item in _struct_fields(cls):
        kind = item.type
        kind = getattr(kind, "type", kind)  # through Annotated/Meta
        if item.name == field and isinstance(kind, msgspec.inspect.LiteralType):
            return [str(value) for value in kind.values]
    return []


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


def decode_toml_file(text: str, kind: type[T], refuse: Callable[[str], Exception]) -> T:
    """A settings file's TOML ``text`` as ``kind`` (a msgspec Struct); ``refuse(why)`` is raised
    when it is not TOML or not of that shape (the route table, the channel rules)."""
    try:
        return msgspec.convert(tomllib.loads(text), kind)
    except tomllib.TOMLDecodeError as exc:
        raise refuse(f"not valid TOML: {exc}") from None
    except msgspec.ValidationError as exc:
        raise refuse(str(exc).replace("$.", "")) from None
