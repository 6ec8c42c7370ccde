"""Paced admission (logstream.services.gateway.admission): a herd of stream requests is let in
a few at a time, each place given back once its response starts; other paths never wait."""

from __future__ import annotations

import asyncio

from logstream.services.gateway.admission import paced


class App:
    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.go = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        if scope["path"] != "/health":
            await self.go.wait()
        self.inside -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})


def http(path: str) -> dict:
    return {"type": "http", "path": path}


async def nothing() -> dict:
    return {"type": "http.disconnect"}


async def test_at_most_the_limit_open_at_once_and_the_rest_follow():
    app = App()
    gate = paced(app, 2)
    sent: list[str] = []

    def sender(name: str):
        async def send(message):
            if message["type"] == "http.response.start":
                sent.append(name)

        return send

    requests = [
        asyncio.create_task(gate(http("/api/logs/stream"), nothing, sender(f"s{i}")))
        for i in range(6)
    ]
    health = asyncio.create_task(gate(http("/health"), nothing, sender("health")))
    async with asyncio.timeout(5):
        await health  # never waits behind the streams
        while app.inside < 2:
            await asyncio.sleep(0)
    assert sent == ["health"] and app.inside == 2
    app.go.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*requests)
    assert app.most == 2 + 1  # (the health check was inside with two streams)
    assert sorted(sent[1:]) == [f"s{i}" for i in range(6)]


async def test_a_request_that_fails_before_answering_gives_its_place_back():
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    gate = paced(broken, 1)
    for _ in range(3):  # with the place lost, the second would wait for ever
        try:
            async with asyncio.timeout(5):
                await gate(http("/api/logs/history"), nothing, None)
        except RuntimeError:
            pass
