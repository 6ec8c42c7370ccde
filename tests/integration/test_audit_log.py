"""The audit log of real services: one line per denial, saying who, what and which rule.

Ingest and a gateway (connection cap 1) run as processes of this module, so their stderr logs
hold this module's denials alone. Each denial is provoked, then its line is awaited and read;
no line (and no other log line) may carry a token, a secret or a query string.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from google.rpc.status_pb2 import Status

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support.processes import ServiceProcess
from tests.support.waiting import wait_until_blocking

TOKENS = UserTokens(DEV_JWT_SECRET)
PUBLISH = "/api/logs/publish"
STREAM = "/api/logs/stream"


@pytest.fixture(scope="module")
def services(nats_server, log_dir):
    ingest = ServiceProcess("ingest", nats_url=nats_server.url, log_dir=log_dir).start()
    gateway = ServiceProcess(
        "gateway",
        nats_url=nats_server.url,
        log_dir=log_dir,
        args=["--max-connections-per-user", "1"],
    ).start()
    yield ingest, gateway
    gateway.stop()
    ingest.stop()


@dataclass
class Denial:
    """What one refused request must leave in the audit log."""

    who: str
    what: str
    status: int
    rule: str


class AuditTrail:
    """Provoke denials one at a time; each must add exactly one matching audit line."""

    def __init__(self, service: ServiceProcess) -> None:
        self.service = service
        self.expected = len(service.audit_lines())

    def expect(self, response: httpx.Response, denial: Denial) -> dict:
        assert response.status_code == denial.status, response.text
        self.expected += 1

        def written() -> list[dict] | None:
            found = self.service.audit_lines()
            return found if len(found) >= self.expected else None

        # Written before the response is sent; the poll only bounds a slow filesystem.
        lines = wait_until_blocking(
            written, f"audit line {self.expected} ({denial.rule})", timeout=10
        )
        assert len(lines) == self.expected, lines[-3:]
        line = lines[-1]
        assert (line["who"], line["what"], line["status"], line["rule"]) == (
            denial.who,
            denial.what,
            denial.status,
            denial.rule,
        ), line
        assert line["audit"] == "denied" and line["via"] == "http" and line["remote"]
        assert line["reason"] == _refusal_message(response)
        return line


def _refusal_message(response: httpx.Response) -> str:
    """The JSON error body's message, or a refused protobuf OTLP export's google.rpc.Status's."""
    if response.headers["content-type"].startswith("application/x-protobuf"):
        return Status.FromString(response.content).message
    return response.json()["message"]


def test_a_denied_protobuf_otlp_export_leaves_its_audit_line_too(services, unique_id):
    ingest, _ = services
    trail, bad_secret = AuditTrail(ingest), f"not-a-token-{unique_id}"
    protobuf = {"Content-Type": "application/x-protobuf"}
    trail.expect(
        httpx.post(
            ingest.url + "/v1/logs",
            content=b"",
            headers={**protobuf, "Authorization": f"Bearer {bad_secret}"},
        ),
        Denial("anonymous", "POST /v1/logs", 401, "token_invalid"),
    )


def test_every_ingest_denial_leaves_one_audit_line_naming_who_and_the_rule(services, unique_id):
    ingest, _ = services
    trail, url = AuditTrail(ingest), ingest.url + PUBLISH
    what = f"POST {PUBLISH}"
    record = {"channel": f"logs:etl:workspace123:{unique_id}", "message": "m"}
    bad_secret = f"not-a-token-{unique_id}"

    trail.expect(
        httpx.post(url, json=record, params={"access_token": bad_secret}),
        Denial("anonymous", what, 401, "no_credential"),
    )
    trail.expect(
        httpx.post(url, json=record, headers={"Authorization": f"Bearer {bad_secret}"}),
        Denial("anonymous", what, 401, "token_invalid"),
    )
    trail.expect(
        httpx.post(url, json=record, headers={"X-Service-Token": bad_secret}),
        Denial("anonymous", what, 401, "token_invalid"),
    )
    trail.expect(
        httpx.post(url, json=record, headers={"Authorization": "Bearer faas-token"}),
        Denial("token:faas-token", what, 403, "grant"),
    )
    # Neither a 400 nor a success is a denial: no line for them.
    bad = httpx.post(
        url, json={**record, "level": "loud"}, headers={"Authorization": "Bearer l5-etl-token"}
    )
    good = httpx.post(url, json=record, headers={"Authorization": "Bearer l5-etl-token"})
    assert (bad.status_code, good.status_code) == (400, 202)
    assert len(ingest.audit_lines()) == trail.expected
    _assert_no_secret_in_any_log_line(ingest, [bad_secret])


def test_every_gateway_denial_leaves_one_audit_line_naming_who_and_the_rule(services, unique_id):
    _, gateway = services
    trail, url = AuditTrail(gateway), gateway.url + STREAM
    what = f"GET {STREAM}"
    mine = {"channels": f"logs:etl:workspace123:{unique_id}"}
    user123 = TOKENS.issue("user123", ["workspace123"])
    forged = UserTokens("another-secret-of-at-least-32-bytes!!").issue("admin", ["*"])
    expired = TOKENS.issue("user123", ["workspace123"], ttl_s=-3600)

    trail.expect(httpx.get(url, params=mine), Denial("anonymous", what, 401, "no_credential"))
    trail.expect(
        httpx.get(url, params={**mine, "access_token": forged}),
        Denial("anonymous", what, 401, "jwt_invalid"),
    )
    trail.expect(
        httpx.get(url, params=mine, headers={"Authorization": f"Bearer {expired}"}),
        Denial("anonymous", what, 401, "jwt_expired"),
    )
    trail.expect(
        httpx.get(url, params=mine, headers={"Authorization": "Basic dXNlcjpwYXNz"}),
        Denial("anonymous", what, 401, "no_credential"),
    )
    trail.expect(
        httpx.get(
            url,
            params={"channels": "logs:etl:workspace456"},
            headers={"Authorization": f"Bearer {user123}"},
        ),
        Denial("user:user123", what, 403, "workspace"),
    )
    capped = _provoke_connection_cap(url, mine, unique_id)
    trail.expect(capped, Denial(f"user:cap-{unique_id}", what, 429, "connection_cap"))
    assert capped.headers["retry-after"]
    _assert_no_secret_in_any_log_line(gateway, [user123, forged, expired, "dXNlcjpwYXNz"])


def _provoke_connection_cap(url: str, params: dict, unique_id: str) -> httpx.Response:
    """Hold one open stream for a user, then ask for a second one."""
    token = TOKENS.issue(f"cap-{unique_id}", ["workspace123"])
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=httpx.Timeout(10, read=None)) as client:
        with client.stream("GET", url, params=params, headers=headers) as first:
            assert first.status_code == 200
            return client.get(url, params=params, headers=headers)


def _assert_no_secret_in_any_log_line(service: ServiceProcess, secrets: list[str]) -> None:
    text = service.log_path.read_text(errors="replace")
    for secret in secrets:
        assert secret not in text
    assert "access_token=" not in text
    for line in service.audit_lines():
        assert "?" not in line["what"]
