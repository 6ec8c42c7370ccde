"""Reading the broker's durability (logstream.shared.durability) from what nats-server says."""

from __future__ import annotations

import msgspec
import pytest
from nats.js.errors import NotFoundError

from logstream.services.ingest.settings import Settings
from logstream.shared.durability import (
    REFRESH_S,
    UNREAD_REFRESH_S,
    BrokerDurability,
    classify,
    read_sync,
)
from logstream.shared.settings import SettingsError


def _varz(**config) -> bytes:
    return msgspec.json.encode({"server_id": "x", "jetstream": {"config": config}})


@pytest.mark.parametrize(
    ("config", "sync"),
    [
        ({"sync_always": True, "sync_interval": 120_000_000_000}, "always"),
        ({"max_memory": 1}, "2m"),  # no sync_interval: nats-server's default
        ({"sync_interval": 120_000_000_000}, "2m"),
        ({"sync_interval": 10_000_000_000}, "10s"),
        ({"sync_interval": 1_500_000_000}, "1.5s"),
    ],
)
def test_the_sync_setting_is_read_from_varz(config, sync):
    assert read_sync(_varz(**config)) == sync


@pytest.mark.parametrize("body", [b"<html>", b"{}", msgspec.json.encode({"jetstream": {}})])
def test_a_body_without_jetstream_config_is_a_clear_error(body):
    with pytest.raises(ValueError, match=r"varz|JetStream"):
        read_sync(body)


@pytest.mark.parametrize(
    ("syncs", "replicas", "mode"),
    [
        (["always"], 1, "fsync"),
        (["always", "always"], 1, "fsync"),
        (["always", "2m"], 1, "lazy"),  # one node that does not sync is enough to lose writes
        (["2m"], 1, "lazy"),
        (["2m"], 3, "replicated"),
        (None, 3, "replicated"),
        (["always"], 3, "replicated"),
        (None, 1, "unknown"),
        ([], 1, "unknown"),
    ],
)
def test_durability_follows_sync_and_replicas(syncs, replicas, mode):
    assert classify(syncs, replicas) == mode


@pytest.mark.parametrize("url", ["nats://127.0.0.1:8222", "127.0.0.1:8222", "http://"])
def test_a_monitor_url_that_is_not_http_is_refused_at_start(url):
    with pytest.raises(SettingsError, match="nats_monitor_url"):
        Settings(env="dev", nats_monitor_url=url).check()


class _Stream:
    """What ``BrokerDurability.refresh`` reads of a JetStream context: LOGS's config."""

    def __init__(self, replicas: int | None) -> None:
        self.replicas = replicas

    async def stream_info(self, name: str):
        if self.replicas is None:
            raise NotFoundError
        config = type("Config", (), {"num_replicas": self.replicas})()
        return type("Info", (), {"config": config})()


async def test_until_the_stream_is_read_the_next_look_comes_soon_then_every_refresh():
    durability = BrokerDurability([])
    await durability.refresh(_Stream(None))  # a gateway started before ingest made LOGS
    assert durability.replicas is None and "NotFoundError" in durability.problem
    assert durability.next_refresh_s() == UNREAD_REFRESH_S < REFRESH_S
    await durability.refresh(_Stream(3))
    assert durability.details()["stream_replicas"] == 3 and durability.mode == "replicated"
    assert durability.next_refresh_s() == REFRESH_S
