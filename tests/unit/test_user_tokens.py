"""logstream.shared.user_tokens against docs/reference/identities.md: user tokens, their keys, and who may read what.

Every way in is tried with a token built to break one rule: another algorithm, another key,
algorithm confusion, a wrong audience or issuer, an expired or not-yet-valid token, bad claims.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from logstream.shared.channels import parse_pattern
from logstream.shared.errors import SettingsError, Unauthenticated
from logstream.shared.identities import DEV_JWT_SECRET, DEV_USERS
from logstream.shared.user_tokens import (
    DEFAULT_LEEWAY_S,
    MIN_SECRET_BYTES,
    KeySet,
    UnknownSigningKey,
    UserIdentity,
    UserTokens,
    key_set_from_jwks,
    public_key_from_pem,
    read_key_file,
    read_public_key_file,
)
from tests.support.jwks_server import SigningKey
from tests.support.jwks_server import forge_hs256 as forge_with_kid

# 64 bytes or more, so PyJWT warns of a short HMAC key for neither HS256 nor HS512.
SECRET = "unit-test-secret-" * 4
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_EC_KEY = ec.generate_private_key(ec.SECP256R1())
# The modulus of an RSA key too short to trust, and a P-384 key (ES384): JWKS members to refuse.
RSA_1024_N = RSAAlgorithm.to_jwk(
    rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(), as_dict=True
)["n"]
P384_JWK = {
    **ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True),
    "kid": "p384",
}


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _claims(**overrides) -> dict:
    return {
        "sub": "user123",
        "workspaces": ["workspace123"],
        "exp": int(time.time()) + 600,
        **overrides,
    }


def refusal(tokens: UserTokens, token: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        tokens.verify(token)
    return caught.value


def forge_hs256(claims: dict, key: bytes) -> str:
    """An HS256 token whose HMAC key is ``key``: what an attacker builds from a public PEM."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + part(json.dumps(claims).encode())
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + part(signature)


# User tokens with a shared secret


def test_an_issued_user_token_verifies_to_its_user_and_workspaces():
    tokens = UserTokens(SECRET)
    before = time.time()
    identity = tokens.verify(tokens.issue("user123", ["workspace123", "ws2"], ttl_s=600))
    assert identity.user_id == "user123"
    assert identity.workspaces == frozenset({"workspace123", "ws2"})
    assert identity.roles == frozenset() and not identity.is_admin
    # The gateway accepts it until exp plus the leeway, and ends its streams then.
    assert before + 600 + DEFAULT_LEEWAY_S - 1 <= identity.expires_at
    assert identity.expires_at <= time.time() + 600 + DEFAULT_LEEWAY_S


def test_the_dev_users_are_the_contract_users():
    assert DEV_USERS == {
        "user123": ("workspace123",),
        "user456": ("workspace456",),
        "admin": ("*",),
    }


def test_the_dev_admin_token_carries_the_admin_role_and_the_others_none():
    tokens = UserTokens(DEV_JWT_SECRET)
    admin = tokens.verify(tokens.issue_dev("admin"))
    assert admin.is_admin and admin.reads_every_workspace
    user = tokens.verify(tokens.issue_dev("user123"))
    assert not user.is_admin and user.workspaces == {"workspace123"}


def test_an_expired_user_token_is_unauthenticated_and_says_it_expired():
    tokens = UserTokens(SECRET)
    error = refusal(tokens, tokens.issue("user123", ["workspace123"], ttl_s=-60))
    assert "expired" in error.message and error.rule == "jwt_expired"


def test_a_token_expired_within_the_leeway_is_accepted_until_the_leeway_runs_out():
    exp = int(time.time()) - 3
    token = jwt.encode(_claims(exp=exp), SECRET, algorithm="HS256")
    identity = UserTokens(SECRET, leeway_s=30).verify(token)
    assert identity.expires_at == exp + 30
    assert refusal(UserTokens(SECRET, leeway_s=1), token).rule == "jwt_expired"


def test_a_token_not_valid_yet_is_refused_beyond_the_leeway_only():
    token = jwt.encode(_claims(nbf=int(time.time()) + 20), SECRET, algorithm="HS256")
    error = refusal(UserTokens(SECRET, leeway_s=5), token)
    assert "not valid yet" in error.message and error.rule == "jwt_invalid"
    assert UserTokens(SECRET, leeway_s=60).verify(token).user_id == "user123"


def test_a_token_issued_in_the_future_is_refused():
    token = jwt.encode(_claims(iat=int(time.time()) + 600), SECRET, algorithm="HS256")
    assert refusal(UserTokens(SECRET), token).rule == "jwt_invalid"


def test_a_user_token_without_an_expiry_is_refused():
    claims = _claims()
    del claims["exp"]
    error = refusal(UserTokens(SECRET), jwt.encode(claims, SECRET, algorithm="HS256"))
    assert "'exp'" in error.message and error.rule == "jwt_invalid"


def test_a_user_token_signed_with_another_secret_is_unauthenticated():
    token = UserTokens("another-secret-" * 4).issue("u", ["w"])
    error = refusal(UserTokens(SECRET), token)
    assert "not valid" in error.message and error.rule == "jwt_invalid"


def test_a_dev_token_is_refused_by_a_gateway_with_a_production_secret():
    with pytest.raises(Unauthenticated):
        UserTokens(SECRET).verify(UserTokens(DEV_JWT_SECRET).issue_dev("admin"))


def test_a_user_token_with_the_none_algorithm_is_unauthenticated():
    token = jwt.encode(_claims(workspaces=["*"], roles=["admin"]), None, algorithm="none")
    assert refusal(UserTokens(SECRET), token).rule == "jwt_invalid"
    assert (
        refusal(UserTokens(key=public_key_from_pem(public_pem(RSA_KEY))), token).rule
        == "jwt_invalid"
    )


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_a_user_token_with_another_hmac_algorithm_is_unauthenticated(algorithm):
    token = jwt.encode(_claims(), SECRET, algorithm=algorithm)
    assert "not valid" in refusal(UserTokens(SECRET), token).message


def test_an_rs256_token_is_refused_where_only_a_secret_is_configured():
    token = jwt.encode(_claims(), RSA_KEY, algorithm="RS256")
    assert refusal(UserTokens(SECRET), token).rule == "jwt_invalid"


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


@pytest.mark.parametrize("subject", ["", "x" * 257, 42])
def test_an_empty_overlong_or_non_string_subject_is_unauthenticated(subject):
    token = jwt.encode(_claims(sub=subject), SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match=r"(?i)sub"):
        UserTokens(SECRET).verify(token)


@pytest.mark.parametrize("token", [None, ""])
def test_a_missing_user_token_is_unauthenticated(token):
    error = refusal(UserTokens(SECRET), token)
    assert "user token is required" in error.message and error.rule == "no_credential"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "l5-etl-token", "e30.e30.", "..."])
def test_a_user_token_that_is_not_a_jwt_is_unauthenticated(token):
    assert "not valid" in refusal(UserTokens(SECRET), token).message


def test_an_empty_user_token_secret_is_a_settings_error():
    with pytest.raises(SettingsError, match="jwt_secret"):
        UserTokens("")


def test_a_user_token_secret_shorter_than_32_bytes_is_a_settings_error():
    with pytest.raises(SettingsError, match=r"jwt_secret.*LOGSTREAM_JWT_SECRET.*32 bytes"):
        UserTokens("s" * (MIN_SECRET_BYTES - 1))


# Audience and issuer


def test_a_configured_audience_and_issuer_are_required_and_must_match():
    tokens = UserTokens(SECRET, audience="logstream", issuer="https://idp.example")
    assert tokens.verify(tokens.issue("u", ["w"])).user_id == "u"
    cases = {
        "jwt_audience": [
            _claims(aud="other", iss="https://idp.example"),
            _claims(iss="https://idp.example"),
        ],
        "jwt_issuer": [
            _claims(aud="logstream", iss="https://evil.example"),
            _claims(aud="logstream"),
        ],
    }
    for rule, claims_list in cases.items():
        for claims in claims_list:
            error = refusal(tokens, jwt.encode(claims, SECRET, algorithm="HS256"))
            assert error.rule == rule, claims


def test_a_token_for_some_audience_is_refused_where_none_is_configured():
    token = jwt.encode(_claims(aud="another-service"), SECRET, algorithm="HS256")
    error = refusal(UserTokens(SECRET), token)
    assert "audience" in error.message and error.rule == "jwt_audience"


def test_any_issuer_is_accepted_where_none_is_configured():
    token = jwt.encode(_claims(iss="https://anyone.example"), SECRET, algorithm="HS256")
    assert UserTokens(SECRET).verify(token).user_id == "user123"


# Public keys


def test_an_rsa_public_key_verifies_rs256_tokens():
    tokens = UserTokens(key=public_key_from_pem(public_pem(RSA_KEY)))
    assert tokens.algorithm == "RS256"
    identity = tokens.verify(jwt.encode(_claims(roles=["admin"]), RSA_KEY, algorithm="RS256"))
    assert identity.user_id == "user123" and identity.is_admin


def test_an_ec_p256_public_key_verifies_es256_tokens():
    tokens = UserTokens(key=public_key_from_pem(public_pem(EC_KEY)))
    assert tokens.algorithm == "ES256"
    assert tokens.verify(jwt.encode(_claims(), EC_KEY, algorithm="ES256")).user_id == "user123"


@pytest.mark.parametrize("pem_of", ["rsa", "ec"])
def test_an_hs256_token_signed_with_the_public_pem_is_refused(pem_of):
    """Algorithm confusion: the public key is public, so it must never work as an HMAC secret."""
    pem = public_pem(RSA_KEY if pem_of == "rsa" else EC_KEY)
    tokens = UserTokens(key=public_key_from_pem(pem))
    claims = _claims(workspaces=["*"], roles=["admin"])
    for key in (pem, pem.strip(), pem.decode().replace("\n", "\r\n").encode()):
        assert refusal(tokens, forge_hs256(claims, key)).rule == "jwt_invalid"


@pytest.mark.parametrize(
    ("signer", "algorithm"),
    [
        (OTHER_RSA_KEY, "RS256"),  # right algorithm, wrong key
        (RSA_KEY, "RS384"),  # right key, an algorithm outside the allow-list
        (RSA_KEY, "PS256"),
        (EC_KEY, "ES256"),
    ],
)
def test_an_rsa_gateway_refuses_every_other_signature(signer, algorithm):
    tokens = UserTokens(key=public_key_from_pem(public_pem(RSA_KEY)))
    assert refusal(tokens, jwt.encode(_claims(), signer, algorithm=algorithm)).rule == "jwt_invalid"


@pytest.mark.parametrize(
    ("signer", "algorithm"),
    [
        (OTHER_EC_KEY, "ES256"),
        (RSA_KEY, "RS256"),
        (SECRET, "HS256"),
    ],
)
def test_an_ec_gateway_refuses_every_other_signature(signer, algorithm):
    tokens = UserTokens(key=public_key_from_pem(public_pem(EC_KEY)))
    assert refusal(tokens, jwt.encode(_claims(), signer, algorithm=algorithm)).rule == "jwt_invalid"


def test_a_public_key_cannot_issue_tokens():
    with pytest.raises(SettingsError, match="cannot issue"):
        UserTokens(key=public_key_from_pem(public_pem(RSA_KEY))).issue("u", ["w"])


def test_a_secret_and_a_public_key_together_are_a_settings_error():
    with pytest.raises(SettingsError, match=r"jwt_secret.*jwt_public_key_file.*not both"):
        UserTokens(SECRET, key=public_key_from_pem(public_pem(RSA_KEY)))


@pytest.mark.parametrize(
    ("pem", "problem"),
    [
        (b"not a key", "not a PEM public key"),
        (b"", "not a PEM public key"),
        (
            RSA_KEY.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "not a PEM public key",
        ),
        (public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "2048 bits"),
        (public_pem(ec.generate_private_key(ec.SECP384R1())), "P-256"),
        (public_pem(ed25519.Ed25519PrivateKey.generate()), "not supported"),
    ],
)
def test_an_unusable_public_key_is_a_settings_error_naming_the_setting(pem, problem):
    with pytest.raises(SettingsError) as caught:
        public_key_from_pem(pem)
    assert "jwt_public_key_file (LOGSTREAM_JWT_PUBLIC_KEY_FILE)" in caught.value.message
    assert problem in caught.value.message


def test_a_missing_public_key_file_is_a_settings_error_naming_the_file(tmp_path):
    with pytest.raises(SettingsError) as caught:
        read_public_key_file(str(tmp_path / "absent.pem"))
    assert "LOGSTREAM_JWT_PUBLIC_KEY_FILE" in caught.value.message
    assert "absent.pem" in caught.value.message


def test_a_public_key_file_may_hold_a_certificate(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(RSA_KEY.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(RSA_KEY, hashes.SHA256())
    )
    path = tmp_path / "idp.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tokens = UserTokens(key=read_public_key_file(str(path)))
    assert tokens.verify(jwt.encode(_claims(), RSA_KEY, algorithm="RS256")).user_id == "user123"


# Roles


@pytest.mark.parametrize(
    ("claims", "admin"),
    [
        ({"roles": ["viewer", "admin"]}, True),
        ({"roles": "admin"}, True),
        ({"role": "admin"}, True),
        ({"roles": ["viewer"]}, False),
        ({"roles": []}, False),
        ({"role": "administrator"}, False),
        ({"workspaces": ["*"]}, False),  # reading every workspace is not administering
    ],
)
def test_the_admin_role_comes_from_roles_or_role_and_nothing_else(claims, admin):
    identity = UserTokens(SECRET).verify(jwt.encode(_claims(**claims), SECRET, algorithm="HS256"))
    assert identity.is_admin is admin


@pytest.mark.parametrize(
    "claims", [{"roles": {"admin": True}}, {"roles": ["admin", 1]}, {"role": ["admin"]}]
)
def test_a_malformed_role_claim_is_unauthenticated(claims):
    error = refusal(UserTokens(SECRET), jwt.encode(_claims(**claims), SECRET, algorithm="HS256"))
    assert "role" in error.message and error.rule == "jwt_invalid"


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
        ("logs:etl:*:*", False),
        ("logs:*:*:*", False),
        ("logs:*:*:wf1", False),
    ],
)
def test_a_user_reads_exactly_their_own_workspaces(pattern, allowed):
    user = UserIdentity("user123", frozenset({"workspace123"}))
    assert not user.reads_every_workspace
    assert user.may_read(parse_pattern(pattern)) is allowed


def test_a_user_may_not_name_a_workspace_called_star_to_read_everything():
    user = UserIdentity("user123", frozenset({"workspace123"}))
    assert not user.may_read(parse_pattern("logs:etl:*:wf1"))


@pytest.mark.parametrize(
    "pattern", ["logs:etl:*", "logs:etl:*:*", "logs:*:*:*", "logs:faas:anyone:fn"]
)
def test_a_user_of_every_workspace_reads_every_channel(pattern):
    reader = UserTokens(SECRET).verify(UserTokens(SECRET).issue("reader", ["*"]))
    assert reader.reads_every_workspace and not reader.is_admin
    assert reader.may_read(parse_pattern(pattern))


# Key sets: JWKS documents (a file, or an identity provider's endpoint), keys chosen by kid


def _jwks(*members) -> str:
    return json.dumps({"keys": list(members)})


def _set(*members) -> KeySet:
    return key_set_from_jwks(_jwks(*members), source="test JWKS")


KEY_A, KEY_B = SigningKey("a"), SigningKey("b", "ec")
KEY_C = SigningKey("c", "ed25519")


def test_a_jwks_key_is_chosen_by_the_tokens_kid_and_its_algorithm_is_the_keys():
    tokens = UserTokens(keys=_set(KEY_A.jwk(), KEY_B.jwk(), KEY_C.jwk()))
    assert tokens.keys.kids == ["a", "b", "c"]
    assert tokens.algorithm == "ES256,EdDSA,RS256"
    seen = set()
    for key in (KEY_A, KEY_B, KEY_C):
        identity = tokens.verify(key.token(_claims(sub=f"user-{key.kid}")))
        assert identity.user_id == f"user-{key.kid}"
        seen.add(identity.key_id)
    assert len(seen) == 3  # each stream remembers which key verified it


def test_without_alg_the_algorithm_follows_the_key_type():
    tokens = UserTokens(keys=_set(*(key.jwk(alg=False) for key in (KEY_A, KEY_B, KEY_C))))
    assert {key.kid: key.algorithm for key in tokens.keys.keys} == {
        "a": "RS256",
        "b": "ES256",
        "c": "EdDSA",
    }
    assert tokens.verify(KEY_C.token(_claims())).user_id == "user123"


def test_a_kid_not_in_the_set_is_jwt_unknown_key_naming_the_kid():
    tokens = UserTokens(keys=_set(KEY_A.jwk(), KEY_B.jwk()))
    error = refusal(tokens, SigningKey("rotated-in").token(_claims()))
    assert isinstance(error, UnknownSigningKey) and error.kid == "rotated-in"
    assert error.rule == "jwt_unknown_key"
    assert "'rotated-in'" in error.message and "fresh token" in error.message


def test_with_several_keys_a_token_must_name_its_key():
    tokens = UserTokens(keys=_set(KEY_A.jwk(), KEY_B.jwk()))
    error = refusal(tokens, KEY_A.token(_claims(), kid=None))
    assert error.rule == "jwt_invalid" and "'kid'" in error.message and "2 keys" in error.message


def test_a_set_of_one_key_takes_a_token_without_a_kid_but_not_one_naming_another():
    tokens = UserTokens(keys=_set(KEY_A.jwk()))
    assert tokens.verify(KEY_A.token(_claims(), kid=None)).user_id == "user123"
    assert refusal(tokens, KEY_A.token(_claims(), kid="other")).rule == "jwt_unknown_key"


def test_a_key_without_a_kid_alone_in_its_set_verifies_whatever_the_token_names():
    tokens = UserTokens(keys=_set(KEY_A.jwk(kid=None)))
    assert tokens.verify(KEY_A.token(_claims(), kid="anything")).user_id == "user123"
    # A PEM key too, as before key sets: the token's kid is not even read.
    pem_tokens = UserTokens(key=public_key_from_pem(public_pem(KEY_A.private)))
    assert pem_tokens.verify(KEY_A.token(_claims(), kid="anything")).user_id == "user123"


def test_a_token_signed_by_another_key_under_a_published_kid_is_invalid():
    tokens = UserTokens(keys=_set(KEY_A.jwk(), KEY_B.jwk()))
    impostor = SigningKey("a")  # same kid, other key material
    assert refusal(tokens, impostor.token(_claims())).rule == "jwt_invalid"


@pytest.mark.parametrize("kid", [7, "", "k" * 257, ["a"], None])
def test_a_kid_header_that_is_not_a_short_string_is_jwt_invalid(kid):
    tokens = UserTokens(keys=_set(KEY_A.jwk(), KEY_B.jwk()))
    # Built by hand: PyJWT will not encode a kid that is not a string.
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    token = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
        for part in (header, _claims())
    )
    error = refusal(tokens, token + ".c2ln")
    assert error.rule == "jwt_invalid"
    assert "'kid'" in error.message or "Key ID" in error.message, error.message


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "e30.e30.", "..."])
def test_a_malformed_token_is_jwt_invalid_before_any_key_is_chosen(token):
    tokens = UserTokens(keys=_set(KEY_A.jwk(), KEY_B.jwk()))
    assert refusal(tokens, token).rule == "jwt_invalid"


def test_algorithm_confusion_under_a_published_kid_never_verifies():
    """The JWKS is public: neither its RSA key's PEM nor the JWK itself may work as an HMAC
    secret, and no token picks its own algorithm (`none`, RS384, ES256 under an RSA kid)."""
    tokens = UserTokens(keys=_set(KEY_A.jwk(), KEY_B.jwk()))
    payload = _claims(workspaces=["*"], roles=["admin"])
    pem = public_pem(KEY_A.private)
    secrets = [pem, pem.strip(), json.dumps(KEY_A.jwk()).encode(), KEY_A.jwk()["n"].encode()]
    forged = [forge_with_kid(payload, secret, "a") for secret in secrets]
    forged += [
        jwt.encode(payload, None, algorithm="none", headers={"kid": "a"}),
        jwt.encode(payload, KEY_A.private, algorithm="RS384", headers={"kid": "a"}),
        jwt.encode(payload, KEY_A.private, algorithm="PS256", headers={"kid": "a"}),
        jwt.encode(payload, KEY_B.private, algorithm="ES256", headers={"kid": "a"}),
        jwt.encode(payload, KEY_A.private, algorithm="RS256", headers={"kid": "b"}),
    ]
    for token in forged:
        assert refusal(tokens, token).rule == "jwt_invalid", jwt.get_unverified_header(token)


@pytest.mark.parametrize(
    ("member", "says"),
    [
        ({"kty": "oct", "kid": "s", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}, "symmetric"),
        ({**KEY_A.jwk(), "alg": "HS256"}, "alg 'HS256' is not accepted"),
        ({**KEY_A.jwk(), "alg": "none"}, "alg 'none' is not accepted"),
        ({**KEY_A.jwk(), "alg": "RS384"}, "alg 'RS384' is not accepted"),
        ({**KEY_A.jwk(), "use": "enc"}, "not 'sig'"),
        ({**KEY_A.jwk(), "d": "AQAB"}, "private key material"),
        (SigningKey("weak").jwk() | {"n": RSA_1024_N}, "2048 bits"),
        ({**KEY_B.jwk(), "alg": "RS256"}, "not a usable JWK"),
        ({**KEY_B.jwk(alg=False), "crv": "P-384"}, "not a usable JWK"),  # P-256 coordinates
        (P384_JWK, "implies ES384"),
        ({**KEY_A.jwk(), "kid": 42}, "kid must be a string"),
        ("not an object", "not a JSON object"),
        ({"kty": "RSA", "kid": "broken"}, "not a usable JWK"),
    ],
)
def test_a_jwks_member_that_cannot_sign_is_left_out_saying_why(member, says):
    keys = _set(member, KEY_B.jwk())
    assert keys.kids == ["b"]
    [note] = keys.skipped
    assert note.startswith("key 0") and says in note, note
    with pytest.raises(SettingsError) as caught:
        _set(member)
    assert caught.value.message.startswith("test JWKS: no usable signing key")
    assert says in caught.value.message


def test_a_second_key_with_a_kid_already_used_is_left_out():
    keys = _set(KEY_A.jwk(), SigningKey("a").jwk())
    assert len(keys) == 1 and "used by an earlier key" in keys.skipped[0]


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ("not json", "not JSON"),
        ("[]", "not a JWKS"),
        ('{"keys": {}}', "not a JWKS"),
        ("{}", "not a JWKS"),
        ('{"keys": []}', "the 'keys' list is empty"),
        (_jwks(*[KEY_A.jwk()] * 101), "101 keys"),
    ],
)
def test_a_document_that_is_no_jwks_is_a_settings_error(document, says):
    with pytest.raises(SettingsError) as caught:
        key_set_from_jwks(document, source="where")
    assert caught.value.message.startswith("where: ") and says in caught.value.message


def test_a_key_file_may_hold_a_jwks_or_one_pem_key(tmp_path):
    jwks = tmp_path / "keys.json"
    jwks.write_text("\n  " + _jwks(KEY_A.jwk(), KEY_B.jwk()))
    keys = read_key_file(str(jwks))
    assert keys.kids == ["a", "b"]
    tokens = UserTokens(keys=keys)
    assert tokens.verify(KEY_B.token(_claims())).user_id == "user123"
    pem = tmp_path / "key.pem"
    pem.write_bytes(public_pem(KEY_A.private))
    assert len(read_key_file(str(pem))) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(_jwks({"kty": "oct", "k": "c2VjcmV0"}))
    with pytest.raises(SettingsError) as caught:
        read_key_file(str(bad))
    assert "LOGSTREAM_JWT_PUBLIC_KEY_FILE" in caught.value.message
    assert "bad.json" in caught.value.message and "symmetric" in caught.value.message


def test_a_key_set_cannot_issue_tokens():
    with pytest.raises(SettingsError, match="cannot issue"):
        UserTokens(keys=_set(KEY_A.jwk())).issue("u", ["w"])


def test_a_watch_sees_its_key_withdrawn_and_a_renamed_key_still_held():
    tokens = UserTokens(keys=_set(KEY_A.jwk(), KEY_B.jwk()))
    user = tokens.verify(KEY_A.token(_claims()))
    watch = tokens.watch(user)
    assert watch is not None and watch.held()
    tokens.use_keys(_set(KEY_A.jwk(kid="a-renamed"), KEY_B.jwk()))
    assert watch.held()  # the same key material signed it
    tokens.use_keys(_set(KEY_B.jwk()))
    assert not watch.held()
    assert tokens.watch(tokens.verify(KEY_B.token(_claims()))).held()


async def test_an_unknown_kid_asks_for_the_keys_once_and_verifies_with_what_came():
    tokens = UserTokens(keys=_set(KEY_A.jwk()))
    asked: list[str] = []

    async def refetch(kid: str) -> bool:
        asked.append(kid)
        tokens.use_keys(_set(KEY_A.jwk(), KEY_B.jwk()))
        return True

    tokens.refetch = refetch
    assert (await tokens.verify_current(KEY_A.token(_claims()))).user_id == "user123"
    assert asked == []  # a known kid asks for nothing
    assert (await tokens.verify_current(KEY_B.token(_claims()))).user_id == "user123"
    assert asked == ["b"]
    error = None
    try:
        await tokens.verify_current(SigningKey("c").token(_claims()))
    except UnknownSigningKey as unknown:
        error = unknown
    assert error is not None and error.kid == "c" and asked == ["b", "c"]


async def test_an_unknown_kid_the_source_will_not_fetch_for_is_refused_at_once():
    tokens = UserTokens(keys=_set(KEY_A.jwk()))

    async def refused(kid: str) -> bool:
        return False

    tokens.refetch = refused
    with pytest.raises(UnknownSigningKey):
        await tokens.verify_current(KEY_B.token(_claims()))
    tokens.refetch = None  # keys that never change: refused just the same
    with pytest.raises(UnknownSigningKey):
        await tokens.verify_current(KEY_B.token(_claims()))
