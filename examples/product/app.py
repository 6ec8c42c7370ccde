"""Datashop: a tiny example product with its own login, whose users read their logs on
Logstream's Logs page without ever seeing a Logstream token.

How the two meet (examples/product/README.md has the whole story):

1. A user signs in here. Datashop keeps the session on its side and gives the browser a
   ``datashop_session`` cookie (HttpOnly, SameSite=Lax, Path=/).
2. The user follows the "Logs" link to the Logs page (the proxy, on another port of the same
   host). Cookies belong to a host, not to a port, so the browser sends ``datashop_session``
   there too; the proxy passes it on to the gateway (``LOGSTREAM_FORWARD_COOKIES``).
3. The gateway has no Logstream token for the request, so it asks Datashop who this is:
   ``GET /auth/logstream`` with the request's ``Cookie`` header (the auth callout,
   ``LOGSTREAM_AUTH_CALLOUT_URL``). Datashop answers with the user and their workspaces, or 401.
4. While the stream is open the gateway asks again every ``LOGSTREAM_AUTH_CALLOUT_TTL``
   seconds. Once the user signs out here, the answer is 401 and the stream ends: the Logs page
   then shows a "Sign in" link back to ``/login`` here, with ``next`` set to the Logs page.

Run it alone with ``python examples/product/app.py``, or everything at once (Datashop and
``logstream up`` wired together) with ``python examples/product/run.py``.

The demo users live in ``USERS`` below; the passwords are in plain text because this is a
demo. A real product checks hashed passwords and keeps sessions in a shared store.
"""

from __future__ import annotations

import argparse
import html
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlencode, urlsplit

import uvicorn
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

SESSION_COOKIE = "datashop_session"
DEFAULT_PORT = 9000
DEFAULT_LOGS_URL = "http://127.0.0.1:3000"
DEFAULT_SESSION_HOURS = 8.0


@dataclass(frozen=True)
class DemoUser:
    password: str
    workspaces: tuple[str, ...]
    # The pipeline the home page links to on the Logs page: an ETL workflow of the user's
    # first workspace (the simulator of `logstream up` writes logs to both of these).
    workflow: str


USERS = {
    "alice": DemoUser("alice-password", ("workspace123",), workflow="workflow456"),
    "bob": DemoUser("bob-password", ("workspace456",), workflow="inventory-snapshot"),
}


@dataclass
class Session:
    user: str
    expires_at: float  # time.time()

    def seconds_left(self) -> float:
        return self.expires_at - time.time()


@dataclass
class Sessions:
    """Server-side sessions: the cookie holds only a random id. Signing out deletes the
    session here, so a copy of the cookie is worth nothing afterwards."""

    lifetime_s: float
    by_id: dict[str, Session] = field(default_factory=dict)

    def create(self, user: str) -> str:
        session_id = secrets.token_urlsafe(32)
        self.by_id[session_id] = Session(user, time.time() + self.lifetime_s)
        return session_id

    def find(self, session_id: str | None) -> Session | None:
        session = self.by_id.get(session_id) if session_id else None
        if session_id and session is not None and session.seconds_left() <= 0:
            del self.by_id[session_id]  # expired: as good as signed out
            return None
        return session

    def delete(self, session_id: str | None) -> None:
        if session_id:
            self.by_id.pop(session_id, None)


@dataclass
class LoginForm:
    username: str = ""
    password: str = ""
    next: str = ""


def create_app(
    *, logs_url: str = DEFAULT_LOGS_URL, session_hours: float = DEFAULT_SESSION_HOURS
) -> Litestar:
    sessions = Sessions(lifetime_s=session_hours * 3600)
    logs_url = logs_url.rstrip("/")

    def current(request: Request) -> Session | None:
        return sessions.find(request.cookies.get(SESSION_COOKIE))

    @get("/", sync_to_thread=False)
    def home(request: Request) -> Response:
        session = current(request)
        if session is None:
            return Redirect("/login", status_code=303)
        user = USERS[session.user]
        return _page(
            "Datashop",
            f"""<p data-testid="whoami">Signed in as <strong>{_h(session.user)}</strong>
            (workspaces: {_h(", ".join(user.workspaces))})</p>
            <p><a data-testid="logs-link" href="{_h(logs_link(logs_url, user))}">Logs</a>
            of the pipeline <code>{_h(user.workflow)}</code></p>
            <form method="post" action="/logout">
              <button type="submit" data-testid="sign-out">Sign out</button>
            </form>""",
        )

    @get("/login", sync_to_thread=False)
    def login_form(request: Request) -> Response:
        return _login_page(request.query_params.get("next", ""))

    @post("/login", sync_to_thread=False)
    def login(
        request: Request,
        data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Response:
        user = USERS.get(data.username)
        # compare_digest: how much of a guess was right does not show in the time taken.
        if user is None or not secrets.compare_digest(
            data.password.encode(), user.password.encode()
        ):
            return _login_page(data.next, error="Wrong username or password.", status=401)
        sessions.delete(request.cookies.get(SESSION_COOKIE))  # a sign-in replaces any other
        session_id = sessions.create(data.username)
        answer = Redirect(_safe_next(data.next, request), status_code=303)
        answer.set_cookie(
            SESSION_COOKIE,
            session_id,
            path="/",
            httponly=True,
            samesite="lax",
            # A real product behind HTTPS adds secure=True.
        )
        return answer

    @post("/logout", sync_to_thread=False)
    def logout(request: Request) -> Response:
        sessions.delete(request.cookies.get(SESSION_COOKIE))
        answer = Redirect("/login", status_code=303)
        answer.delete_cookie(SESSION_COOKIE, path="/")
        return answer

    @get("/auth/logstream", sync_to_thread=False)
    def auth_callout(request: Request) -> Response:
        """The auth callout: Logstream's gateway asks who the caller is, passing on the
        caller's Cookie header. 200 with the user's identity, or 401 with a message (the
        gateway shows it to the caller)."""
        headers = {"Cache-Control": "no-store"}
        session = current(request)
        if session is None:
            return Response(
                {"message": "not signed in to Datashop"}, status_code=401, headers=headers
            )
        return Response(
            {
                "user": session.user,
                "workspaces": list(USERS[session.user].workspaces),
                "roles": [],
                # The gateway asks again no later than this: a stream never outlives the
                # session it was opened on.
                "expires_in": math.ceil(session.seconds_left()),
            },
            headers=headers,
        )

    return Litestar([home, login_form, login, logout, auth_callout])


def logs_link(logs_url: str, user: DemoUser) -> str:
    """The Logs page showing the user's pipeline (services/proxy/static/page-url.js has the
    address format): the form filled in, and ``channels=`` to watch it at once."""
    workspace = user.workspaces[0]
    query = urlencode(
        {
            "service": "etl",
            "workspace_id": workspace,
            "workflow_id": user.workflow,
            "channels": f"logs:etl:{workspace}:{user.workflow}",
        },
        safe=":",
    )
    return f"{logs_url}/?{query}"


def _safe_next(target: str, request: Request) -> str:
    """Where to go after signing in: ``next`` if it stays on this host (a path here, or an
    http(s) URL on the same host name, such as the Logs page on another port), else ``/``.
    Anything else would make the login form an open redirect."""
    if not target or "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    url = urlsplit(target)
    if not url.scheme and not url.netloc and target.startswith("/") and not target.startswith("//"):
        return target
    if url.scheme in ("http", "https") and url.hostname and url.hostname == request.url.hostname:
        return target
    return "/"


def _login_page(next_url: str, *, error: str = "", status: int = 200) -> Response:
    message = f'<p class="error" data-testid="login-error">{_h(error)}</p>' if error else ""
    return _page(
        "Sign in to Datashop",
        f"""{message}
        <form method="post" action="/login">
          <input type="hidden" name="next" value="{_h(next_url)}">
          <label>Username <input name="username" autocomplete="username" required></label>
          <label>Password <input name="password" type="password"
                 autocomplete="current-password" required></label>
          <button type="submit">Sign in</button>
        </form>
        <p class="hint">Demo users: alice / alice-password, bob / bob-password.</p>""",
        status=status,
    )


def _page(title: str, body: str, *, status: int = 200) -> Response:
    document = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{_h(title)}</title>
  <style>
    body {{ font: 16px system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; }}
    label {{ display: block; margin: 0.5rem 0; }}
    .error {{ color: #b42318; }}
    .hint {{ color: #667085; font-size: 0.9rem; }}
  </style>
</head>
<body>
  <h1>{_h(title)}</h1>
  {body}
</body>
</html>
"""
    return Response(
        document,
        status_code=status,
        media_type=MediaType.HTML,
        headers={"Cache-Control": "no-store"},
    )


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Datashop, an example product with a login.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to bind")
    parser.add_argument(
        "--logs-url",
        default=DEFAULT_LOGS_URL,
        help="the Logs page (Logstream's proxy); on the same host name as Datashop, so that "
        "the browser sends it the datashop_session cookie",
    )
    parser.add_argument(
        "--session-hours",
        type=float,
        default=DEFAULT_SESSION_HOURS,
        help="how long a sign-in lasts",
    )
    args = parser.parse_args()
    if args.session_hours <= 0:
        parser.error("--session-hours must be positive")
    app = create_app(logs_url=args.logs_url, session_hours=args.session_hours)
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
