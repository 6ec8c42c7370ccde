"""logstream.shared.ingest_client: what the SDK's transports say when ingest cannot be reached."""

from __future__ import annotations

import pytest

from logstream.shared.ingest_client import NatsTransport, TransportFailed
from tests.support.nats_source import free_port


@pytest.mark.parametrize("login", ["producer:hunter2@", "tok3n-s3cr3t@"])
async def test_an_unreachable_nats_url_is_named_without_its_secret(login):
    """A user/password and a token-only URL, in the comma-separated cluster form."""
    closed = [free_port(), free_port()]
    url = ",".join(f"nats://{login}127.0.0.1:{port}" for port in closed)
    with pytest.raises(TransportFailed) as failed:
        await NatsTransport.connect(url, timeout=0.5)
    message = str(failed.value)
    assert "hunter2" not in message and "tok3n-s3cr3t" not in message
    assert f"127.0.0.1:{closed[0]}" in message and f"127.0.0.1:{closed[1]}" in message
