"""Attacks on ingest, over HTTP and over NATS, against a real production-mode ingest process.

The module runs its own nats-server (users as ``logstream up`` has them) so that its ingest is
the only member of the ``ingest`` queue group: NATS requests with this module's tokens reach
it and no other ingest. Tokens come from a token file, as in production. Every refusal is
checked three ways: the answer (status and words), the LOGS stream (nothing of the test's
unique channel was stored), and, for denials, the audit line in the process's own log.
"""

from __future__ import annotations

import hashlib
import json
import os

import httpx
import pytest

from logstream.services.ingest.app import LINGER_BYTES
from logstream.shared.identities import DEV_NATS_INGEST
from logstream.shared.nats_names import INGEST_SUBJECT, STREAM_NAME
from tests.support.jetstream import stored
from tests.support.nats_source import connect_as, embedded_for_tests, free_port
from tests.support.processes import ServiceProcess
from tests.support.waiting import wait_until

PUBLISH = "/api/logs/publish"
# Records/s and bucket size of every token here: the burst is below the batch limit (1,000),
# so a batch can be too big for the burst alone; each rate test has a token of its own.
RATE, BURST = 50, 500
REPLY_TIMEOUT_S = 10
# name -> (secret, grants). Secrets exist only in this test; the token file holds their hashes.
TOKENS = {
    "sec-etl": (f"etl-{os.urandom(16).hex()}", ["logs:etl"]),
    "sec-rate-http": (f"rate-http-{os.urandom(16).hex()}", ["logs:analytics"]),
    "sec-rate-nats": (f"rate-nats-{os.urandom(16).hex()}", ["logs:analytics"]),
}
ETL_SECRET = TOKENS["sec-etl"][0]
ETL = {"Authorization": f"Bearer {ETL_SECRET}"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    server = embedded_for_tests(port=free_port(), store_dir=tmp_path_factory.mktemp("nats-sec"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ingest(broker, log_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("sec-tokens") / "tokens.toml"
    path.write_text(
        "".join(
            f'[[tokens]]\nname = "{name}"\n'
            f'sha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"\ngrants = {json.dumps(grants)}\n'
            for name, (secret, grants) in TOKENS.items()
        )
    )
    user, password = DEV_NATS_INGEST
    service = ServiceProcess(
        "ingest",
        nats_url=broker.url,
        log_dir=log_dir,
        dev=False,
        args=[
            "--tokens-file",
            str(path),
            "--nats-user",
            user,
            "--nats-password",
            password,
            "--publish-rate",
            str(RATE),
            "--publish-burst",
            str(BURST),
        ],
    ).start()
    yield service
    service.stop()


@pytest.fixture
async def client(ingest):
    async with httpx.AsyncClient(base_url=ingest.url, timeout=20) as http:
        yield http


@pytest.fixture
async def js(broker, ingest):
    reader = await connect_as(broker.url, "gateway")
    yield reader.jetstream()
    await reader.close()


@pytest.fixture
async def producer(broker, ingest):
    client = await connect_as(broker.url, "producer")
    yield client
    await client.close()


def rec(channel: str, message: str = "hello", **extra) -> dict:
    return {"channel": channel, "message": message, **extra}


async def nothing_stored(js, unique_id: str) -> bool:
    """No record of any service's channels of workspace ``unique_id`` reached the stream."""
    return (
        await stored(js, f"logs.*.{unique_id}") == []
        and await stored(js, f"logs.*.{unique_id}.>") == []
    )


async def nats_request(producer, body, headers=None) -> tuple[dict, dict]:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await producer.request(
        INGEST_SUBJECT, payload, headers=headers, timeout=REPLY_TIMEOUT_S
    )
    return json.loads(reply.data), reply.headers or {}


class Audit:
    """The audit lines the module's ingest writes, from a mark on."""

    def __init__(self, ingest: ServiceProcess) -> None:
        self.ingest = ingest
        self.mark = len(self.lines())

    def lines(self) -> list[dict]:
        return self.ingest.audit_lines()

    async def await_line(self, **expected) -> dict:
        """The first new line carrying ``expected``; written before the answer, so the poll
        only bounds a slow filesystem."""

        def match() -> dict | None:
            return next(
                (
                    line
                    for line in self.lines()[self.mark :]
                    if all(line.get(k) == v for k, v in expected.items())
                ),
                None,
            )

        return await wait_until(match, f"an audit line with {expected}", timeout=10)


# Bodies: size, encoding, nesting


async def test_a_chunked_body_that_never_ends_is_cut_off_not_read_to_its_end(client, ingest):
    sent, chunk = [0], b" " * (1024 * 1024)
    endless = 1024 * len(chunk)  # 1 GiB, far past what the server may read

    async def body():
        while sent[0] < endless:
            sent[0] += len(chunk)
            yield chunk

    rss_before = _rss_bytes(ingest)
    try:
        response = await client.post(
            PUBLISH, content=body(), headers={**ETL, "Content-Type": "application/json"}
        )
    except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
        pass  # the connection was cut while we were still writing: what an endless body gets
    else:
        assert response.status_code == 413, response.text
    # The server read at most the limit and then LINGER_BYTES more before cutting the
    # connection; socket buffers account for the rest.
    assert sent[0] < 1024 * 1024 + LINGER_BYTES + 64 * 1024 * 1024, sent[0]
    if rss_before is not None:
        assert _rss_bytes(ingest) - rss_before < 64 * 1024 * 1024
    assert (await client.get("/health")).status_code == 200


def _rss_bytes(service: ServiceProcess) -> int | None:
    assert service.process is not None  # started by the fixture
    try:
        status = open(f"/proc/{service.process.pid}/status").read()
    except OSError:
        return None
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) * 1024


async def test_a_body_refused_before_it_was_read_still_gets_its_answer(client, unique_id):
    async def body():  # chunked, 3 MiB: over the limit, within what the server drains
        for _ in range(3):
            yield b" " * (1024 * 1024)

    response = await client.post(
        PUBLISH,
        content=body(),
        headers={"Authorization": "Bearer wrong", "Content-Type": "application/json"},
    )
    assert response.status_code == 401 and response.json()["error"] == "unauthenticated"


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
async def test_a_body_that_is_not_utf8_is_a_400_and_nothing_is_stored(
    client, js, unique_id, content_type
):
    body = json.dumps(rec(f"logs:etl:{unique_id}", "caf_")).encode().replace(b"caf_", b"caf\xe9")
    response = await client.post(
        PUBLISH, content=body, headers={**ETL, "Content-Type": content_type}
    )
    assert response.status_code == 400, response.text
    assert "UTF-8" in response.json()["message"]
    assert await nothing_stored(js, unique_id)


@pytest.mark.parametrize("depth", [33, 100, 5000])
async def test_deeply_nested_fields_are_a_400_and_nothing_is_stored(client, js, unique_id, depth):
    nested = b"[" * depth + b"]" * depth
    body = b'{"channel": "logs:etl:%s", "message": "m", "fields": {"a": %s}}' % (
        unique_id.encode(),
        nested,
    )
    response = await client.post(
        PUBLISH, content=body, headers={**ETL, "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert "nest" in response.json()["message"]
    assert await nothing_stored(js, unique_id)


SIZES = [
    pytest.param({"message": "é" * (32 * 1024 + 1)}, "message", id="message-64KiB-in-bytes"),
    pytest.param({"fields": {"k": "v" * (16 * 1024)}}, "fields", id="fields-over-16KiB"),
    pytest.param({"source": "s" * 129}, "source", id="source-129"),
    pytest.param({"id": "i" * 129}, "id", id="id-129"),
    pytest.param({"channel": "logs:etl:{u}:" + "r" * 65}, "channel", id="segment-65"),
]


@pytest.mark.parametrize(("change", "field"), SIZES)
async def test_a_field_over_its_size_is_a_400_naming_it_and_nothing_is_stored(
    client, js, unique_id, change, field
):
    bad = {
        **rec(f"logs:etl:{unique_id}"),
        **{k: v.replace("{u}", unique_id) if k == "channel" else v for k, v in change.items()},
    }
    response = await client.post(PUBLISH, json=[rec(f"logs:etl:{unique_id}"), bad], headers=ETL)
    assert response.status_code == 400, response.text
    assert [(d["index"], d["field"]) for d in response.json()["details"]] == [(1, field)]
    assert await nothing_stored(js, unique_id)


async def test_the_largest_fields_and_message_that_fit_are_stored(client, js, unique_id):
    body = rec(
        f"logs:etl:{unique_id}",
        "é" * (32 * 1024),
        source="s" * 128,
        id="i" * 128,
        fields={"k": "v" * (16 * 1024 - 8)},
    )
    response = await client.post(PUBLISH, json=body, headers=ETL)
    assert response.status_code == 202, response.text
    [(_, _, record)] = await stored(js, f"logs.etl.{unique_id}")
    assert record["message"] == body["message"] and record["fields"] == body["fields"]


async def test_cr_lf_and_nul_inside_strings_are_data_stored_escaped(client, js, unique_id):
    nasty = "a\r\nevent: log\r\ndata: forged\n\nid: 999\x00z"
    body = rec(
        f"logs:etl:{unique_id}",
        nasty,
        source=nasty[:100],
        id=f"x\r\n{unique_id}",
        fields={"k\n": nasty},
    )
    response = await client.post(PUBLISH, json=body, headers=ETL)
    assert response.status_code == 202, response.text
    raw = (await js.get_msg(STREAM_NAME, seq=response.json()["seqs"][0])).data
    assert not any(byte in raw for byte in (b"\r", b"\n", b"\x00"))
    record = json.loads(raw)
    assert (record["message"], record["source"], record["fields"]) == (
        nasty,
        nasty[:100],
        {"k\n": nasty},
    )


@pytest.mark.parametrize(
    "channel",
    ["logs:etl:{u}\r\nx", "logs:etl:{u}\x00", "logs:etl:{u}.>", "logs:etl:{u}:*", "logs:etl:{u} x"],
)
async def test_control_and_subject_characters_in_a_channel_are_a_400(
    client, js, unique_id, channel
):
    response = await client.post(PUBLISH, json=rec(channel.replace("{u}", unique_id)), headers=ETL)
    assert response.status_code == 400, response.text
    assert response.json()["details"][0]["field"] == "channel"
    assert await nothing_stored(js, unique_id)


# Credentials


# Longer than any token (4,096), shorter than all the headers a request may carry (32 KiB).
ABSURD = [
    pytest.param({"Authorization": "Bearer " + "a" * 20_000}, "token_invalid", id="bearer-20k"),
    pytest.param({"X-Service-Token": "a" * 20_000}, "token_invalid", id="x-service-token-20k"),
    pytest.param({"Authorization": "x" * 20_000}, "no_credential", id="no-scheme-20k"),
    pytest.param(
        {"Authorization": "Bearer " + ETL_SECRET + "0"}, "token_invalid", id="secret-plus-a-byte"
    ),
    pytest.param(
        {"Authorization": "Bearer " + ETL_SECRET[:-1]}, "token_invalid", id="secret-minus-a-byte"
    ),
    pytest.param(
        {"Authorization": "Bearer " + hashlib.sha256(ETL_SECRET.encode()).hexdigest()},
        "token_invalid",
        id="the-stored-hash",
    ),
]


@pytest.mark.parametrize(("headers", "rule"), ABSURD)
async def test_an_absurd_or_near_miss_credential_is_a_clear_401_audited_and_nothing_stored(
    client, js, ingest, unique_id, headers, rule
):
    audit = Audit(ingest)
    response = await client.post(PUBLISH, json=rec(f"logs:etl:{unique_id}"), headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthenticated" and response.json()["message"]
    line = await audit.await_line(status=401)
    assert (line["who"], line["rule"], line["via"]) == ("anonymous", rule, "http")
    assert await nothing_stored(js, unique_id)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": "Bearer " + "a" * 100_000}, id="one-100k-header"),
        pytest.param({f"X-Pad-{i}": "x" for i in range(150)}, id="150-headers"),
    ],
)
async def test_headers_past_32k_or_100_headers_are_a_431_before_any_handler(
    client, js, unique_id, headers
):
    response = await client.post(PUBLISH, json=rec(f"logs:etl:{unique_id}"), headers=headers)
    assert response.status_code == 431
    assert response.json()["error"] == "request_headers_too_large"
    assert "at most 100 headers, 32768 bytes" in response.json()["message"]
    assert await nothing_stored(js, unique_id)


@pytest.mark.parametrize("value", ["Bearer " + ETL_SECRET + "\x7f", "\x01" * 10])
async def test_a_control_byte_in_a_credential_header_is_a_400_of_the_http_parser(
    client, js, unique_id, value
):
    response = await client.post(
        PUBLISH, json=rec(f"logs:etl:{unique_id}"), headers={"Authorization": value}
    )
    assert response.status_code == 400  # uvicorn refuses the request line; the app never runs
    assert await nothing_stored(js, unique_id)


async def test_a_token_from_the_file_publishes_under_its_name(client, js, unique_id):
    response = await client.post(
        PUBLISH, json=rec(f"logs:etl:{unique_id}"), headers={"X-Service-Token": ETL_SECRET}
    )
    assert response.status_code == 202, response.text
    [(_, _, record)] = await stored(js, f"logs.etl.{unique_id}")
    assert record["publisher"] == "sec-etl"


# Rate and burst


async def test_a_batch_over_the_burst_is_a_413_that_no_wait_would_fix(client, js, unique_id):
    batch = [rec(f"logs:etl:{unique_id}", f"m{i}") for i in range(BURST + 1)]
    response = await client.post(PUBLISH, json=batch, headers=ETL)
    assert response.status_code == 413, response.text
    assert "Retry-After" not in response.headers
    assert f"burst of {BURST}" in response.json()["message"]
    assert await nothing_stored(js, unique_id)


async def test_over_the_publish_rate_is_a_429_with_retry_after_and_an_audit_line(
    client, js, ingest, unique_id
):
    secret = TOKENS["sec-rate-http"][0]
    headers = {"Authorization": f"Bearer {secret}"}
    full = [rec(f"logs:analytics:{unique_id}", f"m{i}") for i in range(BURST)]
    assert (await client.post(PUBLISH, json=full, headers=headers)).status_code == 202
    audit = Audit(ingest)
    response = await client.post(PUBLISH, json=full[:200], headers=headers)
    assert response.status_code == 429, response.text
    # 200 records at 50/s: at most 4 s away, and never less than 1.
    assert 1 <= int(response.headers["Retry-After"]) <= 4
    assert "'sec-rate-http'" in response.json()["message"]
    line = await audit.await_line(status=429)
    assert (line["who"], line["rule"], line["via"]) == (
        "token:sec-rate-http",
        "publish_rate",
        "http",
    )
    assert len(await stored(js, f"logs.analytics.{unique_id}")) == BURST


# The same rules over NATS (docs/reference/ingest.md#nats)


@pytest.mark.parametrize(
    ("headers", "rule"),
    [
        (None, "no_credential"),
        ({"Authorization": "Bearer wrong"}, "token_invalid"),
        ({"Authorization": "Bearer " + "a" * 100_000}, "token_invalid"),
    ],
)
async def test_a_nats_request_without_a_valid_token_is_401_and_audited(
    producer, js, ingest, unique_id, headers, rule
):
    audit = Audit(ingest)
    reply, _ = await nats_request(producer, rec(f"logs:etl:{unique_id}"), headers)
    assert reply["status"] == 401 and reply["error"] == "unauthenticated"
    line = await audit.await_line(status=401, via="nats")
    assert (line["who"], line["what"], line["rule"]) == ("anonymous", INGEST_SUBJECT, rule)
    assert await nothing_stored(js, unique_id)


async def test_a_nats_batch_mixing_granted_and_refused_channels_is_403_and_audited(
    producer, js, ingest, unique_id
):
    audit = Audit(ingest)
    refused = [f"logs:faas:{unique_id}", f"logs:platform:{unique_id}:x"]
    reply, _ = await nats_request(
        producer,
        [rec(f"logs:etl:{unique_id}"), rec(refused[0]), rec(refused[1]), rec(refused[0])],
        ETL,
    )
    assert reply["status"] == 403
    assert reply["details"] == [{"channel": channel} for channel in refused]
    line = await audit.await_line(status=403, via="nats")
    assert (line["who"], line["what"], line["rule"]) == (
        "token:sec-etl",
        ",".join(refused),
        "grant",
    )
    assert await nothing_stored(js, unique_id)


async def test_a_nats_token_publishes_under_its_name(producer, js, unique_id):
    reply, _ = await nats_request(producer, rec(f"logs:etl:{unique_id}"), ETL)
    assert reply["status"] == 202, reply
    [(_, _, record)] = await stored(js, f"logs.etl.{unique_id}")
    assert record["publisher"] == "sec-etl"


async def test_over_the_publish_rate_over_nats_is_429_with_retry_after_and_audited(
    producer, js, ingest, unique_id
):
    headers = {"Authorization": f"Bearer {TOKENS['sec-rate-nats'][0]}"}
    full = [rec(f"logs:analytics:{unique_id}", f"m{i}") for i in range(BURST)]
    first, _ = await nats_request(producer, full, headers)
    assert first["status"] == 202, first
    audit = Audit(ingest)
    reply, reply_headers = await nats_request(producer, full[:200], headers)
    assert reply["status"] == 429 and reply["error"] == "rate_limited"
    assert 1 <= int(reply_headers["Retry-After"]) <= 4
    line = await audit.await_line(status=429, via="nats")
    assert (line["who"], line["what"], line["rule"]) == (
        "token:sec-rate-nats",
        INGEST_SUBJECT,
        "publish_rate",
    )
    assert len(await stored(js, f"logs.analytics.{unique_id}")) == BURST


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b'{"channel": "logs:etl:U", "message": "caf\xe9"}', 400, id="not-utf8"),
        pytest.param(
            b'{"channel": "logs:etl:U", "message": "m", "fields": {"a": '
            + b"[" * 5000
            + b"]" * 5000
            + b"}}",
            400,
            id="nested-5000",
        ),
        pytest.param(
            json.dumps([{"channel": "logs:etl:U", "message": "m"}] * (BURST + 1)).encode(),
            413,
            id="over-the-burst",
        ),
    ],
)
async def test_bad_bodies_over_nats_get_the_http_answers(producer, js, unique_id, body, status):
    reply, _ = await nats_request(producer, body.replace(b"U", unique_id.encode()), ETL)
    assert reply["status"] == status, reply
    assert reply["message"]
    assert await nothing_stored(js, unique_id)


# Secrets


async def test_no_secret_reaches_the_log_whatever_was_refused(client, producer, ingest, unique_id):
    audit = Audit(ingest)
    for secret, _ in TOKENS.values():
        await client.post(
            PUBLISH,
            json=rec(f"logs:platform:{unique_id}"),
            headers={"Authorization": f"Bearer {secret}"},
        )
        await client.post(
            PUBLISH,
            json=rec(f"logs:platform:{unique_id}"),
            headers={"Authorization": f"Bearer {secret}x"},
        )
        await nats_request(
            producer, rec(f"logs:platform:{unique_id}"), {"Authorization": f"Bearer {secret}"}
        )
    await audit.await_line(status=403, via="nats", who="token:sec-rate-nats")
    text = ingest.log_path.read_text(errors="replace")
    for secret, _ in TOKENS.values():
        assert secret not in text
        assert hashlib.sha256(secret.encode()).hexdigest() not in text
