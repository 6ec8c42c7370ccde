"""A product's backend for the gateway's auth callout, in tests: a real HTTP server on a thread.

It knows sessions by their cookie (``session=<id>``): ``sign_in`` creates one (a user, their
workspaces, and optionally how long it lasts), ``sign_out`` ends it. ``GET /auth`` answers as
docs/reference/identities.md says a backend does: 200 with the identity and ``expires_in``, or
401 with a message. ``delay_s`` holds answers back, ``status``/``body`` override them, and
``calls`` counts the requests per session id (what the gateway's cache saves).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from tests.support.json_server import JsonServer

AUTH_PATH = "/auth"
COOKIE = "session"
NOT_SIGNED_IN = "not signed in to the product: sign in at /login"


@dataclass
class Session:
    user: str
    workspaces: list[str]
    ends_at: float | None  # time.time(); None: until signed out
    expires_in: float | None = None  # said in every answer instead of the time left


class AuthBackend(JsonServer):
    path = AUTH_PATH

    def __init__(self, *, port: int | None = None) -> None:
        super().__init__(port=port)
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._calls: Counter[str] = Counter()
        self.status: int | None = None
        self.body: bytes | None = None
        self.headers_seen: list[dict[str, str]] = []

    def sign_in(
        self,
        session_id: str,
        user: str,
        workspaces: list[str],
        *,
        lasts_s: float | None = None,
        expires_in: float | None = None,
    ) -> dict[str, str]:
        """A session (``lasts_s``: it ends by itself then; ``expires_in``: what every answer
        says, as a backend vouching for a while at a time); returns the browser's cookie."""
        with self._lock:
            ends_at = None if lasts_s is None else time.time() + lasts_s
            self._sessions[session_id] = Session(user, workspaces, ends_at, expires_in)
        return {COOKIE: session_id}

    def sign_out(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def calls(self, session_id: str | None = None) -> int:
        with self._lock:
            return self._calls[session_id or ""] if session_id else sum(self._calls.values())

    def _answer(self, headers: dict[str, str]) -> tuple[int, bytes]:
        cookie = SimpleCookie()
        cookie.load(headers.get("cookie", ""))
        session_id = cookie[COOKIE].value if COOKIE in cookie else ""
        with self._lock:
            self._calls[session_id] += 1
            self.headers_seen.append(headers)
            if self.status is not None or self.body is not None:
                return self.status or 200, self.body if self.body is not None else b"{}"
            session = self._sessions.get(session_id)
            if session is not None and session.ends_at is not None:
                if session.ends_at <= time.time():
                    del self._sessions[session_id]
                    session = None
        if session is None:
            return 401, json.dumps({"message": NOT_SIGNED_IN}).encode()
        answer: dict[str, Any] = {
            "user": session.user,
            "workspaces": session.workspaces,
            "roles": [],
        }
        if session.expires_in is not None:
            answer["expires_in"] = session.expires_in
        elif session.ends_at is not None:
            answer["expires_in"] = max(session.ends_at - time.time(), 0.001)
        return 200, json.dumps(answer).encode()
