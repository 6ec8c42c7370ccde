"""logstream.shared.web's ASGI wrapper: the raw send it lends a request does not outlive the request."""

from __future__ import annotations

from logstream.shared.web import RAW_SEND_KEY, limit_request_headers


class Cycle:
    """Like uvicorn's request cycle: it holds the scope, and its ``send`` is a bound method."""

    def __init__(self, scope: dict) -> None:
        self.scope = scope

    async def send(self, message: dict) -> None: ...


async def test_the_raw_send_is_in_the_scope_during_the_request_and_gone_after_it():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope.get(RAW_SEND_KEY))

    scope = {"type": "http", "headers": []}
    cycle = Cycle(scope)
    await limit_request_headers(app)(scope, None, cycle.send)
    assert seen == [cycle.send]
    assert RAW_SEND_KEY not in scope  # else cycle -> scope -> send -> cycle: a reference cycle
