"""nginx + Nchan, the reference system: its own config under a temp dir, loopback only.

Debian packages ``nginx`` and ``libnginx-mod-nchan``. The bench never installs them unasked:
``find_nginx_nchan`` says what is missing and the apt command; ``--install-nchan`` (as root)
runs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from bench.machine import children_of
from bench.publishers import NchanPublisher

__all__ = ["APT_COMMAND", "Nchan", "NchanSystem", "find_nginx_nchan", "install_nginx_nchan"]

APT_COMMAND = ["apt-get", "install", "-y", "nginx", "libnginx-mod-nchan"]
_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules")
_MODULE = "ngx_nchan_module.so"
# nginx starts in milliseconds; a loaded machine may take a second or two.
START_TIMEOUT_S = 15.0

_CONFIG = """\
load_module {module};
{user}
worker_processes {workers};
worker_rlimit_nofile 65536;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 30000;
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    keepalive_requests 10000000;
    nchan_shared_memory_size 256M;
    server {{
        # reuseport: with two workers the kernel spreads connections over both.
        listen 127.0.0.1:{port} reuseport backlog=8192;
        location = /pub {{
            nchan_publisher;
            nchan_channel_id $arg_id;
            nchan_message_buffer_length 1000;
            nchan_message_timeout 5m;
        }}
        location = /sub {{
            nchan_subscriber eventsource;
            nchan_channel_id $arg_id;
            nchan_subscriber_first_message newest;
        }}
    }}
}}
"""


def find_nginx_nchan() -> tuple[str | None, str | None, str]:
    """(nginx binary, nchan module, what is missing: '' when both are there)."""
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None
    )
    module = next(
        (f"{d}/{_MODULE}" for d in _MODULE_DIRS if os.path.exists(f"{d}/{_MODULE}")), None
    )
    missing = [
        name for name, found in (("nginx", nginx), ("libnginx-mod-nchan", module)) if not found
    ]
    return nginx, module, " and ".join(missing)


def install_nginx_nchan() -> None:
    if os.geteuid() != 0:
        raise SystemExit("--install-nchan needs root; run: sudo " + " ".join(APT_COMMAND))
    subprocess.run(APT_COMMAND, check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


class Nchan:
    """One nginx master with ``workers`` worker processes, serving /pub and /sub."""

    def __init__(self, nginx: str, module: str, workdir: Path, port: int, workers: int = 1):
        self.nginx, self.module, self.port, self.workers = nginx, module, port, workers
        self.dir = Path(workdir) / f"nginx-{workers}w"
        self.process: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        return f"Nchan {self.workers} worker" + ("s" if self.workers > 1 else "")

    def start(self) -> Nchan:
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        config = self.dir / "nginx.conf"
        # As root the workers would switch to `nobody`, who cannot write our temp dir.
        user = "user root;" if os.geteuid() == 0 else ""
        config.write_text(
            _CONFIG.format(
                module=self.module, user=user, workers=self.workers, dir=self.dir, port=self.port
            )
        )
        self.process = process = subprocess.Popen(
            [
                self.nginx,
                "-p",
                str(self.dir),
                "-e",
                str(self.dir / "error.log"),
                "-c",
                str(config),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "wb"),
        )
        self._wait_listening(process)
        return self

    def _wait_listening(self, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"nginx exited with {process.returncode}: "
                    + (self.dir / "stderr.log").read_text()[-2000:]
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    if len(self.worker_pids()) == self.workers:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {self.port} within {START_TIMEOUT_S}s")

    def worker_pids(self) -> list[int]:
        return children_of(self.process.pid) if self.process else []

    def server_pids(self) -> list[int]:
        return self.worker_pids()

    def subscribe_request(self, channel: str) -> bytes:
        return (
            f"GET /sub?id={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()

    def publish_request(self, channel: str, body: bytes) -> bytes:
        return (
            b"POST /pub?id=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (channel.encode(), len(body), body)
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # fast: open streams would hold SIGQUIT
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class NchanSystem:
    """A running ``Nchan`` as a system under test (the same interface as ``LogstreamSystem``)."""

    def __init__(self, nchan: Nchan) -> None:
        self.nchan = nchan
        self.name = nchan.name

    def targets(self, channel: str):
        return [("127.0.0.1", self.nchan.port, self.nchan.subscribe_request(channel))]

    def server_pids(self) -> dict[str, list[int]]:
        return {"nginx workers": self.nchan.worker_pids()}

    async def publisher(self, channel: str):
        return await NchanPublisher.connect(self.nchan, channel)
