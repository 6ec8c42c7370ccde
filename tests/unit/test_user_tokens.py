"""shared.user_tokens against CONTRACT section 8: user tokens and who may read what."""

from __future__ import annotations

import time

import jwt
import pytest

from shared.channels import parse_pattern
from shared.errors import SettingsError, Unauthenticated
from shared.identities import DEV_JWT_SECRET, DEV_USERS
from shared.user_tokens import UserIdentity, UserTokens

# 64 bytes or more, so PyJWT warns of a short HMAC key for neither HS256 nor HS512.
SECRET = "unit-test-secret-" * 4


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
