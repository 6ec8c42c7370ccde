"""logstream.services.gateway.auth: the credential, the guards, and the verifier the settings choose.

The guards run inside a small Litestar app (``litestar.testing``; no stream is opened here), whose
error handler reports the rule that refused and who the guard recorded for the audit log.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from litestar import Litestar, Request, Response, get
from litestar.testing import TestClient
from prometheus_client import CollectorRegistry

from logstream.services.gateway.auth import (
    ADMIN_TOKEN_WHO,
    SESSION_COOKIE,
    require_admin,
    require_user,
    user_tokens_for,
)
from logstream.services.gateway.metrics import GatewayMetrics
from logstream.services.gateway.settings import Settings
from logstream.services.gateway.user_keys import UserKeyRefresh
from logstream.shared.errors import LogstreamError, SettingsError
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.settings import load_settings
from logstream.shared.user_tokens import UserTokens
from logstream.shared.web import status_of
from tests.support.jwks_server import JwksServer, SigningKey, claims

SECRET = "gateway-auth-unit-test-secret-" * 2
ADMIN_TOKEN = "admin-token-for-the-unit-tests-0123456789"
TOKENS = UserTokens(SECRET)
PROD = {"LOGSTREAM_JWT_SECRET": SECRET, "LOGSTREAM_ADMIN_TOKEN": ADMIN_TOKEN}
DEV = {"LOGSTREAM_ENV": "dev"}


@get("/user", guards=[require_user], sync_to_thread=False)
def who_am_i(request: Request) -> dict:
    return {"user": request.state.user.user_id, "who": request.state.get("audit_who")}


@get("/admin", guards=[require_admin], sync_to_thread=False)
def admin_only(request: Request) -> dict:
    return {"who": request.state.get("audit_who")}


def _refused(request: Request, exc: LogstreamError) -> Response:
    return Response(
        {"rule": exc.rule, "who": request.state.get("audit_who"), "message": exc.message},
        status_code=status_of(exc),
    )


def client_for(environ: dict, *, refresh_keys: bool = False) -> TestClient:
    settings = load_settings(Settings, environ)
    app = Litestar([who_am_i, admin_only], exception_handlers={LogstreamError: _refused})
    app.state.settings = settings
    app.state.user_tokens = user_tokens_for(settings)
    if refresh_keys:  # as the gateway does with a JWKS endpoint: fetch again on an unknown kid
        UserKeyRefresh(
            settings.jwt_jwks_url,
            app.state.user_tokens,
            every_s=settings.jwks_refresh_s,
            metrics=GatewayMetrics(CollectorRegistry()),
        )
    return TestClient(app)


@pytest.fixture(scope="module")
def prod():
    with client_for(PROD) as client:
        yield client


@pytest.fixture(scope="module")
def dev():
    with client_for(DEV) as client:
        yield client


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# Users


def test_a_verified_user_is_recorded_for_the_audit_log(prod):
    answer = prod.get("/user", headers=bearer(TOKENS.issue("user123", ["workspace123"])))
    assert answer.status_code == 200
    assert answer.json() == {"user": "user123", "who": "user:user123"}


def test_the_session_cookie_is_a_credential(prod):
    prod.cookies.set(SESSION_COOKIE, TOKENS.issue("user123", ["workspace123"]))
    try:
        assert prod.get("/user").json()["user"] == "user123"
    finally:
        prod.cookies.clear()


@pytest.mark.parametrize(
    ("headers", "rule"),
    [
        ({}, "no_credential"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "no_credential"),
        ({"Authorization": "Bearer"}, "no_credential"),
        ({"Authorization": "Bearer not-a-jwt"}, "jwt_invalid"),
    ],
)
def test_no_or_a_malformed_credential_is_401_with_its_rule(prod, headers, rule):
    answer = prod.get("/user", headers=headers)
    assert (answer.status_code, answer.json()["rule"], answer.json()["who"]) == (401, rule, None)


def test_an_expired_token_is_401_with_the_expiry_rule(prod):
    token = TOKENS.issue("user123", ["workspace123"], ttl_s=-60)
    assert prod.get("/user", headers=bearer(token)).json()["rule"] == "jwt_expired"


def test_a_query_token_is_refused_in_production_and_points_at_header_and_cookie(prod):
    token = TOKENS.issue("user123", ["workspace123"])
    answer = prod.get("/user", params={"access_token": token})
    assert answer.status_code == 401
    assert answer.json()["rule"] == "query_token_disabled"
    assert "Authorization: Bearer" in answer.json()["message"]
    assert SESSION_COOKIE in answer.json()["message"]


def test_a_query_token_works_in_dev_mode_unless_turned_off():
    token = UserTokens(DEV_JWT_SECRET).issue_dev("user123")
    with client_for(DEV) as dev:
        assert dev.get("/user", params={"access_token": token}).status_code == 200
    with client_for({**DEV, "LOGSTREAM_QUERY_TOKEN": "off"}) as off:
        assert (
            off.get("/user", params={"access_token": token}).json()["rule"]
            == "query_token_disabled"
        )


def test_the_header_wins_over_the_cookie(prod):
    prod.cookies.set(SESSION_COOKIE, TOKENS.issue("cookie-user", ["w"]))
    try:
        answer = prod.get("/user", headers=bearer(TOKENS.issue("header-user", ["w"])))
        assert answer.json()["user"] == "header-user"
    finally:
        prod.cookies.clear()


# Admin


def test_admin_routes_are_open_in_dev_mode(dev):
    assert dev.get("/admin").status_code == 200


@pytest.mark.parametrize(
    ("credential", "status", "rule", "who"),
    [
        (None, 401, "no_credential", None),
        (TOKENS.issue("user123", ["workspace123"]), 403, "admin_only", "user:user123"),
        (TOKENS.issue("reader", ["*"]), 403, "admin_only", "user:reader"),
        (TOKENS.issue("viewer", ["*"], roles=["viewer"]), 403, "admin_only", "user:viewer"),
        ("x" * len(ADMIN_TOKEN), 401, "jwt_invalid", None),
        (ADMIN_TOKEN[:-1], 401, "jwt_invalid", None),
        (ADMIN_TOKEN + "x", 401, "jwt_invalid", None),
        (UserTokens(DEV_JWT_SECRET).issue_dev("admin"), 401, "jwt_invalid", None),
    ],
)
def test_a_non_admin_credential_is_refused_by_the_admin_guard(prod, credential, status, rule, who):
    answer = prod.get("/admin", headers=bearer(credential) if credential else {})
    assert (answer.status_code, answer.json()["rule"], answer.json()["who"]) == (status, rule, who)


@pytest.mark.parametrize(
    ("credential", "who"),
    [
        (TOKENS.issue("boss", ["workspace123"], roles=["admin"]), "user:boss"),
        (
            jwt.encode(
                {
                    "sub": "chief",
                    "workspaces": [],
                    "role": "admin",
                    "exp": int(time.time()) + 86400,
                },
                SECRET,
                algorithm="HS256",
            ),
            "user:chief",
        ),
        (ADMIN_TOKEN, ADMIN_TOKEN_WHO),
    ],
)
def test_the_admin_role_or_the_admin_token_opens_the_admin_guard(prod, credential, who):
    answer = prod.get("/admin", headers=bearer(credential))
    assert (answer.status_code, answer.json()["who"]) == (200, who)


def test_without_a_configured_admin_token_no_bearer_string_is_one():
    with client_for({"LOGSTREAM_JWT_SECRET": SECRET}) as client:
        assert client.get("/admin", headers=bearer("")).status_code == 401
        assert client.get("/admin", headers=bearer(ADMIN_TOKEN)).status_code == 401


# The verifier the settings choose


def _pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("make_key", "algorithm"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
)
def test_a_public_key_file_sets_the_one_algorithm_accepted(tmp_path, make_key, algorithm):
    key = make_key()
    (tmp_path / "key.pem").write_bytes(_pem(key))
    settings = load_settings(
        Settings,
        {
            "LOGSTREAM_JWT_PUBLIC_KEY_FILE": str(tmp_path / "key.pem"),
            "LOGSTREAM_JWT_AUDIENCE": "logstream",
            "LOGSTREAM_JWT_LEEWAY": "0",
        },
    )
    tokens = user_tokens_for(settings)
    assert tokens.algorithm == algorithm and settings.user_token_secret == ""
    claims = {"sub": "u", "workspaces": ["w"], "aud": "logstream", "exp": int(time.time()) + 60}
    identity = tokens.verify(jwt.encode(claims, key, algorithm=algorithm))
    assert identity.expires_at == claims["exp"]  # leeway 0


def test_the_dev_secret_is_used_in_dev_mode_only():
    dev_token = UserTokens(DEV_JWT_SECRET).issue_dev("user123")
    assert user_tokens_for(load_settings(Settings, DEV)).verify(dev_token).user_id == "user123"
    with pytest.raises(LogstreamError):
        user_tokens_for(load_settings(Settings, PROD)).verify(dev_token)
    assert load_settings(Settings, PROD).user_token_secret == SECRET


def test_production_without_a_key_names_every_key_setting():
    with pytest.raises(SettingsError) as caught:
        load_settings(Settings, {})
    for name in (
        "jwt_secret",
        "LOGSTREAM_JWT_SECRET",
        "jwt_public_key_file",
        "LOGSTREAM_JWT_PUBLIC_KEY_FILE",
        "jwt_jwks_url",
        "LOGSTREAM_JWT_JWKS_URL",
    ):
        assert name in caught.value.message


@pytest.mark.parametrize("env", ["dev", "production"])
def test_a_secret_and_a_public_key_file_together_are_refused(tmp_path, env):
    (tmp_path / "key.pem").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(SettingsError, match="not both"):
        load_settings(
            Settings,
            {
                "LOGSTREAM_ENV": env,
                "LOGSTREAM_JWT_SECRET": SECRET,
                "LOGSTREAM_JWT_PUBLIC_KEY_FILE": str(tmp_path / "key.pem"),
            },
        )


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        (
            {"LOGSTREAM_JWT_PUBLIC_KEY_FILE": "/nonexistent/key.pem"},
            "LOGSTREAM_JWT_PUBLIC_KEY_FILE",
        ),
        ({"LOGSTREAM_JWT_SECRET": "short"}, "LOGSTREAM_JWT_SECRET"),
        ({**PROD, "LOGSTREAM_ADMIN_TOKEN": "short"}, "LOGSTREAM_ADMIN_TOKEN"),
        ({**PROD, "LOGSTREAM_JWT_LEEWAY": "-1"}, "LOGSTREAM_JWT_LEEWAY"),
        ({**PROD, "LOGSTREAM_JWT_LEEWAY": "3600"}, "LOGSTREAM_JWT_LEEWAY"),
        ({**PROD, "LOGSTREAM_QUERY_TOKEN": "on"}, "LOGSTREAM_QUERY_TOKEN"),
    ],
)
def test_an_unusable_key_or_limit_stops_the_gateway_naming_the_setting(environ, names):
    with pytest.raises(SettingsError) as caught:
        load_settings(Settings, environ)
    assert names in caught.value.message


def test_a_garbage_public_key_file_stops_the_gateway_naming_it(tmp_path):
    (tmp_path / "key.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")
    with pytest.raises(SettingsError) as caught:
        load_settings(Settings, {"LOGSTREAM_JWT_PUBLIC_KEY_FILE": str(tmp_path / "key.pem")})
    assert "LOGSTREAM_JWT_PUBLIC_KEY_FILE" in caught.value.message
    assert str(tmp_path / "key.pem") in caught.value.message


# Key sets: a JWKS file, a JWKS endpoint, and exactly one way to give the key

KEY_A, KEY_B = SigningKey("a"), SigningKey("b", "ec")


@pytest.fixture
def idp():
    server = JwksServer(KEY_A.jwk()).start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "given",
    [
        ("jwt_secret", "jwt_jwks_url"),
        ("jwt_public_key_file", "jwt_jwks_url"),
        ("jwt_secret", "jwt_public_key_file", "jwt_jwks_url"),
    ],
)
def test_exactly_one_user_token_key_setting_may_be_given(tmp_path, given):
    (tmp_path / "key.pem").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    values = {
        "jwt_secret": SECRET,
        "jwt_public_key_file": str(tmp_path / "key.pem"),
        "jwt_jwks_url": "https://idp.example/jwks",
    }
    with pytest.raises(SettingsError) as caught:
        load_settings(Settings, {f"LOGSTREAM_{name.upper()}": values[name] for name in given})
    message = caught.value.message
    assert all(f"LOGSTREAM_{name.upper()}" in message for name in given)
    assert ("not both" if len(given) == 2 else "not all three") in message


@pytest.mark.parametrize("url", ["ftp://idp.example/jwks", "idp.example/jwks", "https://"])
def test_a_jwks_url_must_be_an_http_or_https_url(url):
    with pytest.raises(SettingsError) as caught:
        load_settings(Settings, {"LOGSTREAM_JWT_JWKS_URL": url})
    assert "LOGSTREAM_JWT_JWKS_URL" in caught.value.message


@pytest.mark.parametrize(("value", "seconds"), [("5m", 300.0), ("30s", 30.0), ("1", 1.0)])
def test_the_jwks_refresh_is_a_duration(value, seconds):
    settings = load_settings(
        Settings,
        {"LOGSTREAM_JWT_JWKS_URL": "https://idp.example/jwks", "LOGSTREAM_JWT_JWKS_REFRESH": value},
    )
    assert settings.jwks_refresh_s == seconds and settings.user_token_secret == ""


@pytest.mark.parametrize("value", ["500ms", "0", "soon", "-5m"])
def test_a_jwks_refresh_under_a_second_or_no_duration_is_refused(value):
    with pytest.raises(SettingsError) as caught:
        load_settings(
            Settings,
            {"LOGSTREAM_JWT_JWKS_URL": "https://a.example/j", "LOGSTREAM_JWT_JWKS_REFRESH": value},
        )
    assert "LOGSTREAM_JWT_JWKS_REFRESH" in caught.value.message


def test_a_jwks_key_file_verifies_by_kid_and_refuses_an_unknown_one(tmp_path):
    (tmp_path / "keys.json").write_text(json.dumps({"keys": [KEY_A.jwk(), KEY_B.jwk()]}))
    with client_for({"LOGSTREAM_JWT_PUBLIC_KEY_FILE": str(tmp_path / "keys.json")}) as client:
        for key in (KEY_A, KEY_B):
            assert client.get("/user", headers=bearer(key.token(claims()))).status_code == 200
        answer = client.get("/user", headers=bearer(SigningKey("c").token(claims())))
        assert (answer.status_code, answer.json()["rule"], answer.json()["who"]) == (
            401,
            "jwt_unknown_key",
            None,
        )


def test_a_jwks_url_is_read_when_the_verifier_is_built(idp):
    tokens = user_tokens_for(load_settings(Settings, {"LOGSTREAM_JWT_JWKS_URL": idp.url}))
    assert tokens.keys.kids == ["a"] and idp.fetches == 1


def test_the_guard_fetches_the_jwks_again_for_a_kid_published_since(idp):
    with client_for({"LOGSTREAM_JWT_JWKS_URL": idp.url}, refresh_keys=True) as client:
        idp.publish(KEY_A.jwk(), KEY_B.jwk())
        answer = client.get("/user", headers=bearer(KEY_B.token(claims("newcomer"))))
        assert answer.status_code == 200 and answer.json()["user"] == "newcomer"
        assert idp.fetches == 2
        # The next unknown kid within 10 s is refused without asking the identity provider.
        answer = client.get("/user", headers=bearer(SigningKey("c").token(claims())))
        assert (answer.status_code, answer.json()["rule"]) == (401, "jwt_unknown_key")
        assert idp.fetches == 2


# -- the auth callout's settings ----------------------------------------------------------------

CALLOUT = {"LOGSTREAM_AUTH_CALLOUT_URL": "http://product.internal:8000/auth/logstream"}


def test_a_callout_alone_is_enough_in_production_and_then_no_token_is_taken():
    settings = load_settings(Settings, CALLOUT)
    assert not settings.takes_user_tokens
    assert settings.callout_headers == ("cookie", "authorization")
    assert load_settings(Settings, CALLOUT | PROD).takes_user_tokens


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"LOGSTREAM_AUTH_CALLOUT_URL": "product.internal/auth"}, "not an http:// or https://"),
        ({"LOGSTREAM_AUTH_CALLOUT_URL": "file:///etc/passwd"}, "not an http:// or https://"),
        (CALLOUT | {"LOGSTREAM_AUTH_CALLOUT_HEADERS": "Cookie, Bad Header"}, "'bad header'"),
        (CALLOUT | {"LOGSTREAM_AUTH_CALLOUT_HEADERS": "Host"}, "'host'"),
        (CALLOUT | {"LOGSTREAM_AUTH_CALLOUT_HEADERS": " , "}, "at least one header"),
        (CALLOUT | {"LOGSTREAM_AUTH_CALLOUT_COOKIES": "session, a b"}, "auth_callout_cookies"),
        (CALLOUT | {"LOGSTREAM_AUTH_CALLOUT_TIMEOUT": "0"}, "auth_callout_timeout"),
        (CALLOUT | {"LOGSTREAM_AUTH_CALLOUT_TTL": "0.5"}, "auth_callout_ttl"),
        (PROD | {"LOGSTREAM_JWT_WORKSPACES_CLAIM": ""}, "jwt_workspaces_claim"),
    ],
)
def test_a_bad_callout_or_claim_setting_stops_the_gateway_naming_it(environ, words):
    with pytest.raises(SettingsError) as caught:
        load_settings(Settings, environ)
    assert words in caught.value.message


def test_the_claim_settings_reach_the_verifier():
    settings = load_settings(
        Settings,
        PROD
        | {
            "LOGSTREAM_JWT_USER_CLAIM": "preferred_username",
            "LOGSTREAM_JWT_WORKSPACES_CLAIM": "groups",
            "LOGSTREAM_JWT_WORKSPACE_PREFIX": "workspace:",
            "LOGSTREAM_JWT_ROLES_CLAIM": "realm_access.roles",
        },
    )
    token = jwt.encode(
        {
            "sub": "9c1d",
            "preferred_username": "alice",
            "groups": ["workspace:ws1", "staff"],
            "realm_access": {"roles": ["admin"]},
            "exp": int(time.time()) + 60,
        },
        SECRET,
        algorithm="HS256",
    )
    user = user_tokens_for(settings).verify(token)
    assert (user.user_id, user.workspaces, user.is_admin) == ("alice", {"ws1"}, True)
