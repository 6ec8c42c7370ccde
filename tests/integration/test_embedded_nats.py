"""logstream.shared.embedded_nats against a real nats-server: JetStream, its users, start and stop.

What each user may and may not do in detail: tests/integration/test_broker_permissions.py.
"""

from __future__ import annotations

import asyncio
import socket
import uuid

import nats
import pytest

from logstream.shared.embedded_nats import EmbeddedNats
from logstream.shared.identities import DEV_NATS_PRODUCER
from logstream.shared.nats_link import settle
from logstream.shared.nats_names import INGEST_SUBJECT
from tests.support.nats_source import (
    client_options,
    embedded_for_tests,
    free_port,
    url_as,
)

# Generous bounds for a busy 2-core machine; every wait below ends on an event well before.
WAIT_S = 5.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    server = embedded_for_tests(port=free_port(), store_dir=tmp_path_factory.mktemp("embedded"))
    server.start()
    yield server
    server.stop()


async def connect(server: EmbeddedNats, role: str, **options):
    return await nats.connect(
        url_as(server.url, role),
        connect_timeout=2,
        max_reconnect_attempts=0,
        allow_reconnect=False,
        **client_options(role),
        **options,
    )


@pytest.fixture
async def service_nc(broker):
    """The ingest user: the one that consumes ingest.logs (in its queue group)."""
    client = await connect(broker, "ingest")
    yield client
    await client.close()


@pytest.fixture
async def admin_nc(broker):
    """The test superuser, for what no role may do (a stream of its own, plain subscriptions)."""
    client = await connect(broker, "admin")
    yield client
    await client.close()


@pytest.fixture
async def producer(broker):
    """The producer user's connection, with the errors the server sent it."""
    errors: asyncio.Queue = asyncio.Queue()

    async def on_error(exc: Exception) -> None:
        errors.put_nowait(exc)

    client = await connect(broker, "producer", error_cb=on_error)
    client.errors = errors
    yield client
    await client.close()


def test_the_embedded_server_listens_on_the_port_it_was_given(broker):
    assert broker.url == f"nats://127.0.0.1:{broker.port}"
    assert broker.process.poll() is None
    with socket.create_connection((broker.host, broker.port), timeout=WAIT_S) as sock:
        assert sock.recv(4).startswith(b"INFO")


async def test_jetstream_stores_a_published_message(admin_nc):
    js = admin_nc.jetstream(timeout=WAIT_S)
    name = "T" + uuid.uuid4().hex[:10].upper()
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
    first = await js.publish(f"{name.lower()}.a", b"one")
    second = await js.publish(f"{name.lower()}.b", b"two")
    assert (first.stream, first.seq, second.seq) == (name, 1, 2)
    stored = await js.get_msg(name, 2)
    assert (stored.subject, stored.data) == (f"{name.lower()}.b", b"two")
    await js.delete_stream(name)


async def test_the_producer_may_publish_to_ingest_logs(service_nc, producer):
    sub = await service_nc.subscribe(INGEST_SUBJECT, queue="ingest")
    await settle(service_nc)
    await producer.publish(INGEST_SUBJECT, b'{"channel": "logs:etl:ws1", "message": "m"}')
    message = await sub.next_msg(timeout=WAIT_S)
    assert message.data.startswith(b'{"channel"')
    assert producer.errors.empty()
    await sub.unsubscribe()


async def test_the_producer_may_request_on_ingest_logs_and_receive_the_reply(service_nc, producer):
    async def answer(message) -> None:
        await message.respond(b'{"status": 202}')

    sub = await service_nc.subscribe(INGEST_SUBJECT, queue="ingest", cb=answer)
    await settle(service_nc)
    reply = await producer.request(INGEST_SUBJECT, b"{}", timeout=WAIT_S)
    assert reply.data == b'{"status": 202}'
    await sub.unsubscribe()


async def test_a_producer_publish_to_a_log_subject_is_a_permissions_violation(admin_nc, producer):
    seen: asyncio.Queue = asyncio.Queue()

    async def record(message) -> None:
        seen.put_nowait(message.subject)

    subs = [await admin_nc.subscribe(s, cb=record) for s in ("logs.x", INGEST_SUBJECT)]
    await settle(admin_nc)
    await producer.publish("logs.x", b"forged")
    # The server handles one connection's messages in order: once this marker arrives, a
    # forged message that got through would already have been delivered before it.
    await producer.publish(INGEST_SUBJECT, b"marker")
    error = await asyncio.wait_for(producer.errors.get(), WAIT_S)
    assert "permissions violation" in str(error).lower() and "logs.x" in str(error)
    assert await asyncio.wait_for(seen.get(), WAIT_S) == INGEST_SUBJECT
    assert seen.empty()
    assert producer.is_connected
    for sub in subs:
        await sub.unsubscribe()


async def test_the_producer_may_not_subscribe_to_log_subjects(producer):
    await producer.subscribe("logs.>")
    error = await asyncio.wait_for(producer.errors.get(), WAIT_S)
    assert "permissions violation" in str(error).lower() and "logs.>" in str(error)


async def test_a_wrong_nats_password_is_refused(broker):
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(
            broker.url_as((DEV_NATS_PRODUCER[0], "wrong")),
            connect_timeout=2,
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )


def test_stop_ends_the_process_and_frees_the_port(tmp_path):
    server = EmbeddedNats(port=free_port(), store_dir=tmp_path).start()
    server.stop()
    assert server.process.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=WAIT_S).close()
    server.stop()  # a second stop is harmless


def test_a_port_held_by_another_socket_fails_with_a_runtime_error_naming_it(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        server = EmbeddedNats(port=port, store_dir=tmp_path)
        with pytest.raises(RuntimeError, match=f"port {port}"):
            server.start()
        assert server.process is None  # refused before starting anything


def test_a_port_another_server_listens_on_fails_with_a_runtime_error_naming_it(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = EmbeddedNats(port=port, store_dir=tmp_path)
        try:
            with pytest.raises(RuntimeError, match=f"port {port}"):
                server.start()
        finally:
            server.stop()
