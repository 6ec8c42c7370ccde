"""Broker-enforced permissions (docs/reference/ingest.md#nats): each NATS user tries what it must not do.

Against a real nats-server configured as ``logstream up``'s (the suite's, when it is the
embedded one), read back through the real gateway with httpx-sse: a producer subscribing to
other users' inboxes, to ``logs.>`` or to the JetStream API, publishing a forged record, deleting
the stream. Then the services' logins (user/password, an nkey seed file, a ``.creds`` file on an
operator-mode server) and the audit line a refused service connection writes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import nats
import nkeys
import pytest
from nats.js.api import ConsumerConfig

from logstream.children import notable
from logstream.services.gateway.settings import Settings as GatewaySettings
from logstream.services.ingest.settings import Settings as IngestSettings
from logstream.shared.embedded_nats import find_nats_server
from logstream.shared.errors import BrokerUnavailable, SettingsError
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.nats_link import (
    NatsLink,
    broker_options,
    connect_options,
    ensure_stream,
    role_of,
    settle,
)
from logstream.shared.nats_names import INGEST_SUBJECT, REJECTED_SUBJECT, STREAM_NAME, redact_url
from logstream.shared.nats_permissions import role_permissions
from logstream.shared.settings import ServiceSettings, load_settings
from logstream.shared.user_tokens import UserTokens
from tests.support.jetstream import stored
from tests.support.nats_source import connect_as, embedded_for_tests, free_port
from tests.support.processes import ServiceProcess
from tests.support.sse_client import open_stream
from tests.support.waiting import WaitTimeout, wait_until, wait_until_blocking

# Bounds of waits that end on an event well before on a healthy run (busy 2-core machine).
WAIT_S = 10.0
# A request the broker silently drops is answered by nobody: this is how long we let it wait.
REFUSED_REQUEST_S = 1.0
ETL = {"Authorization": "Bearer l5-etl-token"}
TOKEN = UserTokens(DEV_JWT_SECRET).issue("user123", ["workspace123"])


@pytest.fixture(scope="module")
def broker(nats_server):
    if not nats_server.with_users:
        pytest.skip("the suite's NATS is not the embedded one: it has no users to enforce")
    return nats_server


class Violations:
    """A client's error callback, keeping the permission violations the broker reported."""

    def __init__(self) -> None:
        self.seen: asyncio.Queue[str] = asyncio.Queue()

    async def record(self, exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            self.seen.put_nowait(str(exc))

    async def next(self) -> str:
        return await asyncio.wait_for(self.seen.get(), WAIT_S)


# (role, what it tries, subject): each must be a permissions violation naming the subject.
DENIED = [
    ("producer", "publish", "logs.etl.workspace123.forged"),
    ("producer", "publish", REJECTED_SUBJECT),
    ("producer", "publish", "$JS.API.STREAM.DELETE.LOGS"),
    ("producer", "publish", "$JS.API.CONSUMER.CREATE.LOGS"),
    ("producer", "subscribe", "_INBOX.>"),
    ("producer", "subscribe", "_INBOX_gateway.>"),
    ("producer", "subscribe", "_INBOX_ingest.>"),
    ("producer", "subscribe", "logs.>"),
    ("producer", "subscribe", "$JS.API.>"),
    ("producer", "subscribe", INGEST_SUBJECT),  # other producers' messages and their tokens
    ("ingest", "publish", "$JS.API.STREAM.DELETE.LOGS"),
    ("ingest", "publish", "$JS.API.STREAM.PURGE.LOGS"),
    ("ingest", "publish", "$JS.API.CONSUMER.CREATE.LOGS"),
    ("ingest", "subscribe", "logs.>"),
    ("ingest", "subscribe", "_INBOX_gateway.>"),
    ("ingest", "subscribe", INGEST_SUBJECT),  # outside its queue group
    ("ingest", "queue other", INGEST_SUBJECT),
    ("gateway", "publish", "logs.etl.workspace123.forged"),
    ("gateway", "publish", REJECTED_SUBJECT),
    ("gateway", "publish", "$JS.API.STREAM.DELETE.LOGS"),
    ("gateway", "publish", "$JS.API.STREAM.PURGE.LOGS"),
    ("gateway", "publish", "$JS.API.STREAM.UPDATE.LOGS"),
    ("gateway", "publish", "$JS.API.CONSUMER.DURABLE.CREATE.LOGS.spy"),
    ("gateway", "subscribe", "logs.>"),
    ("gateway", "subscribe", INGEST_SUBJECT),
    ("gateway", "subscribe", "_INBOX_producer.>"),
]


@pytest.mark.parametrize(
    ("role", "action", "subject"), DENIED, ids=[f"{r}-{a.split()[0]}-{s}" for r, a, s in DENIED]
)
async def test_a_user_doing_what_its_role_does_not_do_is_a_permissions_violation(
    broker, role, action, subject
):
    violations = Violations()
    client = await broker.connect(role, error_cb=violations.record)
    try:
        if action == "publish":
            await client.publish(subject, b"{}")
        else:
            queue = action.split()[1] if " " in action else ""
            await client.subscribe(subject, queue=queue)
        error = await violations.next()
    finally:
        await client.close()
    refused = "publish" if action == "publish" else "subscription"
    assert f'permissions violation for {refused} to "{subject}"'.lower() in error.lower()


async def test_a_producer_sees_nothing_of_a_live_stream_on_inboxes_logs_or_the_api(
    broker, stack, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    watched = [
        "_INBOX.>",
        "_INBOX_gateway.>",
        "_INBOX_ingest.>",
        "logs.>",
        "live.logs.>",
        "$JS.API.>",
    ]
    violations, leaked = Violations(), []
    seen_by_operator: dict[str, list[bytes]] = {subject: [] for subject in watched}

    async def leak(msg) -> None:
        leaked.append(msg.subject)

    def seen_on(subject: str):
        async def seen(msg) -> None:
            seen_by_operator[subject].append(msg.data)

        return seen

    producer = await broker.connect("producer", error_cb=violations.record)
    operator = await broker.connect("admin")  # the control: the traffic is really there
    try:
        for subject in watched:
            await producer.subscribe(subject, cb=leak)
            await operator.subscribe(subject, cb=seen_on(subject))
        await settle(producer)
        await settle(operator)
        refused = {await violations.next() for _ in watched}
        async with open_stream(
            f"{stack.gateway.url}/api/logs/stream?channels={channel}", token=stack.user_token()
        ) as stream:
            await stream.next_of("connected")
            response = httpx.post(
                f"{stack.ingest.url}/api/logs/publish",
                headers=ETL,
                json={"channel": channel, "message": f"secret {unique_id}"},
            )
            assert response.status_code == 202, response.text
            [record] = await stream.logs(1)
        await settle(producer)  # a delivery made with the gateway's would have arrived by now
        await settle(operator)
    finally:
        await producer.close()
        await operator.close()
    assert record["message"] == f"secret {unique_id}"
    # nats-py lowercases the server's error text, subject included
    assert all(any(f'"{subject.lower()}"' in error for error in refused) for subject in watched)
    assert leaked == []
    for subject in ("live.logs.>", "logs.>"):  # the record went by on these
        assert any(unique_id.encode() in data for data in seen_by_operator[subject]), subject


async def test_a_record_a_producer_publishes_to_a_log_subject_never_reaches_a_reader(
    broker, stack, unique_id
):
    channel = f"logs:etl:workspace123:{unique_id}"
    subject = channel.replace(":", ".")
    forged = {
        "channel": channel,
        "message": "forged",
        "level": "info",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "received_at": "2026-01-01T00:00:00.000Z",
        "publisher": "l5-etl-token",
        "source": None,
        "fields": None,
        "id": None,
    }
    violations = Violations()
    producer = await broker.connect("producer", error_cb=violations.record)
    reader = await broker.connect("gateway")
    try:
        async with open_stream(
            f"{stack.gateway.url}/api/logs/stream?channels={channel}", token=stack.user_token()
        ) as stream:
            await stream.next_of("connected")
            await producer.publish(subject, json.dumps(forged).encode())
            await settle(producer)
            error = await violations.next()
            # Stored after anything the forged publish could have stored (one stream, in order).
            response = httpx.post(
                f"{stack.ingest.url}/api/logs/publish",
                headers=ETL,
                json={"channel": channel, "message": "genuine"},
            )
            assert response.status_code == 202, response.text
            [first] = await stream.logs(1)
        records = await stored(reader.jetstream(timeout=5), subject)
    finally:
        await producer.close()
        await reader.close()
    assert f'publish to "{subject}"' in error
    assert first["message"] == "genuine" and first["publisher"] == "l5-etl-token"
    assert [record["message"] for _, _, record in records] == ["genuine"]


async def test_a_producer_can_neither_create_a_consumer_nor_delete_the_stream(broker, stack):
    violations = Violations()
    producer = await broker.connect("producer", error_cb=violations.record)
    reader = await broker.connect("gateway")
    try:
        before = await reader.jetstream(timeout=5).stream_info(STREAM_NAME)
        js = producer.jetstream(timeout=REFUSED_REQUEST_S)
        with pytest.raises(nats.errors.TimeoutError):  # nobody answers a dropped request
            await js.add_consumer(STREAM_NAME, ConsumerConfig(filter_subject="logs.>"))
        with pytest.raises(nats.errors.TimeoutError):
            await js.delete_stream(STREAM_NAME)
        errors = [await violations.next(), await violations.next()]
        after = await reader.jetstream(timeout=5).stream_info(STREAM_NAME)
    finally:
        await producer.close()
        await reader.close()
    assert any('"$js.api.consumer.create.logs' in error for error in errors)  # lowercased
    assert any('"$js.api.stream.delete.logs"' in error for error in errors)
    assert after.created == before.created and after.state.last_seq >= before.state.last_seq


# --- the services' own logins ---------------------------------------------------------------


def _seed(prefix: int) -> bytes:
    return nkeys.encode_seed(os.urandom(32), prefix)


def _without_logs(role: str) -> dict:
    """``role``'s permissions with ``logs.>`` taken out of what it may publish."""
    permissions = role_permissions(role)
    allowed = [s for s in permissions["publish"]["allow"] if s != "logs.>"]
    return {**permissions, "publish": {"allow": allowed}}


@pytest.fixture(scope="module")
def gateway_seed(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nkey") / "gateway.nk"
    path.write_bytes(_seed(nkeys.PREFIX_BYTE_USER))
    return path


@pytest.fixture(scope="module")
def own_users_broker(tmp_path_factory, gateway_seed):
    """A broker with two users of this module's own: an nkey with the gateway's permissions,
    and an ingest-like user that may not publish to logs.>."""
    public = nkeys.from_seed(gateway_seed.read_bytes()).public_key.decode()
    users = [
        {"nkey": public, "permissions": role_permissions("gateway")},
        {
            "user": "ingest-no-logs",
            "password": "s3cret-no-logs",
            "permissions": _without_logs("ingest"),
        },
    ]
    broker = embedded_for_tests(
        port=free_port(), store_dir=tmp_path_factory.mktemp("users"), extra_users=users
    ).start()
    yield broker
    broker.stop()


async def test_a_gateway_logged_in_with_an_nkey_seed_file_serves_streams(
    own_users_broker, gateway_seed, log_dir, unique_id
):
    writer = await connect_as(own_users_broker.url, "ingest")
    js = writer.jetstream(timeout=5)
    await ensure_stream(js, max_age_s=600, max_bytes=1 << 24, duplicate_window_s=60)
    channel = f"logs:etl:workspace123:{unique_id}"
    gateway = ServiceProcess(
        "gateway",
        nats_url=own_users_broker.url,
        log_dir=log_dir,
        env={"LOGSTREAM_NATS_NKEY_FILE": str(gateway_seed)},
    ).start()
    try:
        async with open_stream(
            f"{gateway.url}/api/logs/stream?channels={channel}", token=TOKEN
        ) as stream:
            await stream.next_of("connected")
            record = {"channel": channel, "message": "via nkey", "level": "info"}
            seq = (await js.publish(channel.replace(":", "."), json.dumps(record).encode())).seq
            [received] = await stream.logs(1)
    finally:
        gateway.stop()
        await writer.close()
    assert received["seq"] == seq and received["message"] == "via nkey"


async def test_an_nkey_the_broker_does_not_know_is_refused_naming_its_public_key(
    own_users_broker, tmp_path
):
    seed = tmp_path / "stranger.nk"
    seed.write_bytes(_seed(nkeys.PREFIX_BYTE_USER))
    public = nkeys.from_seed(seed.read_bytes()).public_key.decode()
    settings = load_settings(
        GatewaySettings,
        {},
        env="dev",
        nats_url=own_users_broker.url,
        nats_nkey_file=str(seed),
        connect_timeout=5,
    )
    with pytest.raises(BrokerUnavailable, match=f"as {public}.*(?i:authorization violation)"):
        await NatsLink.connect(settings, name="stranger")


async def test_a_refused_publish_on_a_service_link_is_one_audit_line_naming_user_and_subject(
    own_users_broker, log_dir, unique_id
):
    ingest = ServiceProcess(
        "ingest",
        nats_url=own_users_broker.url,
        log_dir=log_dir,
        args=["--nats-user", "ingest-no-logs", "--nats-password", "s3cret-no-logs"],
    ).start()
    subject = f"logs.etl.{unique_id}"
    try:
        response = httpx.post(
            f"{ingest.url}/api/logs/publish",
            headers=ETL,
            timeout=WAIT_S,
            json={"channel": f"logs:etl:{unique_id}", "message": "m"},
        )
        try:
            lines = await wait_until(
                lambda: [line for line in ingest.log().splitlines() if subject in line],
                f"ingest's log to name {subject}",
                timeout=WAIT_S,
            )
        except WaitTimeout as late:
            raise AssertionError(f"{late}\n{ingest.log()}") from late
    finally:
        ingest.stop()
    assert response.status_code == 503  # not confirmed: the broker dropped the publish
    [line] = [line for line in lines if '"audit"' in line]
    entry = json.loads(line)
    assert (entry["audit"], entry["who"], entry["what"], entry["rule"], entry["via"]) == (
        "denied",
        "nats:ingest-no-logs",
        subject,
        "nats_permissions",
        "nats",
    )
    assert "s3cret" not in ingest.log()
    assert notable(line) == f"warning: denied nats:ingest-no-logs {subject} (nats_permissions)"


# --- .creds files: a user JWT signed by an account, on an operator-mode nats-server --------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(issuer, subject: str, name: str, nats_claims: dict) -> str:
    """A NATS JWT (ed25519-nkey), as ``nsc`` issues them."""
    claims = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats_claims, "version": 2},
    }
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signed = (
        f"{_b64(json.dumps({'typ': 'JWT', 'alg': 'ed25519-nkey'}).encode())}."
        f"{_b64(json.dumps(claims).encode())}"
    )
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


@pytest.fixture(scope="module")
def operator_broker(tmp_path_factory):
    """nats-server in operator mode with one account and a gateway user's ``.creds`` file,
    whose JWT carries the gateway role's permissions."""
    work = tmp_path_factory.mktemp("operator")
    operator, account, system, user = (
        nkeys.from_seed(_seed(prefix))
        for prefix in (
            nkeys.PREFIX_BYTE_OPERATOR,
            nkeys.PREFIX_BYTE_ACCOUNT,
            nkeys.PREFIX_BYTE_ACCOUNT,
            nkeys.PREFIX_BYTE_USER,
        )
    )
    key = {k: k.public_key.decode() for k in (operator, account, system, user)}
    unlimited = {
        name: -1
        for name in (
            "subs",
            "data",
            "payload",
            "imports",
            "exports",
            "conn",
            "leaf",
            "mem_storage",
            "disk_storage",
            "streams",
            "consumer",
        )
    }
    permissions = role_permissions("gateway")
    user_jwt = _jwt(
        account,
        key[user],
        "gateway",
        {
            "type": "user",
            "subs": -1,
            "data": -1,
            "payload": -1,
            "pub": {"allow": permissions["publish"]["allow"]},
            "sub": {"allow": permissions["subscribe"]["allow"]},
        },
    )
    config = {
        "host": "127.0.0.1",
        "port": free_port(),
        "operator": _jwt(operator, key[operator], "logstream", {"type": "operator"}),
        "system_account": key[system],
        "resolver": "MEMORY",
        "resolver_preload": {
            key[account]: _jwt(
                operator,
                key[account],
                "LOGS",
                {"type": "account", "limits": {**unlimited, "wildcards": True}},
            ),
            key[system]: _jwt(operator, key[system], "SYS", {"type": "account"}),
        },
        "jetstream": {"store_dir": str(work / "store")},
    }
    (work / "server.conf").write_text(json.dumps(config))
    (work / "gateway.creds").write_text(
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n"
    )
    log = open(work / "server.log", "wb")
    process = subprocess.Popen(
        [find_nats_server(), "-c", str(work / "server.conf")], stdout=log, stderr=log
    )

    def ready() -> bool:
        assert process.poll() is None, (work / "server.log").read_text()
        return "Server is ready" in (work / "server.log").read_text()

    try:
        wait_until_blocking(ready, "the operator-mode nats-server to be ready", timeout=WAIT_S)
    except WaitTimeout as late:
        raise AssertionError(f"{late}\n{(work / 'server.log').read_text()}") from late
    yield f"nats://127.0.0.1:{config['port']}", work / "gateway.creds"
    process.terminate()
    process.wait(5)
    log.close()


async def test_a_service_logs_in_with_a_creds_file_and_its_jwt_permissions_hold(
    operator_broker, caplog
):
    url, creds = operator_broker
    settings = load_settings(
        GatewaySettings, {}, env="dev", nats_url=url, nats_creds_file=str(creds), connect_timeout=5
    )
    link = await NatsLink.connect(settings, name="creds-test")
    try:
        assert link.connected
        with pytest.raises(nats.js.errors.NotFoundError):  # the JetStream API answers it
            await link.js.stream_info(STREAM_NAME)
        with caplog.at_level("WARNING", logger="logstream.audit"):
            await link.nc.publish("logs.etl.ws.forged", b"{}")
            await wait_until(
                lambda: caplog.records, "the audit line of the forged publish", timeout=WAIT_S
            )
    finally:
        await link.close()
    [entry] = caplog.records
    assert (entry.who, entry.what, entry.rule) == (
        "nats:creds:gateway.creds",
        "logs.etl.ws.forged",
        "nats_permissions",
    )


# --- which login a service's settings give nats-py ------------------------------------------


def _settings(cls=GatewaySettings, **given) -> ServiceSettings:
    return load_settings(cls, {}, env="dev", **given)


class _NamedRole(ServiceSettings, frozen=True, kw_only=True):
    """A service's Settings that names its role instead of taking its package's name."""

    nats_role = "ingest"


@pytest.mark.parametrize(
    ("cls", "role"), [(IngestSettings, "ingest"), (GatewaySettings, "gateway")]
)
def test_in_dev_mode_each_service_logs_in_as_its_own_user_with_its_own_inbox(cls, role):
    options = connect_options(_settings(cls), name="t")
    assert role_of(_settings(cls)) == role
    assert (options["user"], options["inbox_prefix"]) == (role, f"_INBOX_{role}")


def test_outside_dev_mode_there_is_no_default_login_but_the_inbox_is_the_roles():
    settings = load_settings(_NamedRole, {}, env="production")
    options = connect_options(settings, name="t")
    assert not {"user", "password", "user_credentials", "nkeys_seed"} & set(options)
    assert options["inbox_prefix"] == "_INBOX_ingest"


def test_credentials_in_the_url_are_the_login_even_in_dev_mode():
    options = connect_options(_settings(nats_url="nats://me:pw@127.0.0.1:4222"), name="t")
    assert "user" not in options and options["servers"] == ["nats://me:pw@127.0.0.1:4222"]


def test_a_creds_file_or_an_nkey_file_goes_to_nats_py_and_to_faststream(tmp_path, gateway_seed):
    creds = tmp_path / "x.creds"
    creds.write_text("not read until connect")
    assert connect_options(_settings(nats_creds_file=str(creds)), name="t")[
        "user_credentials"
    ] == str(creds)
    assert connect_options(_settings(nats_nkey_file=str(gateway_seed)), name="t")[
        "nkeys_seed"
    ] == str(gateway_seed)
    faststream = broker_options(
        _settings(IngestSettings, nats_nkey_file=str(gateway_seed)), name="t"
    )
    assert type(faststream["security"]).__name__ == "NatsNKey"
    assert "nkeys_seed" not in faststream and callable(faststream["error_cb"])


def test_settings_of_no_service_have_no_role_and_the_default_inbox():
    settings = load_settings(ServiceSettings, {}, env="dev")
    options = connect_options(settings, name="t")
    assert role_of(settings) == "" and "inbox_prefix" not in options and "user" not in options


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (
            {"nats_user": "u", "nats_creds_file": __file__},
            "nats_user (LOGSTREAM_NATS_USER) and nats_creds_file",
        ),
        (
            {"nats_creds_file": __file__, "nats_nkey_file": __file__},
            "nats_creds_file (LOGSTREAM_NATS_CREDS_FILE) and nats_nkey_file",
        ),
        (
            {"nats_url": "nats://u:p@h:4222", "nats_nkey_file": __file__},
            "nats_url (LOGSTREAM_NATS_URL) and",
        ),
        (
            {"nats_nkey_file": "/absent/seed.nk"},
            "nats_nkey_file (LOGSTREAM_NATS_NKEY_FILE): no file",
        ),
    ],
)
def test_one_login_at_a_time_and_a_file_that_is_there(given, named):
    with pytest.raises(SettingsError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load_settings(ServiceSettings, {}, env="dev", **given)


def test_a_password_never_reaches_a_log_line_through_the_url():
    assert redact_url("nats://ingest:hunter2@a:4222,nats://b:4222,nats://tok3n@c:4222") == (
        "nats://ingest:***@a:4222,nats://b:4222,nats://***@c:4222"
    )
