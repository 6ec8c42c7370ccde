"""A JSON endpoint for tests: a real HTTP server on a thread of the test, answering ``GET`` on
one path with what a subclass's ``_answer`` says, stopped and started again on the same port.

The test servers that stand in for other parties (an identity provider's JWKS endpoint, a
product's auth backend) are these; ``delay_s`` holds every answer back (a slow party).
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["JsonServer", "free_port"]


def free_port() -> int:
    # Not tests.support.nats_source's: the unit tests use these servers too, without nats-py.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JsonServer:
    """Serves ``path`` on ``port``; subclasses give ``_answer(headers) -> (status, body)``."""

    path = "/"

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.delay_s = 0.0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def _answer(self, headers: dict[str, str]) -> tuple[int, bytes]:
        raise NotImplementedError

    def start(self) -> Self:
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != served.path:
                    self.send_error(404)
                    return
                headers = {name.lower(): value for name, value in self.headers.items()}
                status, body = served._answer(headers)
                time.sleep(served.delay_s)  # a slow party (this is its thread)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up waiting

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
