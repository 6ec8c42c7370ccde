"""Every service refuses to start on a bad setting, naming it, and fails fast without a broker.

Each case runs the real command, ``python -m logstream <service> ...``, as a subprocess.
Settings errors stop a service before its app module is imported; the cases that need a
service's app (broker connect, prod token files) are marked ``needs_app(...)`` and are skipped
while that service's ``app.py`` does not exist yet.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from logstream.shared.identities import DEV_NATS_INGEST
from tests.support.nats_source import free_port
from tests.support.processes import ServiceProcess

# A service that cannot start must say so quickly; this only bounds a hung child.
EXIT_WITHIN_S = 60.0
# With a short --connect-timeout the process imports (seconds on a busy machine), tries for
# that long and exits: far below the ~2 minutes nats-py's defaults would keep retrying.
UNREACHABLE_EXIT_WITHIN_S = 30.0
SETTINGS_ERROR_EXIT = 2


def needs_app(service: str):
    present = importlib.util.find_spec(f"services.{service}.app") is not None
    return pytest.mark.skipif(not present, reason=f"services/{service}/app.py not written yet")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGSTREAM_")}
    env.update(extra)
    return env


def _command(service: str, args) -> list[str]:
    return [sys.executable, "-m", "logstream", service, "--port", str(free_port()), *args]


def run_service(service: str, *args: str, env: dict[str, str] | None = None):
    """Run a service that is expected to exit; returns (exit code, stderr, seconds taken)."""
    started = time.monotonic()
    done = subprocess.run(
        _command(service, args),
        capture_output=True,
        text=True,
        timeout=EXIT_WITHIN_S,
        env=env or clean_env(),
    )
    return done.returncode, done.stderr, time.monotonic() - started


# (id, service, args, extra environment, the setting the refusal must name). "{tmp}" is a
# scratch directory holding bad.json, a malformed token file.
REFUSALS = [
    ("ingest-flag", "ingest", ["--dev", "--max-body-bytes", "10"], {}, "max_body_bytes"),
    ("ingest-port", "ingest", ["--dev", "--port", "http"], {}, "port"),
    ("ingest-env", "ingest", ["--dev"], {"LOGSTREAM_RETENTION": "forever"}, "retention"),
    ("ingest-mode", "ingest", ["--env", "staging"], {}, "env"),
    ("ingest-services", "ingest", ["--dev", "--services", "etl,bad.name"], {}, "services"),
    ("gateway-flag", "gateway", ["--dev", "--heartbeat", "0"], {}, "heartbeat"),
    ("gateway-env", "gateway", ["--dev"], {"LOGSTREAM_QUERY_TOKEN": "maybe"}, "query_token"),
    ("proxy-flag", "proxy", ["--dev", "--gateway-url", "ftp://gateway"], {}, "gateway_url"),
    ("proxy-env", "proxy", ["--dev"], {"LOGSTREAM_CONNECT_TIMEOUT": "soon"}, "connect_timeout"),
    # Production mode without the secret it requires.
    ("ingest-prod", "ingest", [], {}, "LOGSTREAM_TOKENS_FILE"),
    ("gateway-prod", "gateway", [], {}, "LOGSTREAM_JWT_SECRET"),
    # A token file that cannot be used (these reach ingest's create_app).
    ("ingest-bad-tokens", "ingest", ["--tokens-file", "{tmp}/bad.json"], {}, "tokens_file"),
    ("ingest-no-tokens", "ingest", ["--tokens-file", "{tmp}/absent.toml"], {}, "tokens_file"),
    # Channel mapping rules that cannot be used (not TOML; not there).
    (
        "ingest-bad-rules",
        "ingest",
        ["--dev", "--channel-rules", "{tmp}/bad.json"],
        {},
        "channel_rules",
    ),
    (
        "ingest-no-rules",
        "ingest",
        ["--dev", "--channel-rules", "{tmp}/absent.toml"],
        {},
        "channel_rules",
    ),
    # NATS logins: a credential file that is not there, and two ways to log in at once.
    (
        "gateway-no-creds-file",
        "gateway",
        ["--dev", "--nats-creds-file", "{tmp}/absent.creds"],
        {},
        "nats_creds_file (LOGSTREAM_NATS_CREDS_FILE): no file at",
    ),
    (
        "ingest-no-nkey-file",
        "ingest",
        ["--dev"],
        {"LOGSTREAM_NATS_NKEY_FILE": "/absent/x.nk"},
        "nats_nkey_file (LOGSTREAM_NATS_NKEY_FILE): no file at '/absent/x.nk'",
    ),
    (
        "ingest-user-and-nkey",
        "ingest",
        ["--dev", "--nats-user", "ingest", "--nats-nkey-file", "{tmp}/bad.json"],
        {},
        "nats_user (LOGSTREAM_NATS_USER) and nats_nkey_file (LOGSTREAM_NATS_NKEY_FILE)",
    ),
    (
        "gateway-url-and-creds",
        "gateway",
        ["--dev", "--nats-url", "nats://u:p@127.0.0.1:4222"],
        {"LOGSTREAM_NATS_CREDS_FILE": "/absent/x.creds"},
        "nats_url (LOGSTREAM_NATS_URL) and nats_creds_file (LOGSTREAM_NATS_CREDS_FILE)",
    ),
    (
        "ingest-password-alone",
        "ingest",
        ["--dev", "--nats-password", "p"],
        {},
        "nats_password (LOGSTREAM_NATS_PASSWORD): it needs nats_user",
    ),
]
_NEEDS_INGEST_APP = {"ingest-bad-tokens", "ingest-no-tokens", "ingest-bad-rules", "ingest-no-rules"}


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """Start every refusal case at once (each is a short-lived process), then collect them."""
    tmp = tmp_path_factory.mktemp("startup")
    (tmp / "bad.json").write_text(
        json.dumps({"tokens": [{"name": "x", "sha256": "nothex", "grants": []}]})
    )
    running = {}
    for case, service, args, env, _ in REFUSALS:
        command = _command(service, [a.replace("{tmp}", str(tmp)) for a in args])
        running[case] = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(**env),
        )
    outcomes = {}
    for case, process in running.items():
        try:
            _, stderr = process.communicate(timeout=EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        outcomes[case] = (process.returncode, stderr)
    return outcomes, tmp


@pytest.mark.parametrize(
    ("case", "service", "setting"),
    [
        pytest.param(
            case,
            service,
            setting,
            id=case,
            marks=needs_app("ingest") if case in _NEEDS_INGEST_APP else (),
        )
        for case, service, _, _, setting in REFUSALS
    ],
)
def test_a_bad_or_missing_setting_stops_the_service_naming_the_setting(
    refusals, case, service, setting
):
    outcomes, tmp = refusals
    code, stderr = outcomes[case]
    assert code == SETTINGS_ERROR_EXIT, stderr
    assert f"logstream {service}:" in stderr
    assert setting in stderr, stderr
    if case == "ingest-bad-tokens":
        assert str(tmp / "bad.json") in stderr


@pytest.mark.parametrize(
    "service",
    [
        pytest.param("ingest", marks=needs_app("ingest")),
        pytest.param("gateway", marks=needs_app("gateway")),
    ],
)
def test_an_unreachable_broker_fails_the_first_connect_within_seconds(service):
    url = f"nats://127.0.0.1:{free_port()}"
    code, stderr, took = run_service(service, "--dev", "--nats-url", url, "--connect-timeout", "1")
    assert code != 0, stderr
    assert took < UNREACHABLE_EXIT_WITHIN_S, f"took {took:.1f}s"
    assert "cannot reach NATS" in stderr and url in stderr, stderr


@pytest.fixture
def token_file(tmp_path):
    """Two production tokens allowed on the same service, and the secrets to use them."""
    secrets = {
        "etl-a": "secret-a-" + os.urandom(8).hex(),
        "etl-b": "secret-b-" + os.urandom(8).hex(),
    }
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    {
                        "name": name,
                        "sha256": hashlib.sha256(secret.encode()).hexdigest(),
                        "grants": ["logs:etl"],
                    }
                    for name, secret in secrets.items()
                ]
            }
        )
    )
    return path, secrets


@needs_app("ingest")
def test_production_ingest_takes_only_its_token_file_and_scopes_ids_per_token(
    nats_server, log_dir, token_file, unique_id
):
    path, secrets = token_file
    user, password = DEV_NATS_INGEST
    ingest = ServiceProcess(
        "ingest",
        nats_url=nats_server.url,
        log_dir=log_dir,
        dev=False,
        env=clean_env(),
        args=["--tokens-file", str(path), "--nats-user", user, "--nats-password", password],
    ).start()
    try:
        record = {"channel": f"logs:etl:{unique_id}", "message": "m", "id": "shared-id"}
        url = ingest.url + "/api/logs/publish"
        dev = httpx.post(url, json=record, headers={"Authorization": "Bearer l5-etl-token"})
        assert dev.status_code == 401
        seqs = []
        for secret in secrets.values():
            response = httpx.post(url, json=record, headers={"X-Service-Token": secret})
            assert response.status_code == 202, response.text
            seqs += response.json()["seqs"]
        # The same id from two producers is two records: one cannot suppress the other's.
        assert len(set(seqs)) == 2
    finally:
        ingest.stop()


@needs_app("ingest")
def test_wrong_broker_credentials_fail_the_first_connect_naming_the_refusal(nats_server):
    if not nats_server.with_users:
        pytest.skip("the suite's NATS has no users to refuse a password")
    code, stderr, took = run_service(
        "ingest",
        "--dev",
        "--nats-url",
        nats_server.url,
        "--nats-user",
        "ingest",
        "--nats-password",
        "wrong",
        "--connect-timeout",
        "5",
    )
    assert code != 0, stderr
    assert took < UNREACHABLE_EXIT_WITHIN_S, f"took {took:.1f}s"
    assert "cannot reach NATS" in stderr and "authorization violation" in stderr.lower()


@needs_app("gateway")
def test_a_refused_login_in_the_url_is_reported_without_its_password(nats_server):
    if not nats_server.with_users:
        pytest.skip("the suite's NATS has no users to refuse a password")
    url = nats_server.url.replace("nats://", "nats://gateway:not-the-password-41@", 1)
    code, stderr, _ = run_service("gateway", "--dev", "--nats-url", url, "--connect-timeout", "5")
    assert code != 0, stderr
    assert "authorization violation" in stderr.lower() and "as gateway" in stderr, stderr
    assert "not-the-password-41" not in stderr
