"""logstream.shared.service_tokens against docs/reference/identities.md: service tokens and their grants."""

from __future__ import annotations

import json

import pytest

from logstream.shared import service_tokens
from logstream.shared.channels import Channel
from logstream.shared.errors import SettingsError, Unauthenticated
from logstream.shared.service_tokens import MAX_SECRET_CHARS, TokenRegistry, hash_secret

# Service tokens


def test_the_dev_registry_holds_exactly_the_four_dev_tokens_with_their_grants():
    registry = TokenRegistry.dev()
    assert len(registry) == 4
    expected = {
        "l5-etl-token": "logs:etl",
        "faas-token": "logs:faas",
        "analytics-token": "logs:analytics",
        "platform-token": "logs:platform",
    }
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
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    {
                        "name": "billing",
                        "sha256": hash_secret("s3cret").upper(),
                        "grants": ["logs:faas"],
                    },
                    {
                        "name": "ops",
                        "sha256": hash_secret("other"),
                        "grants": ["logs:*:ws9", "logs:etl:ws1"],
                    },
                ]
            }
        )
    )
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
    path.write_text(
        json.dumps(
            {"tokens": [{"name": "b", "sha256": hash_secret("b"), "grants": ["logs:billing"]}]}
        )
    )
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
        (
            "noname.json",
            json.dumps({"tokens": [{"sha256": hash_secret("t"), "grants": []}]}),
            "name",
        ),
        ("short.json", json.dumps({"tokens": [_entry(sha256="abc123")]}), "sha256"),
        ("nothex.json", json.dumps({"tokens": [_entry(sha256="z" * 64)]}), "sha256"),
        (
            "grant.json",
            json.dumps({"tokens": [_entry(grants=["logs:nope"])]}),
            "token 't': grant 'logs:nope': unknown service",
        ),
        (
            "grant2.json",
            json.dumps({"tokens": [_entry(grants=["logs:etl:a.b"])]}),
            "workspace segment 'a.b'",
        ),
        (
            "grant3.json",
            json.dumps({"tokens": [_entry(grants=["logs:etl:a:b:c"])]}),
            "1 to 3 segments",
        ),
        ("extra.json", json.dumps({"tokens": [_entry(admin=True)]}), "admin"),
        ("colon.json", json.dumps({"tokens": [_entry(name="a:b")]}), "name"),
        ("newline.json", json.dumps({"tokens": [_entry(name="a\nb")]}), "name"),
        ("space.json", json.dumps({"tokens": [_entry(name="a b")]}), "name"),
        ("long.json", json.dumps({"tokens": [_entry(name="n" * 129)]}), "name"),
        (
            "twice.json",
            json.dumps({"tokens": [_entry(), _entry(name="u")]}),
            "token 'u' has the same sha256 as token 't'",
        ),
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
    with pytest.raises(SettingsError, match=r"absent.json"):
        TokenRegistry.from_file(path)


# Verification rules and constant-time comparison


@pytest.mark.parametrize(
    ("secret", "rule"), [(None, "no_credential"), ("", "no_credential"), ("nope", "token_invalid")]
)
def test_a_refused_service_token_names_the_rule_that_refused_it(secret, rule):
    with pytest.raises(Unauthenticated) as caught:
        TokenRegistry.dev().verify(secret)
    assert caught.value.rule == rule


def test_an_absurdly_long_token_is_refused_without_being_hashed(monkeypatch):
    registry, hashed = TokenRegistry.dev(), []
    monkeypatch.setattr(service_tokens, "_digest", lambda s: hashed.append(s) or b"")
    with pytest.raises(Unauthenticated) as caught:
        registry.verify("x" * (MAX_SECRET_CHARS + 1))
    assert caught.value.rule == "token_invalid" and hashed == []
    assert str(MAX_SECRET_CHARS) in caught.value.message


@pytest.mark.parametrize("secret", ["\ud800", "caf\u00e9", "\x00\r\n", " "])
def test_an_odd_token_is_just_not_valid(secret):
    with pytest.raises(Unauthenticated, match="not valid"):
        TokenRegistry.dev().verify(secret)


@pytest.mark.parametrize("secret", ["l5-etl-token", "platform-token", "nope"])
def test_every_known_digest_is_compared_whichever_token_matches(monkeypatch, secret):
    compared = []

    def compare_digest(a, b):
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(service_tokens.hmac, "compare_digest", compare_digest)
    registry = TokenRegistry.dev()
    try:
        registry.verify(secret)
    except Unauthenticated:
        pass
    assert len(compared) == len(registry) == 4  # no early exit on a match
    assert {b for _, b in compared} == {bytes.fromhex(hash_secret(secret))}


def test_the_registry_holds_digests_never_secrets():
    registry = TokenRegistry.dev()
    held = repr([(digest, token.grants) for digest, token in registry._entries])
    for secret in ("l5-etl-token", "faas-token"):
        assert secret not in held and secret.encode() not in b"".join(
            digest for digest, _ in registry._entries
        )


def test_one_name_may_hold_two_secrets_while_a_secret_is_rotated(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    _entry(name="etl", sha256=hash_secret("old")),
                    _entry(name="etl", sha256=hash_secret("new")),
                ]
            }
        )
    )
    registry = TokenRegistry.from_file(path)
    assert registry.verify("old").name == registry.verify("new").name == "etl"


# Reloading the token file (ingest does on SIGHUP)


def _write(path, *secrets: str) -> None:
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    _entry(name=f"name-{secret}", sha256=hash_secret(secret)) for secret in secrets
                ]
            }
        )
    )


def test_a_reload_replaces_the_tokens_with_the_files_new_ones(tmp_path):
    path = tmp_path / "tokens.json"
    _write(path, "a")
    registry = TokenRegistry.from_file(path)
    _write(path, "b", "c")
    assert registry.reload() == 2 and len(registry) == 2
    assert registry.verify("b").name == "name-b"
    with pytest.raises(Unauthenticated):
        registry.verify("a")


@pytest.mark.parametrize(
    "broken", ['{"tokens": [', json.dumps({"tokens": [_entry(sha256="z")]}), None]
)
def test_a_reload_of_a_bad_or_missing_file_keeps_the_old_tokens(tmp_path, broken):
    path = tmp_path / "tokens.json"
    _write(path, "a")
    registry = TokenRegistry.from_file(path)
    if broken is None:
        path.unlink()
    else:
        path.write_text(broken)
    with pytest.raises(SettingsError) as caught:
        registry.reload()
    assert str(path) in caught.value.message and "tokens_file" in caught.value.message
    assert registry.verify("a").name == "name-a" and len(registry) == 1


def test_a_registry_without_a_file_cannot_reload():
    with pytest.raises(SettingsError, match="no file"):
        TokenRegistry.dev().reload()
