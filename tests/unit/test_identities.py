"""shared.identities against CONTRACT section 8: service tokens, user tokens, who may read what."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from shared.channels import Channel, parse_pattern
from shared.errors import SettingsError, Unauthenticated
from shared.identities import (
    DEV_JWT_SECRET,
    DEV_USERS,
    TokenRegistry,
    UserIdentity,
    UserTokens,
    hash_secret,
)

# 64 bytes or more, so PyJWT warns of a short HMAC key for neither HS256 nor HS512.
SECRET = "unit-test-secret-" * 4


# Service tokens


def test_the_dev_registry_holds_exactly_the_four_dev_tokens_with_their_grants():
    registry = TokenRegistry.dev()
    assert len(registry) == 4
    expected = {"l5-etl-token": "logs:etl", "faas-token": "logs:faas",
                "analytics-token": "logs:analytics", "platform-token": "logs:platform"}
    for secret, grant in expected.items():
        token = registry.verify(secret)
        assert token.name == secret
        assert [str(g) for g in token.grants] == [grant]


def test_a_dev_token_publishes_only_to_its_own_service():
    token = TokenRegistry.dev().verify("faas-token")
    assert token.may_publish(Channel("faas", "ws1", "fn1"))
    assert token.may_publish(Channel("faas", "ws1"))
    assert not token.may_publish(Channel("etl", "ws1", "fn1"))


def test_the_dev_registry_leaves_out_tokens_of_services_that_are_not_configured():
    registry = TokenRegistry.dev({"etl", "billing"})
    assert len(registry) == 1
    registry.verify("l5-etl-token")
    with pytest.raises(Unauthenticated):
        registry.verify("faas-token")


@pytest.mark.parametrize("secret", [None, ""])
def test_a_missing_service_token_is_unauthenticated(secret):
    with pytest.raises(Unauthenticated, match="service token is required"):
        TokenRegistry.dev().verify(secret)


@pytest.mark.parametrize(
    "secret", ["nope", "l5-etl-token ", "L5-ETL-TOKEN", hash_secret("faas-token")]
)
def test_an_unknown_service_token_is_unauthenticated(secret):
    with pytest.raises(Unauthenticated, match="not valid"):
        TokenRegistry.dev().verify(secret)


def test_a_json_token_file_loads(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [
        {"name": "billing", "sha256": hash_secret("s3cret").upper(), "grants": ["logs:faas"]},
        {"name": "ops", "sha256": hash_secret("other"), "grants": ["logs:*:ws9", "logs:etl:ws1"]},
    ]}))
    registry = TokenRegistry.from_file(path)
    assert len(registry) == 2
    assert registry.verify("s3cret").name == "billing"
    ops = registry.verify("other")
    assert ops.may_publish(Channel("analytics", "ws9")) and ops.may_publish(Channel("etl", "ws1"))
    assert not ops.may_publish(Channel("etl", "ws2"))


def test_a_toml_token_file_of_tokens_tables_loads(tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text(
        '[[tokens]]\nname = "etl-prod"\n'
        f'sha256 = "{hash_secret("etl-secret")}"\ngrants = ["logs:etl"]\n\n'
        '[[tokens]]\nname = "faas-prod"\n'
        f'sha256 = "{hash_secret("faas-secret")}"\ngrants = ["logs:faas", "logs:platform"]\n'
    )
    registry = TokenRegistry.from_file(str(path))
    assert registry.verify("etl-secret").name == "etl-prod"
    grants = [str(g) for g in registry.verify("faas-secret").grants]
    assert grants == ["logs:faas", "logs:platform"]


def test_a_token_file_honours_the_configured_services(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [
        {"name": "b", "sha256": hash_secret("b"), "grants": ["logs:billing"]}]}))
    assert TokenRegistry.from_file(path, services={"billing"}).verify("b").name == "b"
    with pytest.raises(SettingsError, match="unknown service 'billing'"):
        TokenRegistry.from_file(path)


def _entry(**overrides) -> dict:
    return {"name": "t", "sha256": hash_secret("t"), "grants": ["logs:etl"], **overrides}


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        ("bad.json", '{"tokens": [', "Expecting"),
        ("bad.toml", "[[tokens]\nname = 1", "Expected"),
        ("list.json", "[]", "Expected `object`"),
        ("nokey.json", json.dumps({"tokens": [{"name": "t", "grants": []}]}), "sha256"),
        ("noname.json", json.dumps({"tokens": [{"sha256": hash_secret("t"), "grants": []}]}),
         "name"),
        ("short.json", json.dumps({"tokens": [_entry(sha256="abc123")]}), "sha256"),
        ("nothex.json", json.dumps({"tokens": [_entry(sha256="z" * 64)]}), "sha256"),
        ("grant.json", json.dumps({"tokens": [_entry(grants=["logs:nope"])]}),
         "token 't': grant 'logs:nope': unknown service"),
        ("grant2.json", json.dumps({"tokens": [_entry(grants=["logs:etl:a.b"])]}),
         "workspace segment 'a.b'"),
        ("grant3.json", json.dumps({"tokens": [_entry(grants=["logs:etl:a:b:c"])]}),
         "1 to 3 segments"),
        ("extra.json", json.dumps({"tokens": [_entry(admin=True)]}), "admin"),
        ("twice.json", json.dumps({"tokens": [_entry(), _entry(name="u")]}),
         "token 'u' has the same sha256 as token 't'"),
    ],
)
def test_a_bad_token_file_is_a_settings_error_naming_the_file(tmp_path, name, text, named):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SettingsError) as caught:
        TokenRegistry.from_file(path)
    assert str(path) in caught.value.message
    assert "tokens_file" in caught.value.message
    assert named in caught.value.message


def test_a_missing_token_file_is_a_settings_error_naming_the_file(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(SettingsError, match="absent.json"):
        TokenRegistry.from_file(path)


# User tokens


def test_an_issued_user_token_verifies_to_its_user_and_workspaces():
    tokens = UserTokens(SECRET)
    before = time.time()
    identity = tokens.verify(tokens.issue("user123", ["workspace123", "ws2"], ttl_s=600))
    assert identity.user_id == "user123"
    assert identity.workspaces == frozenset({"workspace123", "ws2"})
    assert before + 590 <= identity.expires_at <= time.time() + 610


def test_the_dev_users_are_the_contract_users():
    assert DEV_USERS == {"user123": ("workspace123",), "user456": ("workspace456",),
                         "admin": ("*",)}


def test_an_expired_user_token_is_unauthenticated_and_says_it_expired():
    tokens = UserTokens(SECRET)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(tokens.issue("user123", ["workspace123"], ttl_s=-60))


def test_a_user_token_signed_with_another_secret_is_unauthenticated():
    token = UserTokens("another-secret-" * 4).issue("u", ["w"])
    with pytest.raises(Unauthenticated, match="not valid"):
        UserTokens(SECRET).verify(token)


def test_a_dev_token_is_refused_by_a_gateway_with_a_production_secret():
    with pytest.raises(Unauthenticated):
        UserTokens(SECRET).verify(UserTokens(DEV_JWT_SECRET).issue("admin", ["*"]))


def _claims(**overrides) -> dict:
    return {"sub": "user123", "workspaces": ["workspace123"], "exp": int(time.time()) + 600,
            **overrides}


def test_a_user_token_with_the_none_algorithm_is_unauthenticated():
    token = jwt.encode(_claims(workspaces=["*"]), None, algorithm="none")
    with pytest.raises(Unauthenticated, match="not valid"):
        UserTokens(SECRET).verify(token)


def test_a_user_token_with_another_hmac_algorithm_is_unauthenticated():
    token = jwt.encode(_claims(), SECRET, algorithm="HS512")
    with pytest.raises(Unauthenticated, match="not valid"):
        UserTokens(SECRET).verify(token)


@pytest.mark.parametrize("workspaces", [None, "workspace123", [1, 2], {"a": 1}])
def test_a_user_token_without_a_workspaces_list_is_unauthenticated(workspaces):
    claims = _claims()
    if workspaces is None:
        del claims["workspaces"]
    else:
        claims["workspaces"] = workspaces
    with pytest.raises(Unauthenticated, match="'workspaces' list"):
        UserTokens(SECRET).verify(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_a_user_token_without_a_subject_is_unauthenticated():
    claims = _claims()
    del claims["sub"]
    with pytest.raises(Unauthenticated, match="sub"):
        UserTokens(SECRET).verify(jwt.encode(claims, SECRET, algorithm="HS256"))


@pytest.mark.parametrize("token", [None, ""])
def test_a_missing_user_token_is_unauthenticated(token):
    with pytest.raises(Unauthenticated, match="user token is required"):
        UserTokens(SECRET).verify(token)


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "l5-etl-token"])
def test_a_user_token_that_is_not_a_jwt_is_unauthenticated(token):
    with pytest.raises(Unauthenticated, match="not valid"):
        UserTokens(SECRET).verify(token)


def test_an_empty_user_token_secret_is_a_settings_error():
    with pytest.raises(SettingsError, match="jwt_secret"):
        UserTokens("")


# Who may read what


@pytest.mark.parametrize(
    ("pattern", "allowed"),
    [
        ("logs:etl:workspace123", True),
        ("logs:etl:workspace123:wf1", True),
        ("logs:etl:workspace123:*", True),
        ("logs:*:workspace123", True),
        ("logs:*:workspace123:*", True),
        ("logs:etl:workspace456", False),
        ("logs:etl:workspace1234", False),
        ("logs:etl:*", False),
        ("logs:*:*:*", False),
    ],
)
def test_a_user_reads_exactly_their_own_workspaces(pattern, allowed):
    user = UserIdentity("user123", frozenset({"workspace123"}))
    assert not user.is_admin
    assert user.may_read(parse_pattern(pattern)) is allowed


@pytest.mark.parametrize("pattern", ["logs:etl:*", "logs:*:*:*", "logs:faas:anyone:fn"])
def test_an_admin_reads_every_workspace(pattern):
    admin = UserTokens(SECRET).verify(UserTokens(SECRET).issue("admin", ["*"]))
    assert admin.is_admin
    assert admin.may_read(parse_pattern(pattern))
