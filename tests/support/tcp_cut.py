"""A TCP forwarder a test can cut: a process's broker link dropped without touching the broker.

The process under test connects to ``url`` (this forwarder on a loopback port), which passes
bytes both ways to the real server; ``cut()`` closes every connection it carries, as a network
blip would, and keeps listening, so the client's reconnect goes through again.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

from tests.support.nats_source import free_port


class CuttableLink:
    def __init__(self, target_url: str) -> None:
        target = urlparse(target_url)
        self._target = (target.hostname, target.port)
        self.port = free_port()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0  # accepted so far: a reconnect shows up here

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def __aenter__(self) -> CuttableLink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None  # __aenter__ started it
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        """Drop every connection now (both sides see a reset or EOF)."""
        for writer in list(self._writers):
            transport = writer.transport
            if transport is not None:
                transport.abort()
        self._writers.clear()
