"""logstream.shared.settings and the services' Settings: flags, variables, defaults, and loud failures."""

from __future__ import annotations

import argparse

import msgspec
import pytest

from logstream.services.gateway.settings import Settings as GatewaySettings
from logstream.services.ingest.settings import Settings as IngestSettings
from logstream.services.proxy.settings import Settings as ProxySettings
from logstream.shared.errors import SettingsError
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.settings import (
    ServiceSettings,
    add_flags,
    env_name,
    flag_name,
    load_settings,
    settings_table,
)

ALL_SETTINGS = [ServiceSettings, IngestSettings, GatewaySettings, ProxySettings]
DEV = {"LOGSTREAM_ENV": "dev"}


def test_defaults_apply_when_nothing_is_given():
    settings = load_settings(ServiceSettings, {})
    assert (settings.env, settings.host, settings.nats_url) == (
        "production",
        "127.0.0.1",
        "nats://127.0.0.1:4222",
    )
    assert settings.service_names == {"etl", "faas", "analytics", "platform"}


def test_a_variable_beats_the_default_and_a_flag_beats_the_variable():
    environ = {"LOGSTREAM_PORT": "4000", "LOGSTREAM_HOST": "0.0.0.0"}
    assert load_settings(ServiceSettings, environ).port == 4000
    settings = load_settings(ServiceSettings, environ, {"port": "5000", "host": None})
    assert (settings.port, settings.host) == (5000, "0.0.0.0")


def test_keyword_overrides_beat_flags_and_variables():
    settings = load_settings(
        ServiceSettings, {"LOGSTREAM_PORT": "4000"}, {"port": "5000"}, port=6000
    )
    assert settings.port == 6000


def test_variables_are_only_read_from_the_mapping_given():
    assert load_settings(ServiceSettings, {"PORT": "1", "logstream_port": "2"}).port == 0


def test_argparse_flags_feed_load_settings():
    parser = argparse.ArgumentParser()
    add_flags(parser, GatewaySettings)
    flags = vars(
        parser.parse_args(
            [
                "--dev",
                "--port",
                "3100",
                "--nats-url",
                "nats://x:1",
                "--max-connections-per-user",
                "3",
            ]
        )
    )
    settings = load_settings(GatewaySettings, {"LOGSTREAM_PORT": "9"}, flags)
    assert settings.dev and settings.port == 3100 and settings.nats_servers == ["nats://x:1"]
    assert settings.max_connections_per_user == 3


def test_the_env_flag_and_the_dev_flag_set_the_same_setting():
    parser = argparse.ArgumentParser()
    add_flags(parser, ServiceSettings)
    assert vars(parser.parse_args(["--env", "dev"]))["env"] == "dev"
    assert vars(parser.parse_args([]))["env"] is None


def test_several_nats_urls_and_services_are_comma_separated():
    settings = load_settings(
        ServiceSettings,
        {
            "LOGSTREAM_NATS_URL": "nats://a:4222, nats://b:4222,",
            "LOGSTREAM_SERVICES": "etl, billing",
        },
    )
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222"]
    assert settings.service_names == {"etl", "billing"}


INVALID = [
    (ServiceSettings, "port", "abc"),
    (ServiceSettings, "port", "70000"),
    (ServiceSettings, "port", "-1"),
    (ServiceSettings, "env", "staging"),
    (ServiceSettings, "nats_url", ""),
    (ServiceSettings, "connect_timeout", "0"),
    (ServiceSettings, "connect_timeout", "nan"),
    (ServiceSettings, "connect_timeout", "soon"),
    (ServiceSettings, "log_level", "verbose"),
    (ServiceSettings, "services", "etl,bad.name"),
    (ServiceSettings, "services", " , "),
    (IngestSettings, "max_body_bytes", "12"),
    (IngestSettings, "max_batch_records", "0"),
    (IngestSettings, "retention", "forever"),
    (IngestSettings, "retention", "0s"),
    (IngestSettings, "duplicate_window", "-2m"),
    (IngestSettings, "duplicate_window", "9" * 400 + "d"),
    (IngestSettings, "retention_bytes", "1"),
    (IngestSettings, "stream_replicas", "6"),
    (IngestSettings, "publish_timeout", "0"),
    (IngestSettings, "publish_rate", "-1"),
    (IngestSettings, "publish_burst", "-1"),
    (GatewaySettings, "heartbeat", "0"),
    (GatewaySettings, "heartbeat", "301"),
    (GatewaySettings, "retry_ms", "-1"),
    (GatewaySettings, "max_channels", "0"),
    (GatewaySettings, "max_connections_per_user", "0"),
    (GatewaySettings, "outbox_bytes", "100"),
    (GatewaySettings, "query_token", "maybe"),
    (ProxySettings, "gateway_url", "ftp://gateway"),
    (ProxySettings, "gateway_url", "http://ok, gateway:3002"),
    (ProxySettings, "gateway_url", ""),
]


@pytest.mark.parametrize(("cls", "field", "value"), INVALID)
def test_an_invalid_variable_names_the_setting_and_its_variable(cls, field, value):
    with pytest.raises(SettingsError) as caught:
        load_settings(cls, {**DEV, env_name(field): value})
    assert f"setting {field} " in caught.value.message
    assert env_name(field) in caught.value.message


@pytest.mark.parametrize(("cls", "field", "value"), INVALID)
def test_an_invalid_flag_is_refused_the_same_way(cls, field, value):
    with pytest.raises(SettingsError, match=f"setting {field} .*{env_name(field)}"):
        load_settings(cls, DEV, {field: value})


def test_a_type_error_message_also_names_the_flag_and_the_value_given():
    with pytest.raises(SettingsError) as caught:
        load_settings(ServiceSettings, {"LOGSTREAM_PORT": "abc"})
    assert "--port" in caught.value.message and "'abc'" in caught.value.message


def test_ingest_in_production_without_a_token_file_refuses_naming_it():
    with pytest.raises(SettingsError) as caught:
        load_settings(IngestSettings, {})
    assert "tokens_file" in caught.value.message
    assert "LOGSTREAM_TOKENS_FILE" in caught.value.message
    assert load_settings(IngestSettings, {"LOGSTREAM_TOKENS_FILE": "/etc/t.json"}).tokens_file


def test_ingest_in_dev_mode_needs_no_token_file():
    settings = load_settings(IngestSettings, {}, {"env": "dev"})
    assert settings.dev and settings.retention_s == 7 * 86400
    assert settings.duplicate_window_s == 120


def test_the_gateway_in_production_without_a_jwt_secret_refuses_naming_it():
    with pytest.raises(SettingsError) as caught:
        load_settings(GatewaySettings, {})
    assert "jwt_secret" in caught.value.message
    assert "LOGSTREAM_JWT_SECRET" in caught.value.message
    settings = load_settings(GatewaySettings, {"LOGSTREAM_JWT_SECRET": "s" * 40})
    assert settings.user_token_secret == "s" * 40


def test_the_gateway_in_dev_mode_uses_the_dev_secret():
    assert load_settings(GatewaySettings, DEV).user_token_secret == DEV_JWT_SECRET


def test_the_proxy_in_production_needs_no_secret_but_a_valid_gateway_url():
    settings = load_settings(
        ProxySettings, {"LOGSTREAM_GATEWAY_URL": "http://g1:3002/, https://g2"}
    )
    assert settings.gateway_urls == ["http://g1:3002", "https://g2"]


@pytest.mark.parametrize(
    ("env", "query_token", "accepted"),
    [
        ("dev", "auto", True),
        ("dev", "on", True),
        ("dev", "off", False),
        ("production", "auto", False),
        ("production", "off", False),
        ("production", "on", None),
    ],
)
def test_query_tokens_are_on_in_dev_and_never_in_production(env, query_token, accepted):
    environ = {
        "LOGSTREAM_ENV": env,
        "LOGSTREAM_QUERY_TOKEN": query_token,
        "LOGSTREAM_JWT_SECRET": "s" * 40,
    }
    if accepted is None:  # URLs end up in access logs: production refuses to start instead
        with pytest.raises(SettingsError, match=r"query_token .*LOGSTREAM_QUERY_TOKEN.*dev mode"):
            load_settings(GatewaySettings, environ)
        return
    assert load_settings(GatewaySettings, environ).accepts_query_token is accepted


@pytest.mark.parametrize("cls", ALL_SETTINGS)
def test_the_settings_table_lists_every_field_with_its_variable_flag_and_meaning(cls):
    table = settings_table(cls).splitlines()
    fields = [field.name for field in msgspec.structs.fields(cls)]
    assert len(table) == 2 + len(fields)
    for field, row in zip(fields, table[2:]):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[:3] == [field, f"`{env_name(field)}`", f"`{flag_name(field)}`"]
        assert cells[4], f"{field} has no description"


def test_settings_are_frozen():
    settings = load_settings(ServiceSettings, {})
    with pytest.raises(AttributeError):
        settings.port = 1


@pytest.mark.parametrize(
    ("variable", "value", "choices"),
    [
        ("LOGSTREAM_ENV", "prod", "dev, production"),
        ("LOGSTREAM_LOG_LEVEL", "loud", "debug, error, info, warning"),
    ],
)
def test_a_value_outside_a_settings_choices_is_refused_listing_them(variable, value, choices):
    with pytest.raises(SettingsError) as refused:
        load_settings(ProxySettings, {variable: value})
    assert f"it must be one of {choices} (given {value!r})" in refused.value.message
