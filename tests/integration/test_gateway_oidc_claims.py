"""An identity provider's own tokens, claims as it emits them (docs/reference/identities.md#claims):
a gateway configured for Keycloak reads the user from ``preferred_username``, the workspaces
from the ``groups`` paths under ``/workspaces/``, and the roles from ``realm_access.roles``.

The identity provider is ``JwksServer`` (a real HTTP server of the test) publishing the key the
tokens are signed with; the gateway is a real process on the suite's NATS.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from tests.support.jwks_server import JwksServer, SigningKey
from tests.support.processes import ServiceProcess
from tests.support.sse_client import StreamRefused, open_stream

DEADLINE_S = 20.0
REALM = "http://keycloak.test/realms/datashop"
KEY = SigningKey("kc-rsa-2026", "rsa")


def keycloak_access_token(
    username: str, groups: list[str], roles: tuple[str, ...] = (), ttl_s: int = 300
) -> dict:
    """The claims of a Keycloak 26 access token with a "Group Membership" mapper (full path)."""
    now = int(time.time())
    return {
        "exp": now + ttl_s,
        "iat": now,
        "auth_time": now,
        "jti": f"onrtac:{uuid.uuid4()}",
        "iss": REALM,
        "aud": ["logstream", "account"],
        "sub": str(uuid.uuid4()),
        "typ": "Bearer",
        "azp": "datashop-web",
        "sid": str(uuid.uuid4()),
        "acr": "1",
        "allowed-origins": ["https://datashop.test"],
        "realm_access": {
            "roles": ["default-roles-datashop", "offline_access", "uma_authorization", *roles]
        },
        "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
        "scope": "openid email profile",
        "email_verified": True,
        "name": f"{username.title()} Example",
        "groups": groups,
        "preferred_username": username,
        "email": f"{username}@datashop.test",
    }


@pytest.fixture(scope="module")
def keycloak_gateway(nats_server, log_dir, js_writer):
    server = JwksServer(KEY.jwk()).start()
    gateway = ServiceProcess(
        "gateway",
        nats_url=nats_server.url_as("gateway"),
        log_dir=log_dir,
        dev=False,
        args=[
            "--jwt-jwks-url",
            server.url,
            "--jwt-issuer",
            REALM,
            "--jwt-audience",
            "logstream",
            "--jwt-user-claim",
            "preferred_username",
            "--jwt-workspaces-claim",
            "groups",
            "--jwt-workspace-prefix",
            "/workspaces/",
            "--jwt-roles-claim",
            "realm_access.roles",
        ],
    ).start()
    yield gateway
    gateway.stop()
    server.stop()


async def test_a_keycloak_token_is_mapped_and_refused_outside_its_groups(
    keycloak_gateway, js_writer, unique_id
):
    token = KEY.token(
        keycloak_access_token("alice", [f"/workspaces/{unique_id}", "/staff", "/workspaces"])
    )
    channel = f"logs:etl:{unique_id}:wf1"
    url = f"{keycloak_gateway.url}/api/logs/stream?channels={channel}"
    async with open_stream(url, token=token) as stream:
        connected = json.loads((await stream.next_of("connected")).data)
        assert connected["user_id"] == "alice"
        seq = await js_writer.put(channel, "through a Keycloak token")
        [record] = await stream.logs(1)
    assert record["seq"] == seq
    # "/staff" is not a workspace, nor "/workspaces" itself: nothing else is readable.
    for outside in ("logs:etl:staff", "logs:etl:workspaces", "logs:etl:other:wf1"):
        with pytest.raises(StreamRefused) as refused:
            async with open_stream(
                f"{keycloak_gateway.url}/api/logs/stream?channels={outside}", token=token
            ):
                pass
        assert refused.value.status == 403, outside


def test_a_realm_role_maps_to_admin_and_a_user_in_no_group_reads_nothing(keycloak_gateway):
    stats = f"{keycloak_gateway.url}/admin/logs/stats"
    admin = KEY.token(keycloak_access_token("ops", ["/staff"], roles=["admin"]))
    assert httpx.get(stats, headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    plain = KEY.token(keycloak_access_token("bob", ["/staff"]))
    assert httpx.get(stats, headers={"Authorization": f"Bearer {plain}"}).status_code == 403
    claims = keycloak_access_token("nobody", [])
    del claims["groups"]  # Keycloak leaves the claim out for a user in no group
    answer = httpx.get(
        f"{keycloak_gateway.url}/api/logs/history",
        params={"channels": "logs:etl:x"},
        headers={"Authorization": f"Bearer {KEY.token(claims)}"},
    )
    assert answer.status_code == 403  # signed in, but in no workspace
    claims["groups"] = "/workspaces/x"  # not a list: a token this gateway cannot read
    answer = httpx.get(
        f"{keycloak_gateway.url}/api/logs/history",
        params={"channels": "logs:etl:x"},
        headers={"Authorization": f"Bearer {KEY.token(claims)}"},
    )
    assert answer.status_code == 401
    assert "'groups'" in answer.json()["message"]
