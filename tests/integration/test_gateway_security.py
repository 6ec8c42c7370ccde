"""The gateway's edge rules against real production-mode processes (docs/reference/settings.md#processes-and-commands, docs/reference/stream.md and docs/reference/identities.md).

Three production gateways share the suite's NATS: one with an HS256 secret (plus an admin
token, an audience, an issuer, a short leeway and a connection cap of 2), one with an RSA public
key, one with an EC P-256 public key. Each test builds the credential or request that should
break one rule and checks that it does not. Records are written to JetStream as ingest would
(``js_writer``), on channels of the test's own workspace (``unique_id``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.user_tokens import UserTokens
from tests.support.processes import ServiceProcess
from tests.support.sse_client import StreamRefused, open_stream
from tests.support.waiting import wait_until

SECRET = "a-production-secret-for-the-security-tests-" * 2  # 64+ bytes: HS512 warns on less
ADMIN_TOKEN = "the-admin-token-of-the-security-tests-0123456789"
AUDIENCE, ISSUER = "logstream-tests", "https://idp.logstream.test"
# Short, so that tests of expiry take seconds; long enough that a token minted one second
# "late" still gets through on a busy machine.
LEEWAY_S = 4
CAP = 2
TOKENS = UserTokens(SECRET, audience=AUDIENCE, issuer=ISSUER, leeway_s=LEEWAY_S)
# Bounds a failing wait only; a passing test moves on as soon as its event arrives.
DEADLINE_S = 20.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Gateways:
    def __init__(self, hs: ServiceProcess, rsa_: ServiceProcess, ec_: ServiceProcess) -> None:
        self.hs, self.rsa, self.ec = hs, rsa_, ec_


@pytest.fixture(scope="module")
def gateways(nats_server, log_dir, js_writer, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys")
    (keys / "rsa.pem").write_bytes(public_pem(RSA_KEY))
    (keys / "ec.pem").write_bytes(public_pem(EC_KEY))
    common = {"nats_url": nats_server.url_as("gateway"), "log_dir": log_dir, "dev": False}
    hs = ServiceProcess(
        "gateway",
        **common,
        args=[
            "--jwt-secret",
            SECRET,
            "--admin-token",
            ADMIN_TOKEN,
            "--jwt-audience",
            AUDIENCE,
            "--jwt-issuer",
            ISSUER,
            "--jwt-leeway",
            str(LEEWAY_S),
            "--heartbeat",
            "0.5",
            "--max-connections-per-user",
            str(CAP),
        ],
    )
    rsa_ = ServiceProcess(
        "gateway", **common, args=["--jwt-public-key-file", str(keys / "rsa.pem")]
    )
    ec_ = ServiceProcess("gateway", **common, args=["--jwt-public-key-file", str(keys / "ec.pem")])
    started = [hs, rsa_, ec_]
    for service in started:
        service.start(wait=False)
    try:
        for service in started:
            service.wait_healthy()
        yield Gateways(hs, rsa_, ec_)
    finally:
        for service in started:
            service.stop()


def stream_url(gateway: ServiceProcess, *channels: str) -> str:
    return f"{gateway.url}/api/logs/stream?channels={','.join(channels)}"


def claims(**extra) -> dict:
    return {
        "sub": "user123",
        "workspaces": ["workspace123"],
        "aud": AUDIENCE,
        "iss": ISSUER,
        "exp": int(time.time()) + 600,
        **extra,
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def get(url: str, **kwargs) -> httpx.Response:
    """One request that is refused before any stream opens (a 200 would be an endless body)."""
    with httpx.stream("GET", url, timeout=DEADLINE_S, **kwargs) as response:
        if response.status_code == 200:
            return response
        response.read()
        return response


def refused(url: str, **kwargs) -> httpx.Response:
    response = get(url, **kwargs)
    assert response.status_code != 200, "the stream opened"
    return response


def forge_hs256(payload: dict, key: bytes) -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(json.dumps(payload).encode())
    return head + "." + part(hmac.new(key, head.encode(), hashlib.sha256).digest())


async def collect_until(stream, marker: str) -> list[dict]:
    """Every record up to and including the one whose message is ``marker``."""
    found: list[dict] = []
    while not found or found[-1]["message"] != marker:
        found += await stream.logs(1)
    return found


# -- production mode: no dev identity, route or default ----------------------------------------


def test_production_refuses_a_query_token_and_says_to_use_the_header_or_cookie(gateways):
    token = TOKENS.issue("user123", ["workspace123"])
    answer = refused(stream_url(gateways.hs, "logs:etl:workspace123") + f"&access_token={token}")
    assert answer.status_code == 401
    assert "Authorization: Bearer" in answer.json()["message"]
    assert "logstream_session" in answer.json()["message"]


def test_production_refuses_dev_tokens_even_the_dev_admins(gateways):
    dev_admin = UserTokens(DEV_JWT_SECRET).issue_dev("admin")
    assert (
        refused(stream_url(gateways.hs, "logs:etl:*"), headers=bearer(dev_admin)).status_code == 401
    )
    assert (
        httpx.get(f"{gateways.hs.url}/admin/logs/stats", headers=bearer(dev_admin)).status_code
        == 401
    )


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_production_has_no_test_route(gateways, method):
    answer = httpx.request(
        method,
        f"{gateways.hs.url}/test/logs",
        json={"channel": "logs:etl:workspace123", "message": "x"},
    )
    assert answer.status_code == 404


# -- the admin route --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credential", "status"),
    [
        (None, 401),
        ("not-the-admin-token-but-just-as-long-as-it-0123", 401),
        (TOKENS.issue("user123", ["workspace123"]), 403),
        (TOKENS.issue("reader", ["*"]), 403),  # reads everything, yet is no admin
        (TOKENS.issue("viewer", ["*"], roles=["viewer"]), 403),
    ],
)
def test_production_stats_refuse_every_non_admin_credential(gateways, credential, status):
    headers = bearer(credential) if credential else {}
    answer = httpx.get(f"{gateways.hs.url}/admin/logs/stats", headers=headers)
    assert answer.status_code == status
    assert answer.json()["error"] == ("unauthenticated" if status == 401 else "forbidden")
    if status == 403:
        assert "admin role" in answer.json()["message"]


def test_the_admin_token_is_not_taken_from_the_query_in_production(gateways):
    answer = httpx.get(f"{gateways.hs.url}/admin/logs/stats", params={"access_token": ADMIN_TOKEN})
    assert answer.status_code == 401


@pytest.mark.parametrize(
    "credential",
    [
        TOKENS.issue("boss", ["workspace123"], roles=["admin"]),
        jwt.encode(claims(sub="chief", role="admin"), SECRET, algorithm="HS256"),
        ADMIN_TOKEN,
    ],
)
def test_production_stats_answer_the_admin_role_or_the_admin_token(gateways, credential):
    answer = httpx.get(f"{gateways.hs.url}/admin/logs/stats", headers=bearer(credential))
    assert answer.status_code == 200
    assert {"connections", "users", "channels", "delivered_total", "uptime_s"} <= set(answer.json())


# -- JWT rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "says"),
    [
        # PyJWT's "none" algorithm takes None as its key, which encode()'s annotation leaves out.
        (jwt.encode(claims(workspaces=["*"]), None, algorithm="none"), "not valid"),  # type: ignore[arg-type]
        (jwt.encode(claims(), SECRET, algorithm="HS512"), "not valid"),
        (jwt.encode(claims(), RSA_KEY, algorithm="RS256"), "not valid"),
        (
            jwt.encode(claims(), "a-guessed-secret-of-thirty-two-bytes!!", algorithm="HS256"),
            "not valid",
        ),
        (jwt.encode(claims(aud="another-service"), SECRET, algorithm="HS256"), "audience"),
        (
            jwt.encode(
                {k: v for k, v in claims().items() if k != "aud"}, SECRET, algorithm="HS256"
            ),
            "'aud'",
        ),
        (jwt.encode(claims(iss="https://evil.test"), SECRET, algorithm="HS256"), "issuer"),
        (
            jwt.encode(
                {k: v for k, v in claims().items() if k != "iss"}, SECRET, algorithm="HS256"
            ),
            "'iss'",
        ),
        (
            jwt.encode(
                {k: v for k, v in claims().items() if k != "exp"}, SECRET, algorithm="HS256"
            ),
            "'exp'",
        ),
        (jwt.encode(claims(exp=int(time.time()) - 60), SECRET, algorithm="HS256"), "expired"),
        (
            jwt.encode(claims(nbf=int(time.time()) + 600), SECRET, algorithm="HS256"),
            "not valid yet",
        ),
    ],
)
def test_a_token_that_breaks_a_jwt_rule_is_401_saying_which(gateways, token, says):
    answer = refused(stream_url(gateways.hs, "logs:etl:workspace123"), headers=bearer(token))
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert says in answer.json()["message"]


async def test_a_token_expired_within_the_leeway_is_accepted_then_ends_with_auth_expired(
    gateways, unique_id
):
    token = jwt.encode(
        claims(workspaces=[unique_id], exp=int(time.time()) - 1), SECRET, algorithm="HS256"
    )
    async with open_stream(stream_url(gateways.hs, f"logs:etl:{unique_id}"), token=token) as stream:
        await stream.next_of("connected")
        ended = await stream.next_of("auth-expired", timeout=DEADLINE_S)
        assert "expired" in json.loads(ended.data)["reason"]
        with pytest.raises(EOFError):
            await stream.next_of("log", timeout=DEADLINE_S)


async def test_after_auth_expired_a_fresh_token_and_the_cursor_get_exactly_what_was_missed(
    gateways, js_writer, unique_id
):
    channel = f"logs:etl:{unique_id}:resume"
    url = stream_url(gateways.hs, channel)
    async with open_stream(
        url, token=TOKENS.issue(f"resumer-{unique_id}", [unique_id], ttl_s=1)
    ) as stream:
        await stream.next_of("connected")
        seen = await js_writer.put(channel, "before expiry")
        [record] = await stream.logs(1)
        await stream.next_of("auth-expired", timeout=DEADLINE_S)
    meanwhile = [await js_writer.put(channel, f"meanwhile {i}") for i in range(3)]
    fresh = TOKENS.issue(f"resumer-{unique_id}", [unique_id])
    async with open_stream(url, token=fresh, headers={"Last-Event-ID": str(seen)}) as stream:
        assert int((await stream.next_of("connected")).id) == seen
        replayed = await stream.logs(3)
        live = await js_writer.put(channel, "live")
        [after] = await stream.logs(1)
    assert record["seq"] == seen
    assert [r["seq"] for r in replayed] == meanwhile
    assert [r["message"] for r in replayed] == [f"meanwhile {i}" for i in range(3)]
    assert after["seq"] == live


# -- public keys ------------------------------------------------------------------------------


async def test_an_rsa_gateway_streams_for_an_rs256_token_and_opens_stats_for_its_admin(
    gateways, unique_id
):
    token = jwt.encode(
        {"sub": "u", "workspaces": [unique_id], "exp": int(time.time()) + 60, "roles": ["admin"]},
        RSA_KEY,
        algorithm="RS256",
    )
    async with open_stream(
        stream_url(gateways.rsa, f"logs:etl:{unique_id}"), token=token
    ) as stream:
        assert (await stream.next()).event == "connected"
    assert (
        httpx.get(f"{gateways.rsa.url}/admin/logs/stats", headers=bearer(token)).status_code == 200
    )


async def test_an_ec_gateway_streams_for_an_es256_token(gateways, unique_id):
    token = jwt.encode(
        {"sub": "u", "workspaces": [unique_id], "exp": int(time.time()) + 60},
        EC_KEY,
        algorithm="ES256",
    )
    async with open_stream(stream_url(gateways.ec, f"logs:etl:{unique_id}"), token=token) as stream:
        assert (await stream.next()).event == "connected"


def _forgeries(private_key, algorithm: str) -> list[str]:
    payload = {
        "sub": "mallory",
        "workspaces": ["*"],
        "roles": ["admin"],
        "exp": int(time.time()) + 600,
    }
    pem = public_pem(private_key)
    other = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    return [
        forge_hs256(payload, pem),  # algorithm confusion: the public PEM as an HMAC secret
        forge_hs256(payload, pem.strip()),
        jwt.encode(payload, None, algorithm="none"),  # type: ignore[arg-type]  # as above
        jwt.encode(payload, SECRET, algorithm="HS256"),
        jwt.encode(payload, other, algorithm=algorithm),  # the right algorithm, another key
        jwt.encode(
            payload,
            EC_KEY if algorithm == "RS256" else RSA_KEY,
            algorithm="ES256" if algorithm == "RS256" else "RS256",
        ),
    ]


@pytest.mark.parametrize("which", ["rsa", "ec"])
def test_a_public_key_gateway_refuses_every_forgery(gateways, which):
    gateway = gateways.rsa if which == "rsa" else gateways.ec
    key, algorithm = (RSA_KEY, "RS256") if which == "rsa" else (EC_KEY, "ES256")
    for token in _forgeries(key, algorithm):
        assert refused(stream_url(gateway, "logs:etl:*"), headers=bearer(token)).status_code == 401
        assert (
            httpx.get(f"{gateway.url}/admin/logs/stats", headers=bearer(token)).status_code == 401
        )


# -- wildcards ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matching", "other"),
    [
        (
            "logs:etl:{ws}:*",
            ["logs:etl:{ws}:a", "logs:etl:{ws}:b"],
            ["logs:etl:{ws}", "logs:faas:{ws}:a", "logs:etl:{ws}x:a", "logs:etl:x{ws}:a"],
        ),
        (
            "logs:*:{ws}:*",
            ["logs:etl:{ws}:a", "logs:faas:{ws}:b", "logs:platform:{ws}:c"],
            ["logs:etl:{ws}", "logs:analytics:{ws}", "logs:etl:{ws}x:a"],
        ),
        (
            "logs:*:{ws}",
            ["logs:analytics:{ws}", "logs:platform:{ws}"],
            ["logs:etl:{ws}:a", "logs:etl:{ws}x"],
        ),
    ],
)
async def test_a_wildcard_stream_gets_its_matching_channels_and_none_other(
    gateways, js_writer, unique_id, pattern, matching, other
):
    ws = unique_id
    matching = [c.format(ws=ws) for c in matching]
    other = [c.format(ws=ws) for c in other]
    reader = TOKENS.issue(
        f"wild-{unique_id}", [ws, ws + "x", "x" + ws]
    )  # the others are readable too
    async with open_stream(stream_url(gateways.hs, pattern.format(ws=ws)), token=reader) as stream:
        await stream.next_of("connected")
        for channel in other:
            await js_writer.put(channel, "not for this stream")
        for channel in matching:
            await js_writer.put(channel, f"for {channel}")
        await js_writer.put(matching[0], "end")
        received = await collect_until(stream, "end")
    assert [(r["channel"], r["message"]) for r in received] == [
        *((c, f"for {c}") for c in matching),
        (matching[0], "end"),
    ]


async def test_a_reader_of_every_workspace_may_use_a_wildcard_workspace(
    gateways, js_writer, unique_id
):
    reader = TOKENS.issue(f"reader-{unique_id}", ["*"])
    async with open_stream(
        stream_url(gateways.hs, f"logs:etl:*:{unique_id}"), token=reader
    ) as stream:
        await stream.next_of("connected")
        await js_writer.put(f"logs:faas:wsA{unique_id}:{unique_id}", "other service")
        a = await js_writer.put(f"logs:etl:wsA{unique_id}:{unique_id}", "a")
        b = await js_writer.put(f"logs:etl:wsB{unique_id}:{unique_id}", "end")
        received = await collect_until(stream, "end")
    assert [r["seq"] for r in received] == [a, b]
    async with open_stream(
        stream_url(gateways.hs, "logs:etl:*:*", "logs:*:*"), token=reader
    ) as stream:
        assert (await stream.next()).event == "connected"


def test_a_wildcard_reaching_outside_the_users_workspaces_is_403_listing_each(gateways, unique_id):
    ws = unique_id
    asked = [
        f"logs:etl:{ws}:*",
        "logs:etl:*:*",
        f"logs:*:other{ws}:*",
        "logs:*:*",
        f"logs:etl:{ws}",
        "logs:etl:*:wf1",
        "logs:*:*:*",
    ]
    answer = refused(stream_url(gateways.hs, *asked), headers=bearer(TOKENS.issue(f"u-{ws}", [ws])))
    assert answer.status_code == 403
    denied = ["logs:etl:*:*", f"logs:*:other{ws}:*", "logs:*:*", "logs:etl:*:wf1", "logs:*:*:*"]
    assert answer.json()["details"] == [{"channel": channel} for channel in denied]
    assert all(channel in answer.json()["message"] for channel in denied)


# -- limits ---------------------------------------------------------------------------------


async def open_once_allowed(url: str, token: str) -> None:
    """Open and close a stream, retrying while the gateway still answers 429 (polling: the
    gateway releases a slot when it sees the close, which nothing outside it can await)."""

    async def opened() -> bool:
        try:
            async with open_stream(url, token=token) as stream:
                await stream.next_of("connected")
                return True
        except StreamRefused as refusal:
            if refusal.status != 429:
                raise
            return False

    await wait_until(
        opened,
        "a stream to open once a closed one freed its slot (no 429)",
        timeout=DEADLINE_S,
        interval=0.1,
    )


async def test_past_the_connection_cap_a_user_gets_429_and_a_closed_stream_frees_its_slot(
    gateways, unique_id
):
    token = TOKENS.issue(f"capped-{unique_id}", [unique_id])
    url = stream_url(gateways.hs, f"logs:etl:{unique_id}")
    async with open_stream(url, token=token) as first:
        await first.next_of("connected")
        async with open_stream(url, token=token) as second:
            await second.next_of("connected")
            with pytest.raises(StreamRefused) as over:
                async with open_stream(url, token=token):
                    pass
            # Another user is not held back by this one's cap.
            async with open_stream(
                url, token=TOKENS.issue(f"other-{unique_id}", [unique_id])
            ) as stream:
                assert (await stream.next()).event == "connected"
        await open_once_allowed(url, token)
    assert over.value.status == 429
    assert over.value.response.headers["retry-after"].isdigit()
    assert over.value.body["error"] == "rate_limited"
    assert f"{CAP} open streams" in over.value.body["message"]


async def test_clients_that_vanish_at_once_do_not_keep_their_slots(gateways, unique_id):
    token = TOKENS.issue(f"vanishing-{unique_id}", [unique_id])
    url = stream_url(gateways.hs, f"logs:etl:{unique_id}")
    request = (
        f"GET /api/logs/stream?channels=logs:etl:{unique_id} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    for _ in range(4 * CAP):
        with socket.create_connection(("127.0.0.1", gateways.hs.port), timeout=5) as raw:
            raw.sendall(request)
    for _ in range(CAP):
        await open_once_allowed(url, token)
    async with open_stream(url, token=token) as a, open_stream(url, token=token) as b:
        assert (await a.next()).event == (await b.next()).event == "connected"


def test_twenty_channels_are_allowed_and_twenty_one_are_400(gateways, unique_id):
    token = TOKENS.issue(f"many-{unique_id}", [unique_id])
    names = [f"logs:etl:{unique_id}:w{i}" for i in range(21)]
    with httpx.stream(
        "GET", stream_url(gateways.hs, *names[:20]), headers=bearer(token), timeout=DEADLINE_S
    ) as ok:
        assert ok.status_code == 200
    for url in (
        stream_url(gateways.hs, *names),
        f"{gateways.hs.url}/api/logs/stream?" + "&".join(f"channels={n}" for n in names),
        stream_url(gateways.hs, *[names[0]] * 21),
    ):
        answer = refused(url, headers=bearer(token))
        assert answer.status_code == 400
        assert "at most 20" in answer.json()["message"]


@pytest.mark.parametrize(
    ("channel", "says"),
    [
        ("logs:etl:{ws}:" + "r" * 65, "resource segment"),
        ("logs:etl:" + "w" * 65, "workspace segment"),
        ("logs:etl:{ws}:" + "r" * 5000, "at most 20 channels of at most"),
        ("logs:etl:{ws}:a\rb", "resource segment"),
        ("logs:etl:{ws}:a\n\ndata", "resource segment"),
        ("logs:etl:{ws}\x00", "workspace segment"),
        ("logs:etl:{ws}:a b", "resource segment"),
        ("logs:etl:{ws}:a.b", "resource segment"),
        ("logs:etl:{ws}:>", "resource segment"),
        ("logs:etl:{ws}:**", "resource segment"),
        ("logs:etl:{ws}:x:y", "logs:<service>:<workspace>"),
    ],
)
def test_a_malformed_channel_is_400_and_echoes_no_control_character(
    gateways, unique_id, channel, says
):
    answer = refused(
        f"{gateways.hs.url}/api/logs/stream",
        params={"channels": channel.format(ws=unique_id)},
        headers=bearer(TOKENS.issue(f"u-{unique_id}", [unique_id])),
    )
    assert answer.status_code == 400
    message = answer.json()["message"]
    assert says in message
    assert not {"\r", "\n", "\x00"} & set(message)


def test_a_64_character_segment_is_allowed(gateways, unique_id):
    url = stream_url(gateways.hs, f"logs:etl:{unique_id}:" + "r" * 64)
    with httpx.stream(
        "GET", url, headers=bearer(TOKENS.issue(f"u-{unique_id}", [unique_id])), timeout=DEADLINE_S
    ) as answer:
        assert answer.status_code == 200


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("header", "abc"),
        ("header", "-1"),
        ("header", "1.5"),
        ("header", "1e3"),
        ("header", "0x10"),
        ("header", "9" * 21),
        ("header", str(2**64)),
        ("query", "²"),
        ("query", "١٢"),
        ("query", "12\r\n"),
        ("query", "9" * 5000),
    ],
)
def test_a_garbage_cursor_is_400_naming_last_event_id(gateways, where, value):
    token = TOKENS.issue("u", ["workspace123"])
    url, channels = f"{gateways.hs.url}/api/logs/stream", {"channels": "logs:etl:workspace123"}
    if where == "header":
        answer = refused(url, params=channels, headers={**bearer(token), "Last-Event-ID": value})
    else:
        answer = refused(url, params={**channels, "last_event_id": value}, headers=bearer(token))
    assert answer.status_code == 400
    assert "last_event_id" in answer.json()["message"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("tail", "²"), ("tail", "9" * 5000), ("tail", "10001"), ("since", "9" * 5000 + "s")],
)
def test_a_garbage_tail_or_since_is_400_not_a_crash(gateways, name, value):
    answer = refused(
        f"{gateways.hs.url}/api/logs/stream",
        params={"channels": "logs:etl:workspace123", name: value},
        headers=bearer(TOKENS.issue("u", ["workspace123"])),
    )
    assert answer.status_code == 400
    assert name in answer.json()["message"]


# -- startup --------------------------------------------------------------------------------
# The other refusals (short secret, short admin token, leeway) go through the same
# load_settings path and are unit-tested in tests/unit/test_gateway_auth.py.

STARTUP_REFUSALS = {
    "no key": ([], ["LOGSTREAM_JWT_SECRET", "LOGSTREAM_JWT_PUBLIC_KEY_FILE"]),
    "both keys": (
        ["--jwt-secret", SECRET, "--jwt-public-key-file", "{keys}/rsa.pem"],
        ["not both"],
    ),
    "missing key file": (
        ["--jwt-public-key-file", "{keys}/absent.pem"],
        ["LOGSTREAM_JWT_PUBLIC_KEY_FILE", "absent.pem"],
    ),
    "garbage key file": (
        ["--jwt-public-key-file", "{keys}/garbage.pem"],
        ["LOGSTREAM_JWT_PUBLIC_KEY_FILE", "garbage.pem"],
    ),
    "private key file": (
        ["--jwt-public-key-file", "{keys}/private.pem"],
        ["LOGSTREAM_JWT_PUBLIC_KEY_FILE"],
    ),
    "query token on": (["--jwt-secret", SECRET, "--query-token", "on"], ["LOGSTREAM_QUERY_TOKEN"]),
}


@pytest.fixture(scope="module")
def startup_refusals(tmp_path_factory, log_dir):
    """Start every refusing gateway at once (each exits at start), then collect the outcomes."""
    keys = tmp_path_factory.mktemp("bad-keys")
    (keys / "rsa.pem").write_bytes(public_pem(RSA_KEY))
    (keys / "garbage.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")
    (keys / "private.pem").write_bytes(
        RSA_KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    running = {}
    for case, (args, _) in STARTUP_REFUSALS.items():
        running[case] = ServiceProcess(
            "gateway",
            nats_url="nats://127.0.0.1:1",
            log_dir=log_dir,
            dev=False,
            args=[arg.replace("{keys}", str(keys)) for arg in args],
        ).start(wait=False)
    outcomes = {}
    for case, service in running.items():
        try:
            code = service.process.wait(timeout=60)
        except Exception:
            service.kill()
            code = None
        outcomes[case] = (code, Path(service.log_path).read_text(errors="replace"))
    return outcomes


@pytest.mark.parametrize("case", list(STARTUP_REFUSALS))
def test_a_production_gateway_without_a_usable_key_exits_naming_the_setting(startup_refusals, case):
    code, log = startup_refusals[case]
    assert code == 2, log
    assert "logstream gateway:" in log
    for text in STARTUP_REFUSALS[case][1]:
        assert text in log
    assert SECRET not in log


@pytest.mark.parametrize("service", ["gateway", "proxy"])
def test_headers_past_32k_are_a_431_on_the_gateway_and_the_proxy_too(stack, service):
    url = getattr(stack, service).url + "/health"
    response = httpx.get(url, headers={"Authorization": "Bearer " + "a" * 40_000})
    assert response.status_code == 431
    assert response.json()["error"] == "request_headers_too_large"
    assert httpx.get(url).status_code == 200  # a normal request right after is served
