"""An identity provider's JWKS endpoint for tests: a real HTTP server on a thread, serving a
document the test changes (publish a key, withdraw one), stopped and started on the same port.

Also builds the keys and the tokens signed with them, as an identity provider would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.support.json_server import JsonServer, free_port

__all__ = ["JWKS_PATH", "JwksServer", "SigningKey", "claims", "forge_hs256", "free_port"]

JWKS_PATH = "/realms/test/protocol/openid-connect/certs"


class SigningKey:
    """A private key of the test identity provider, its kid and algorithm."""

    def __init__(self, kid: str, kind: str = "rsa") -> None:
        self.kid = kid
        self.private: Any
        self._to_jwk: Callable[..., Any]
        if kind == "rsa":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.algorithm, self._to_jwk = "RS256", RSAAlgorithm.to_jwk
        elif kind == "ec":
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.algorithm, self._to_jwk = "ES256", ECAlgorithm.to_jwk
        elif kind == "ed25519":
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.algorithm, self._to_jwk = "EdDSA", OKPAlgorithm.to_jwk
        else:
            raise ValueError(kind)

    def jwk(self, *, alg: bool = True, **extra: Any) -> dict[str, Any]:
        """The public JWK, as an identity provider publishes it (``use: sig``, its ``kid``)."""
        found: dict[str, Any] = self._to_jwk(self.private.public_key(), as_dict=True)
        found.update({"kid": self.kid, "use": "sig"})
        if alg:
            found["alg"] = self.algorithm
        found.update(extra)
        return {k: v for k, v in found.items() if v is not None}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, claims: dict[str, Any], *, kid: str | bool | None = True) -> str:
        """A token signed with this key; ``kid`` True names this key, a string names another,
        None leaves the header out."""
        headers = {} if kid is None else {"kid": self.kid if kid is True else kid}
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers=headers)


def forge_hs256(payload: dict[str, Any], secret: bytes, kid: str | None = None) -> str:
    """An HS256 token whose HMAC key is ``secret``: what an attacker builds from a public key
    (its PEM, its JWK) to try algorithm confusion; ``kid`` names a published key."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = part(json.dumps(header).encode()) + "." + part(json.dumps(payload).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + part(signature)


def claims(user: str = "user123", workspaces: list[str] | None = None, ttl_s: int = 600) -> dict:
    return {
        "sub": user,
        "workspaces": workspaces if workspaces is not None else ["workspace123"],
        "exp": int(time.time()) + ttl_s,
    }


class JwksServer(JsonServer):
    """Serves ``{"keys": [...]}`` at ``url``; ``publish`` replaces the keys, ``status`` and
    ``body`` override the answer, ``delay_s`` holds it back, ``fetches`` counts the requests."""

    path = JWKS_PATH

    def __init__(self, *keys: dict[str, Any], port: int | None = None) -> None:
        super().__init__(port=port)
        self._lock = threading.Lock()
        self._keys = list(keys)
        self.status = 200
        self.body: bytes | None = None
        self._fetches = 0

    @property
    def fetches(self) -> int:
        with self._lock:
            return self._fetches

    def publish(self, *keys: dict[str, Any]) -> None:
        with self._lock:
            self._keys = list(keys)

    def _answer(self, headers: dict[str, str]) -> tuple[int, bytes]:
        with self._lock:
            self._fetches += 1
            body = self.body if self.body is not None else json.dumps({"keys": self._keys})
            return self.status, body if isinstance(body, bytes) else body.encode()
