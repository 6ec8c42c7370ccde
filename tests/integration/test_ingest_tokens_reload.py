"""SIGHUP makes a running ingest re-read its token file (docs/reference/identities.md), without a restart.

A real ingest process in production mode reads a JSON token file; the tests rewrite the file,
send SIGHUP and poll (with a deadline) until the new tokens are the ones that work. A file that
does not load leaves the tokens in place and says why in one error line.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal

import httpx
import pytest

from logstream.shared.identities import DEV_NATS_INGEST
from tests.support.jetstream import stored
from tests.support.processes import ServiceProcess
from tests.support.waiting import wait_until, wait_until_blocking

PUBLISH = "/api/logs/publish"
# A reload is one file read after the signal; this only bounds a slow, busy machine.
RELOAD_WITHIN_S = 15.0


def new_secret(label: str) -> str:
    return f"{label}-{os.urandom(12).hex()}"


def write_tokens(path, tokens: dict[str, str]) -> None:
    """``tokens``: name -> secret; the file holds only each secret's SHA-256."""
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    {
                        "name": name,
                        "sha256": hashlib.sha256(secret.encode()).hexdigest(),
                        "grants": ["logs:etl"],
                    }
                    for name, secret in tokens.items()
                ]
            }
        )
    )


@pytest.fixture(scope="module")
def tokens_path(tmp_path_factory):
    return tmp_path_factory.mktemp("reload") / "tokens.json"


@pytest.fixture(scope="module")
def first_secret(tokens_path):
    secret = new_secret("first")
    write_tokens(tokens_path, {"etl-first": secret})
    return secret


@pytest.fixture(scope="module")
def ingest(nats_server, log_dir, tokens_path, first_secret):
    user, password = DEV_NATS_INGEST
    service = ServiceProcess(
        "ingest",
        nats_url=nats_server.url,
        log_dir=log_dir,
        dev=False,
        args=["--tokens-file", str(tokens_path), "--nats-user", user, "--nats-password", password],
    ).start()
    yield service
    service.stop()


def publish(ingest: ServiceProcess, secret: str, channel: str) -> httpx.Response:
    return httpx.post(
        ingest.url + PUBLISH,
        json={"channel": channel, "message": "m"},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )


async def publish_status(ingest: ServiceProcess, secret: str, channel: str) -> int:
    """The status ``publish`` gets, for async tests (the event loop keeps running)."""
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            ingest.url + PUBLISH,
            json={"channel": channel, "message": "m"},
            headers={"Authorization": f"Bearer {secret}"},
        )
    return answer.status_code


def log_lines(ingest: ServiceProcess) -> list[dict]:
    return [
        entry
        for entry in ingest.log_entries()
        if str(entry.get("msg", "")).startswith("service tokens")
    ]


def reload(ingest: ServiceProcess) -> list[dict]:
    """Send SIGHUP and wait for the reload's own log line; returns that line's successors."""
    before = len(log_lines(ingest))
    assert ingest.process is not None  # started by the fixture
    ingest.process.send_signal(signal.SIGHUP)
    return wait_until_blocking(
        lambda: log_lines(ingest)[before:],
        "the reload's log line after SIGHUP",
        timeout=RELOAD_WITHIN_S,
    )


def metric(ingest: ServiceProcess, sample: str) -> float:
    for line in httpx.get(ingest.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_sighup_swaps_the_token_file_without_a_restart(
    ingest, tokens_path, first_secret, nc, unique_id
):
    channel = f"logs:etl:{unique_id}"
    assert publish(ingest, first_secret, channel).status_code == 202
    pid = ingest.process.pid

    second = new_secret("second")
    write_tokens(tokens_path, {"etl-second": second})
    ingest.process.send_signal(signal.SIGHUP)

    async def swapped() -> bool:
        return (
            await publish_status(ingest, first_secret, channel) == 401
            and await publish_status(ingest, second, channel) == 202
        )

    await wait_until(
        swapped,
        "the first token refused (401) and the second accepted (202) after SIGHUP",
        timeout=RELOAD_WITHIN_S,
    )
    assert ingest.process.poll() is None and ingest.process.pid == pid
    [line] = [entry for entry in log_lines(ingest) if "reloaded" in entry["msg"]][-1:]
    assert line["level"] == "info" and "1 token(s)" in line["msg"]
    assert str(tokens_path) in line["msg"]
    publishers = [
        record["publisher"]
        for _, _, record in await stored(nc.jetstream(), channel.replace(":", "."))
    ]
    assert publishers[0] == "etl-first" and publishers[-1] == "etl-second"
    assert metric(ingest, "logstream_ingest_service_tokens") == 1


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param('{"tokens": [', id="not-json"),
        pytest.param(
            json.dumps({"tokens": [{"name": "x", "sha256": "nothex", "grants": []}]}),
            id="bad-digest",
        ),
        pytest.param(
            json.dumps({"tokens": [{"name": "x", "sha256": "a" * 64, "grants": ["logs:nope"]}]}),
            id="bad-grant",
        ),
        pytest.param(None, id="file-gone"),
    ],
)
def test_a_bad_token_file_on_sighup_keeps_the_old_tokens_and_says_why_once(
    ingest, tokens_path, unique_id, broken
):
    secret = new_secret("kept")
    write_tokens(tokens_path, {"etl-kept": secret, "etl-other": new_secret("other")})
    [loaded] = reload(ingest)
    assert loaded["level"] == "info" and "2 token(s)" in loaded["msg"]
    failed_before = metric(ingest, 'logstream_ingest_token_reloads_total{outcome="failed"}')

    if broken is None:
        tokens_path.unlink()
    else:
        tokens_path.write_text(broken)
    [refused] = reload(ingest)

    assert refused["level"] == "error"
    assert str(tokens_path) in refused["msg"] and "tokens_file" in refused["msg"]
    assert "still using the 2" in refused["msg"]
    assert ingest.process.poll() is None
    assert publish(ingest, secret, f"logs:etl:{unique_id}").status_code == 202
    assert metric(ingest, 'logstream_ingest_token_reloads_total{outcome="failed"}') == (
        failed_before + 1
    )
    assert secret not in ingest.log_path.read_text(errors="replace")
