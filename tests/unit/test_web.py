"""logstream.shared.web's ASGI wrapper: the connection it lends a request does not outlive it."""

from __future__ import annotations

from logstream.shared.uvicorn_adapter import CONNECTION_KEY
from logstream.shared.web import limit_request_headers


async def test_the_connection_is_in_the_scope_during_the_request_and_gone_after_it():
    seen = []
    connection = object()  # stands in for the HttpConnection uvicorn's protocol leaves there

    async def app(scope, receive, send):
        seen.append(scope.get(CONNECTION_KEY))

    async def send(message): ...

    scope = {"type": "http", "headers": [], CONNECTION_KEY: connection}
    await limit_request_headers(app)(scope, None, send)
    assert seen == [connection]
    # else connection -> cycle -> scope -> connection: a reference cycle per request
    assert CONNECTION_KEY not in scope
