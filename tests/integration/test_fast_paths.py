"""Every fast path that leans on a library's internals is on in the shipped configuration: each
service, started as ``logstream <service>`` is, says so in its /metrics
(``logstream_fast_path{path=...} 1``). A library upgrade that breaks a hook shows here as a 0
(the service still runs, on the library's ordinary path) or as a service that will not start."""

from __future__ import annotations

import httpx
import pytest

EXPECTED = {
    "ingest": {"uvicorn_connection", "nats_batch_writes", "nats_ack_intercept", "nats_ack_parser"},
    "gateway": {"uvicorn_connection", "nats_live_inbox"},
    "proxy": {"uvicorn_connection"},
}


def _fast_paths(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    paths = {}
    for line in text.splitlines():
        if line.startswith('logstream_fast_path{path="'):
            name = line.split('"')[1]
            paths[name] = float(line.rsplit(" ", 1)[1])
    return paths


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_each_services_fast_paths_are_on(stack, service):
    paths = _fast_paths(getattr(stack, service).url)
    assert set(paths) == EXPECTED[service]
    assert all(value == 1.0 for value in paths.values()), paths
