"""logstream.shared.audit and the denial lines logstream.shared.web writes for every 401, 403 and 429."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from litestar import Litestar, get
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.testing import TestClient

from logstream.shared import audit
from logstream.shared.errors import Forbidden, InvalidRequest, RateLimited, Unauthenticated
from logstream.shared.structured_logging import JsonFormatter
from logstream.shared.web import EXCEPTION_HANDLERS

A_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyMTIzIn0.c2lnbmF0dXJl"


@pytest.fixture
def audit_lines():
    """The audit logger's output, formatted exactly as a service writes it to stderr."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger(audit.AUDIT_LOGGER)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)

    def lines() -> list[str]:
        return [line for line in stream.getvalue().splitlines() if line]

    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _as_user(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    connection.state.audit_who = "user:user123"


@get("/forbidden", guards=[_as_user], sync_to_thread=False)
def forbidden() -> None:
    raise Forbidden("user 'user123' may not read logs:etl:other", rule="workspace")


@get("/anonymous", sync_to_thread=False)
def anonymous() -> None:
    raise Unauthenticated("a user token is required", rule="no_credential")


@get("/limited", guards=[_as_user], sync_to_thread=False)
def limited() -> None:
    raise RateLimited(
        "user 'user123' already has 1 open streams", retry_after=5, rule="connection_cap"
    )


@get("/unruled", sync_to_thread=False)
def unruled() -> None:
    raise Forbidden("no rule was named")


@get("/bad", guards=[_as_user], sync_to_thread=False)
def bad() -> None:
    raise InvalidRequest("channels is missing")


@get("/litestar-401", sync_to_thread=False)
def litestar_401() -> None:
    raise NotAuthorizedException("litestar says no")


@get("/litestar-403", sync_to_thread=False)
def litestar_403() -> None:
    raise PermissionDeniedException("litestar forbids")


@get("/ok", sync_to_thread=False)
def ok() -> dict[str, bool]:
    return {"ok": True}


@pytest.fixture
def client():
    app = Litestar(
        [forbidden, anonymous, limited, unruled, bad, litestar_401, litestar_403, ok],
        exception_handlers=EXCEPTION_HANDLERS,
        logging_config=None,
    )
    with TestClient(app) as test_client:
        yield test_client


def _only_line(lines: list[str]) -> dict:
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert isinstance(entry, dict)
    return entry


def test_a_forbidden_request_logs_one_json_line_with_who_what_rule_and_status(client, audit_lines):
    response = client.get("/forbidden", params={"channels": "logs:etl:other"})
    assert response.status_code == 403
    entry = _only_line(audit_lines())
    assert entry["logger"] == "logstream.audit" and entry["audit"] == "denied"
    assert entry["who"] == "user:user123"
    assert entry["what"] == "GET /forbidden"
    assert entry["rule"] == "workspace"
    assert entry["status"] == 403
    assert entry["via"] == "http"
    assert entry["remote"]
    assert "may not read" in entry["reason"]


def test_the_audit_line_never_carries_the_query_string(client, audit_lines):
    response = client.get(f"/anonymous?access_token={A_JWT}&channels=logs:etl:ws1")
    assert response.status_code == 401
    [line] = audit_lines()
    assert "access_token" not in line and A_JWT not in line and "channels" not in line
    assert "?" not in json.loads(line)["what"]


def test_a_request_without_a_recorded_identity_is_anonymous(client, audit_lines):
    assert client.get("/anonymous").status_code == 401
    entry = _only_line(audit_lines())
    assert (entry["who"], entry["rule"], entry["status"]) == ("anonymous", "no_credential", 401)


def test_a_rate_limited_request_is_audited_with_its_rule(client, audit_lines):
    response = client.get("/limited")
    assert response.status_code == 429 and response.headers["retry-after"] == "5"
    entry = _only_line(audit_lines())
    assert (entry["who"], entry["rule"]) == ("user:user123", "connection_cap")
    assert entry["status"] == 429


def test_a_denial_without_a_named_rule_is_audited_under_its_error_code(client, audit_lines):
    assert client.get("/unruled").status_code == 403
    assert _only_line(audit_lines())["rule"] == "forbidden"


def test_a_bad_request_is_not_a_denial_and_is_not_audited(client, audit_lines):
    assert client.get("/bad").status_code == 400
    assert client.get("/ok").status_code == 200
    assert audit_lines() == []


@pytest.mark.parametrize(
    ("path", "status", "rule"),
    [("/litestar-401", 401, "not_authorized"), ("/litestar-403", 403, "permission_denied")],
)
def test_litestar_s_own_denials_are_audited_too(client, audit_lines, path, status, rule):
    assert client.get(path).status_code == status
    entry = _only_line(audit_lines())
    assert (entry["who"], entry["rule"], entry["status"]) == ("anonymous", rule, status)


def test_the_error_body_is_unchanged_by_the_audit(client, audit_lines):
    body = client.get("/forbidden").json()
    assert body == {
        "error": "forbidden",
        "message": "user 'user123' may not read logs:etl:other",
        "details": [],
    }


def test_a_jwt_in_any_field_is_masked(audit_lines):
    audit.denied(
        who=f"user:{A_JWT}",
        what=f"GET /x/{A_JWT}",
        rule="jwt_invalid",
        status=401,
        reason=f"the user token {A_JWT} is not valid",
    )
    [line] = audit_lines()
    assert A_JWT not in line
    assert "eyJ" not in line
    assert "[redacted]" in json.loads(line)["reason"]


def test_an_access_token_value_is_masked_wherever_it_appears(audit_lines):
    audit.denied(
        who="anonymous",
        what="GET /api/logs/stream?access_token=s3cret&x=1",
        rule="no_credential",
        status=401,
    )
    [line] = audit_lines()
    assert "s3cret" not in line
    assert json.loads(line)["what"] == "GET /api/logs/stream?access_token=[redacted]&x=1"


def test_control_characters_in_a_field_stay_inside_one_json_line(audit_lines):
    audit.denied(who='user:evil\n{"forged": 1}\r\x00', what="GET /x", rule="grant", status=403)
    lines = audit_lines()
    assert len(lines) == 1
    assert json.loads(lines[0])["who"] == 'user:evil\n{"forged": 1}\r\x00'


def test_a_huge_field_is_cut_to_a_bounded_length(audit_lines):
    audit.denied(who="anonymous", what="GET /" + "a" * 100_000, rule="no_credential", status=401)
    entry = json.loads(audit_lines()[0])
    assert len(entry["what"]) == audit.MAX_FIELD_CHARS
    assert entry["what"].endswith("...")


def test_a_value_json_cannot_hold_still_gives_one_line(audit_lines):
    audit.denied(who=Path("/tmp/who"), what="GET /x", rule="grant", status=403)
    assert json.loads(audit_lines()[0])["who"] == "/tmp/who"
    logging.getLogger(audit.AUDIT_LOGGER).warning("denied", extra={"where": Path("/tmp/x")})
    assert json.loads(audit_lines()[1])["where"] == "/tmp/x"
