"""logstream.shared.user_tokens.ClaimMap: where an identity provider's token names the user,
its workspaces and its roles (docs/reference/identities.md#claims)."""

from __future__ import annotations

import time

import jwt
import pytest

from logstream.shared.errors import Unauthenticated
from logstream.shared.user_tokens import ClaimMap, UserTokens

SECRET = "claim-map-unit-test-secret-0123456789abcdef"
AUTH0_NS = "https://datashop.example.com/"
AUTH0 = ClaimMap(workspaces=AUTH0_NS + "workspaces", roles=AUTH0_NS + "roles")


def verify(claims: dict, mapping: ClaimMap):
    token = jwt.encode({"exp": int(time.time()) + 60, **claims}, SECRET, algorithm="HS256")
    return UserTokens(SECRET, claims=mapping).verify(token)


def test_auth0_namespaced_claims_are_read_as_whole_names_despite_their_dots():
    user = verify(
        {
            "sub": "auth0|65f1c0ffee",
            AUTH0_NS + "workspaces": ["ws1", "ws2"],
            AUTH0_NS + "roles": ["admin"],
            "permissions": ["read:logs"],
        },
        AUTH0,
    )
    assert user.user_id == "auth0|65f1c0ffee"
    assert user.workspaces == {"ws1", "ws2"} and user.is_admin


def test_a_dotted_name_reads_a_nested_claim_and_the_prefix_picks_the_workspaces():
    mapping = ClaimMap(
        user="preferred_username",
        workspaces="groups",
        workspace_prefix="/workspaces/",
        roles="realm_access.roles",
    )
    user = verify(
        {
            "sub": "2b1f",
            "preferred_username": "alice",
            "groups": ["/workspaces/ws1", "/staff", "/workspaces/", "/workspaces/ws2"],
            "realm_access": {"roles": ["offline_access", "admin"]},
        },
        mapping,
    )
    assert user.user_id == "alice"
    assert user.workspaces == {"ws1", "ws2"}  # not "/staff", nor the bare prefix
    assert user.roles == {"offline_access", "admin"}


def test_the_defaults_read_logstreams_own_claims_and_keep_the_role_claim():
    user = verify({"sub": "u1", "workspaces": ["ws1"], "role": "admin"}, ClaimMap())
    assert (user.user_id, user.workspaces, user.is_admin) == ("u1", {"ws1"}, True)
    with pytest.raises(Unauthenticated, match="'workspaces' list"):
        verify({"sub": "u1"}, ClaimMap())  # our own tokens always carry it


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ({"workspaces": ["ws1"]}, "no 'email' claim"),
        ({"email": 42, "workspaces": ["ws1"]}, "bad 'email' claim"),
        ({"email": "a@b", "workspaces": "ws1"}, "'workspaces' list"),
        ({"email": "a@b", "workspaces": ["ws1"], "app.roles": {"x": 1}}, "'app.roles'"),
    ],
)
def test_a_claim_of_the_wrong_shape_is_refused_and_named(claims, words):
    with pytest.raises(Unauthenticated, match=words) as refused:
        verify(claims, ClaimMap(user="email", roles="app.roles"))
    assert refused.value.rule == "jwt_invalid"


def test_a_provider_claim_left_out_means_no_workspace_not_a_bad_token():
    user = verify({"sub": "u2"}, ClaimMap(workspaces="groups"))
    assert user.workspaces == frozenset()
