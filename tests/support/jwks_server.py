"""An identity provider's JWKS endpoint for tests: a real HTTP server on a thread, serving a
document the test changes (publish a key, withdraw one), stopped and started on the same port.

Also builds the keys and the tokens signed with them, as an identity provider would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

JWKS_PATH = "/realms/test/protocol/openid-connect/certs"


def free_port() -> int:
    # Not tests.support.nats_source's: the unit tests use this server too, without nats-py.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


class JwksServer:
    """Serves ``{"keys": [...]}`` at ``url``; ``publish`` replaces the keys, ``status`` and
    ``body`` override the answer, ``delay_s`` holds it back, ``fetches`` counts the requests."""

    def __init__(self, *keys: dict[str, Any], port: int | None = None) -> None:
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._keys = list(keys)
        self.status = 200
        self.body: bytes | None = None
        self.delay_s = 0.0
        self._fetches = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{JWKS_PATH}"

    @property
    def fetches(self) -> int:
        with self._lock:
            return self._fetches

    def publish(self, *keys: dict[str, Any]) -> None:
        with self._lock:
            self._keys = list(keys)

    def _answer(self) -> tuple[int, bytes]:
        with self._lock:
            self._fetches += 1
            body = self.body if self.body is not None else json.dumps({"keys": self._keys})
            return self.status, body if isinstance(body, bytes) else body.encode()

    def start(self) -> JwksServer:
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                status, body = served._answer()
                time.sleep(served.delay_s)  # a slow identity provider (this is its thread)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # keep the test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: the port refuses connections until ``start`` again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
